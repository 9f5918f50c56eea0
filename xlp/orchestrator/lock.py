"""One driver per run folder: a lock file naming its holder; a lock whose holder is dead is taken over."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager

from xlp.errors import XlpError
from xlp.storage import Store

LOCK = "_driver.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(store: Store):
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    if store.exists(LOCK):
        try:
            holder = json.loads(store.read_bytes(LOCK))
        except (ValueError, OSError):
            holder = None
        if holder and (holder.get("host") != me["host"] or _alive(int(holder.get("pid", -1)))):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
            raise XlpError(f"{store.location} is being run by another xlp launch (pid {holder.get('pid')} on "
                           f"{holder.get('host')}, since {started}); wait for it, or stop it and relaunch. "
                           f"If that driver is gone, delete {store.location}/{LOCK}")
    store.write_bytes(LOCK, json.dumps(me).encode())
    if json.loads(store.read_bytes(LOCK)) != me:  # another driver wrote it between our check and write
        raise XlpError(f"{store.location} was just claimed by another xlp launch; wait for it to finish")
    try:
        yield
    finally:
        store.delete(LOCK)
