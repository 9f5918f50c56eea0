"""`xlp launch --submit`: the driver runs on the cluster as a Ray Job (Jobs API), so the laptop that
submitted it can disconnect; `xlp status --job ID` follows it."""

from __future__ import annotations

import os
import time

from xlp.errors import XlpError
from xlp.run.manifest import Manifest
from xlp.run.ray_session import TOKEN_HINT, auth_refused

SPEC_VAR = "XLP_SPEC_JSON"  # the validated manifest: ${VAR}s and defaults as they were where it was validated
NO_AGENT = "No available agent to submit job"  # Ray's answer until the head's job agent has registered
AGENT_WAITS = (1, 2, 4, 8, 15)  # seconds between tries
JOB_ENDED = ("SUCCEEDED", "FAILED", "STOPPED")  # a Ray job's final states


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise XlpError("--submit needs the cluster's dashboard address: --address http://HEAD:8265 "
                       "(or RAY_ADDRESS)")
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection errors of every kind are the user's to fix
        raise XlpError(f"cannot reach the Ray Jobs API at {address}: {_why(e)}") from None


def _why(e: Exception) -> str:
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{why}; {TOKEN_HINT}" if auth_refused(str(e)) else why


def submit(run: Manifest, address: str | None, verify: bool = False) -> str:
    """Send `xlp launch` of this run to the cluster; its validated manifest travels in the job's runtime_env."""
    spec = run.spec
    relative = [what for what, value in [("output", spec.output)] + [
        (f"checkpoints[{i}].path", c.path) for i, c in enumerate(spec.checkpoints) if c.path]
        if "://" not in value and not os.path.isabs(os.path.expanduser(value))]
    if relative:
        raise XlpError(f"--submit: {', '.join(relative)} must be absolute paths (on a filesystem the cluster "
                       f"shares) or URIs; relative ones would land in the job's temporary working directory")
    client = _client(address or spec.cluster.address)
    # the manifest travels as an environment variable that the entrypoint writes to a file of its own: a
    # working_dir package did too, but Ray dropped it from the GCS once the job supervisor's worker exited, and the
    # driver's actors, which inherit the job's runtime_env, then found it missing (seen under load)
    entry = (f'spec=$(mktemp --suffix=.json) && trap \'rm -f "$spec"\' EXIT && printenv {SPEC_VAR} > "$spec" && '
             'xlp launch "$spec" --quiet' + (" --verify" if verify else ""))
    for wait in (*AGENT_WAITS, None):
        try:
            return client.submit_job(entrypoint=entry, runtime_env={"env_vars": {SPEC_VAR: run.to_json()}},
                                     metadata={"xlp_run": spec.name, "xlp_output": spec.output})
        except RuntimeError as e:
            if NO_AGENT not in str(e):
                raise
            if wait is None:
                raise XlpError(f"the Ray Jobs API at {client.get_address()} has had no job agent for "
                               f"{sum(AGENT_WAITS)} s ({_why(e)}); is the head node still starting?") from None
            time.sleep(wait)  # a head node that just started registers its job agent a little later


def job_status(job_id: str, address: str | None, tail: int = 20) -> dict:
    client = _client(address)
    try:
        info = client.get_job_info(job_id)
        logs = client.get_job_logs(job_id)
    except Exception as e:  # noqa: BLE001
        raise XlpError(f"job {job_id}: {_why(e)}") from None
    return {"job": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message, "exit_code": getattr(info, "driver_exit_code", None),
            "run": (info.metadata or {}).get("xlp_output"), "log_tail": logs.splitlines()[-tail:]}


def job_exit_code(js: dict) -> int:
    """A shell's exit code for a job that ended: 0 if it succeeded, else its driver's (1 when Ray has none;
    a driver killed by signal N gives 128 + N)."""
    if js["status"] == "SUCCEEDED":
        return 0
    code = js.get("exit_code")
    if isinstance(code, int) and code < 0:
        return 128 - code
    return code if isinstance(code, int) and 0 < code < 256 else 1
