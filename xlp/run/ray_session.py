"""Connect to Ray: the spec's address, else RAY_ADDRESS, else a fresh local single-node Ray.

A cluster is used with whatever authentication it has (Ray reads its token from RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). A local Ray keeps Ray's token authentication on and
listens on the loopback interface only, so on a shared machine nobody else can reach it from the
network, and a local user who can reach loopback still needs the token.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from xlp.config import ClusterSpec
from xlp.errors import XlpError

TOKEN_HINT = ("give xlp the cluster's Ray token: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH=FILE "
              "(or RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)")


def local_node_config() -> dict:
    """The `_system_config` of a local node xlp starts, a new dict each time: ray.init adds the session's own
    settings to the dict it is given (its spill directory: a later session given the same dict would spill into
    the first one's). Ray kills idle workers beyond as many as the node has CPUs, actors' counted: a probe worker
    warmed beside the extractors (xlp.run.resources.warm_workers) would be killed before its task came. Room for
    the extractors and a worker per probe a CPU can hold (cpus_per_probe may be a fraction); idle ones beyond are
    still killed."""
    return {"num_workers_soft_limit": 4 * (os.cpu_count() or 1)}


def auth_refused(message: str) -> bool:
    """Whether a Ray error message says the cluster wants a token it was not given."""
    return any(w in message for w in ("Authentication", "authentication token", "Unauthorized", "InvalidAuthToken"))


@contextmanager
def ray_session(cluster: ClusterSpec, address: str | None = None):
    import ray

    if ray.is_initialized():  # an embedding program (or a test) already connected
        yield
        return
    address = address or cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:  # the cluster's own authentication, with the token Ray finds in the environment
            ray.init(address=address, logging_level="warning")
        except Exception as e:  # Ray wraps a refused token in a ConnectionError or a RuntimeError
            causes, cause = [], e
            while cause is not None:
                causes.append(str(cause))
                cause = cause.__cause__ or cause.__context__
            if auth_refused(" ".join(causes)):
                raise XlpError(f"Ray at {address} refused the connection: no valid token; {TOKEN_HINT}") from None
            if isinstance(e, ConnectionError):
                raise XlpError(f"cannot connect to Ray at {address}: {causes[0].splitlines()[0]}") from None
            raise
    else:
        # Ray >= 2.59 turns token authentication on for a new local node unless RAY_AUTH_MODE says
        # otherwise (only a user's own RAY_AUTH_MODE=disabled turns it off), and logs that it did
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        if os.environ.get("RAY_AUTH_MODE", "token") == "token":
            _private_token()
        with _loopback_node():
            # address="local" starts a fresh node instead of attaching to a stale one left in /tmp
            ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=False,
                     logging_level="warning", log_to_driver=False, _system_config=local_node_config())
    try:
        yield
    finally:
        if not address:
            _stop_monitor()
        ray.shutdown()


def _stop_monitor() -> None:
    """Kill the local node's autoscaler monitor (a single node has nothing to scale) before Ray's shutdown: on
    Ray's SIGTERM it reports to the GCS, which Ray has stopped by then, and Ray waits a second for it before it
    kills it anyway (1.0 of a launch's 1.4 s of shutdown)."""
    from ray._private import ray_constants, worker

    node = worker._global_node
    for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node is not None else []:
        info.process.kill()
        info.process.wait(timeout=10)


def _private_token() -> None:
    """Ray writes a missing token file with the umask's mode (often world-readable); write it first, 0600."""
    path = Path.home() / ".ray" / "auth_token"  # where Ray looks when no variable names the token
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run wrote it meanwhile
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


@contextmanager
def _loopback_node():
    """Give the new node the loopback address, so every Ray server binds 127.0.0.1 instead of all interfaces.

    Ray picks a new node's address with `ray._private.services.get_node_ip_address()`, which answers
    the loopback address when clusters are disabled (Ray's own single-machine mode on macOS and
    Windows, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read once at import). `_node_ip_address="127.0.0.1"`
    does not do it: ray.init turns a loopback address into the machine's routable one.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved

