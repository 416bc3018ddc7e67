"""Training, search and evaluation loops."""
