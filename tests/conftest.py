"""Shared fixtures and helpers for the psfmatch tests."""

import os

import numpy as np
import pytest

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def shared_data(*parts):
    """Path to a file under ../shared/data, skipping the test when the folder is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared test data not available: {path}")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
