"""Shared fixtures and helpers for the psfmatch tests."""

import os

import numpy as np
import pytest

try:  # the property tests' examples: the same on every run (CI must not turn red on a draw), unless asked
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    # HYPOTHESIS_PROFILE=explore draws new examples each run (and keeps failures in .hypothesis/): a search for bugs
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # (hypothesis is in the test extras; the tests that use it import it themselves)
    pass

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture
def shared_data():
    """``shared_data(*parts)``: the path to a file under ../shared/data, skipping the test when it is absent.

    (A fixture, not a function to import: ``from conftest import ...`` finds docs/conftest.py when the whole
    suite runs.)
    """
    def path_of(*parts):
        path = os.path.join(SHARED_DATA, *parts)
        if not os.path.exists(path):
            pytest.skip(f"shared test data not available: {path}")
        return path

    return path_of


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def inprocess_client():
    """A Dask client of a one-worker, one-thread in-process LocalCluster reachable over TCP on 127.0.0.1 (for
    match_many and ``psfmatch batch --scheduler`` alike); skips without dask[distributed]."""
    import warnings

    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                           host="127.0.0.1", dashboard_address=":0", silence_logs=40)
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
