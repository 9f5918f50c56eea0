"""Connect to Ray: the spec's address, else RAY_ADDRESS, else a fresh local single-node Ray."""

from __future__ import annotations

import os
from contextlib import contextmanager

from xlp.spec import ClusterSpec


@contextmanager
def ray_session(cluster: ClusterSpec, address: str | None = None):
    import ray

    if ray.is_initialized():  # an embedding program (or a test) already connected
        yield
        return
    address = address or cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="warning")
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # address="local" starts a fresh node instead of attaching to a stale one left in /tmp
        ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=False,
                 logging_level="warning", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
