"""trcnas engine: tasks, losses, metrics, datasets, models, supergraph search, training loops."""
