"""Everything that launches work: the trcnas CLI, Ray Tune trials, Optuna studies, benchmarks."""
