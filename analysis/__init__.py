"""Reads result files and makes tables and figures (no training code)."""
