"""One driver per run folder: a lock file naming its holder (host, pid). A lock whose holder was on
this machine and is dead is taken over; on a local disk the lock is created atomically (O_EXCL)."""

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


def _refuse_if_held(store: Store, me: dict) -> None:
    """Raise if a live driver holds the lock; remove the lock of a dead one on this machine."""
    try:
        holder = json.loads(store.read_bytes(LOCK))
    except (ValueError, OSError, FileNotFoundError):
        holder = None
    if holder and (holder.get("host") != me["host"] or _alive(int(holder.get("pid", -1)))):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        raise XlpError(f"{store.location} is being run by another xlp launch (pid {holder.get('pid')} on "
                       f"{holder.get('host')}, since {started}); wait for it, or stop it and relaunch. "
                       f"If that driver is gone, delete {store.location}/{LOCK}")
    store.delete(LOCK)


def _acquire(store: Store, me: dict) -> None:
    data = json.dumps(me).encode()
    path = store.local_path(LOCK)
    if path is None:  # object stores have no exclusive create: write, then check nobody overwrote it
        if store.exists(LOCK):
            _refuse_if_held(store, me)
        store.write_bytes(LOCK, data)
        if json.loads(store.read_bytes(LOCK)) != me:
            raise XlpError(f"{store.location} was just claimed by another xlp launch; wait for it to finish")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            _refuse_if_held(store, me)  # raises, or removes a dead driver's lock and we retry once
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    raise XlpError(f"{store.location} was just claimed by another xlp launch; wait for it to finish")


@contextmanager
def run_lock(store: Store):
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    _acquire(store, me)
    try:
        yield
    finally:
        store.delete(LOCK)
