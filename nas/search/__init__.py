"""Supergraph search: mixed ops, Gumbel-softmax, schedules, freezing, the search plugin."""
