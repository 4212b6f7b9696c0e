import numpy as np
import pytest

import rnncc


@pytest.fixture(scope="session")
def shipped_cells():
    return {name: rnncc.load(name) for name in rnncc.shipped()}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
