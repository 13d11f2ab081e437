"""Shared by the large-image tests."""

from __future__ import annotations

import contextlib
import warnings

import pytest


@contextlib.contextmanager
def _two_process_cluster():
    """A LocalCluster of two worker processes, one thread each, as the active client."""
    distributed = pytest.importorskip("distributed")
    with (
        warnings.catch_warnings(),
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster, timeout="60s") as client,
    ):
        warnings.simplefilter("ignore")
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture
def two_process_cluster():
    """``with two_process_cluster() as client:`` runs the block on a two-process cluster
    (only the block: what the test runs before or after uses the local scheduler)."""
    return _two_process_cluster
