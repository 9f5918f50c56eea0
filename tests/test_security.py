"""Safe by default on a shared machine: the local Ray that `xlp launch` starts listens on loopback
only, and refuses a caller without Ray's token."""

import ipaddress
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest
from conftest import DASHBOARD
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

# xlp's own local session, in a process whose environment does not touch Ray's authentication
SESSION = """
import json, sys
import psutil, ray
from xlp.run.ray_session import ray_session
from xlp.config import ClusterSpec

with ray_session(ClusterSpec(num_cpus=1)):
    assert ray.get(ray.remote(lambda: 1 + 1).remote()) == 2
    me = psutil.Process()
    pids = {p.pid for p in [me, *me.children(recursive=True)]}
    listening = sorted({c.laddr.ip for c in psutil.net_connections("inet")
                        if c.status == psutil.CONN_LISTEN and c.pid in pids})
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": listening}), flush=True)
    sys.stdin.readline()  # the node stays up while the test knocks on it
"""


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def test_local_ray_listens_on_loopback_only_and_refuses_a_caller_without_the_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # the token file the session makes lands here
    proc = subprocess.Popen([sys.executable, "-c", SESSION], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["listening"] and [ip for ip in info["listening"] if not _loopback(ip)] == [], info
        token_file = tmp_path / ".ray" / "auth_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600  # not readable by the machine's other users
        token = token_file.read_text().strip()

        nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(info["gcs"])).GetAllNodeInfo
        request = gcs_service_pb2.GetAllNodeInfoRequest()
        try:
            nodes(request, timeout=20)
            refused = None
        except grpc.RpcError as e:
            refused = e.code()
        assert refused == grpc.StatusCode.UNAUTHENTICATED
        reply = nodes(request, timeout=20, metadata=[("authorization", f"Bearer {token}")])
        assert len(reply.node_info_list) == 1
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()


def _cluster_token() -> str:
    """The token of the session's Ray, wherever Ray found it."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    with open(path) as f:
        return f.read().strip()


def test_the_jobs_api_wants_the_token_and_xlp_takes_it_as_the_readme_says(ray_local, tmp_path):
    """The session's Ray (token authentication on, Ray's default) refuses a request without the token;
    `xlp status --job` from another shell is refused with a hint, then works once given the token
    the README's way (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH)."""
    address = DASHBOARD["url"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(address + "/api/jobs/", timeout=20)
    assert e.value.code == 401
    token_file = tmp_path / "cluster_token"
    token_file.write_text(_cluster_token())
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    status = [sys.executable, "-c", "from xlp.cli import main; main()", "status", "--job", "no-such-job",
              "--address", address]
    r = subprocess.run(status, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH" in " ".join(r.stderr.split()), r.stderr
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    r = subprocess.run(status, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 1 and "no-such-job does not exist" in " ".join(r.stderr.split()), r.stderr  # let in


CONNECT = """
import sys
import ray
from xlp.errors import XlpError
from xlp.run.ray_session import ray_session
from xlp.config import ClusterSpec

try:
    with ray_session(ClusterSpec(), sys.argv[1]):
        print("cpus", ray.cluster_resources()["CPU"])
except XlpError as e:
    print(e)
"""


def test_a_cluster_address_is_used_with_the_clusters_token(ray_local, tmp_path):
    """Connecting to a cluster with token authentication: refused with the hint without the token,
    connected with it given the README's way."""
    connect = [sys.executable, "-c", CONNECT, ray_local.get_runtime_context().gcs_address]
    token_file = tmp_path / "cluster_token"
    token_file.write_text(_cluster_token())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)
    r = subprocess.run(connect, env=env, capture_output=True, text=True, check=False, timeout=180)
    assert "refused the connection: no valid token" in r.stdout and "RAY_AUTH_TOKEN_PATH" in r.stdout, r.stderr
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    r = subprocess.run(connect, env=env, capture_output=True, text=True, check=False, timeout=180)
    assert r.stdout.split() == ["cpus", str(ray_local.cluster_resources()["CPU"])], r.stdout + r.stderr
