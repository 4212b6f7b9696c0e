import os

# The cuda target's tests run in Numba's CUDA simulator unless told otherwise (on a GPU machine:
# NUMBA_ENABLE_CUDASIM=0 runs them on the device). Numba reads it when it is first imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rnncc  # noqa: E402


def pytest_configure(config):
    # Generated and regression specs leave intermediates unread on purpose; the lint tests
    # record SpecWarnings themselves (warnings.catch_warnings), which this filter does not
    # affect. Not in pyproject.toml: resolving the class there imports rnncc, and with it
    # Numba, before this file has turned the CUDA simulator on.
    config.addinivalue_line("filterwarnings", "ignore::rnncc.errors.SpecWarning")


@pytest.fixture(scope="session")
def shipped_cells():
    return {name: rnncc.load(name) for name in rnncc.shipped()}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
