import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One synthetic-data cache for the whole test session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def fast_args(cache_dir):
    """CLI arguments for a fast-dev run that shares the session's data cache."""
    return ["--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}"]
