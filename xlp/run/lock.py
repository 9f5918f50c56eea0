"""One driver per run folder: a lock file naming its holder (host, pid). A lock whose holder was on
this machine and is dead is taken over. The lock is created atomically, so two drivers cannot both
win: a hard link (or O_EXCL) on a local disk, a conditional put (If-None-Match: *) on S3
(Store.create_exclusive); a takeover goes through an exclusively created mark, so two drivers taking
over the same dead lock cannot both win either."""

from __future__ import annotations

import hashlib
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


def _claimed(store: Store, hint: str = "") -> XlpError:
    return XlpError(f"{store.location} was just claimed by another xlp launch; wait for it to finish{hint}")


def _read(store: Store) -> bytes | None:
    """The lock's bytes, None if there is none (S3 reports a missing key as a plain OSError)."""
    try:
        return store.read_bytes(LOCK)
    except OSError:
        if store.exists(LOCK):
            raise
        return None


def _stale(store: Store, me: dict) -> bytes | None:
    """The lock's bytes if its holder is dead on this machine (or the lock is unreadable); None if it is
    gone; raises if a live driver holds it."""
    raw = _read(store)
    if raw is None:
        return None
    if not raw.strip():  # a lock being created where a file cannot appear whole (O_EXCL, then the write)
        raise _claimed(store, f". If no driver is running, delete {store.location}/{LOCK} (it is empty)")
    try:
        holder = json.loads(raw)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        return raw  # not a lock any xlp writes: a broken one, taken over
    if holder.get("host") != me["host"] or _alive(int(holder.get("pid", -1))):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        raise XlpError(f"{store.location} is being run by another xlp launch (pid {holder.get('pid')} on "
                       f"{holder.get('host')}, since {started}); wait for it, or stop it and relaunch. "
                       f"If that driver is gone, delete {store.location}/{LOCK}")
    return raw


def _acquire(store: Store, me: dict) -> None:
    """Create the lock; over a dead driver's lock, take it over. Drivers racing to take over the same dead
    lock each try to create its takeover mark: the one that does removes the dead lock (if it is still the
    same lock) and creates its own before dropping the mark; the others stop."""
    data = json.dumps(me).encode()
    try:
        if store.create_exclusive(LOCK, data):
            return
    except NotImplementedError:
        return _acquire_by_read_back(store, me, data)
    stale = _stale(store, me)
    if stale is not None:
        mark = f"{LOCK}.{hashlib.sha256(stale).hexdigest()[:16]}.takeover"
        if not store.create_exclusive(mark, data):
            raise XlpError(f"{store.location}: another xlp launch is taking over the lock of a driver that died; "
                           f"wait for it. If no driver is running (one died while taking over), delete "
                           f"{store.location}/{mark}")
        try:
            if _read(store) == stale:
                store.delete(LOCK)
            if store.create_exclusive(LOCK, data):
                return
        finally:
            store.delete(mark)
    elif store.create_exclusive(LOCK, data):
        return
    raise _claimed(store)


def _acquire_by_read_back(store: Store, me: dict, data: bytes) -> None:
    """Filesystems without an exclusive create (not a local disk, not S3): write, then check that nobody
    overwrote it. Two drivers starting at the same moment can both pass this; it catches the rest."""
    _stale(store, me)
    store.write_bytes(LOCK, data)
    if json.loads(store.read_bytes(LOCK)) != me:
        raise _claimed(store)


@contextmanager
def run_lock(store: Store):
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    _acquire(store, me)
    try:
        yield
    finally:
        store.delete(LOCK)
