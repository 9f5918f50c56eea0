"""One driver per run folder: a lock file naming its holder (host, pid). A lock whose holder was on
this machine and is dead is taken over. The lock is created atomically, so two drivers cannot both
win: O_EXCL on a local disk, a conditional put (If-None-Match: *) on S3 (Store.create_exclusive)."""

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
    for _ in range(2):
        try:
            if store.create_exclusive(LOCK, data):
                return
        except NotImplementedError:
            return _acquire_by_read_back(store, me, data)
        _refuse_if_held(store, me)  # raises, or removes a dead driver's lock and we retry once
    raise XlpError(f"{store.location} was just claimed by another xlp launch; wait for it to finish")


def _acquire_by_read_back(store: Store, me: dict, data: bytes) -> None:
    """Filesystems without an exclusive create (not a local disk, not S3): write, then check that nobody
    overwrote it. Two drivers starting at the same moment can both pass this; it catches the rest."""
    if store.exists(LOCK):
        _refuse_if_held(store, me)
    store.write_bytes(LOCK, data)
    if json.loads(store.read_bytes(LOCK)) != me:
        raise XlpError(f"{store.location} was just claimed by another xlp launch; wait for it to finish")


@contextmanager
def run_lock(store: Store):
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    _acquire(store, me)
    try:
        yield
    finally:
        store.delete(LOCK)
