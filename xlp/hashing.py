"""SHA-256 of streams, read in blocks (files of any size), of streams as they are written, and of
files by content, remembered across runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from xlp.paths import cache_dir, write_cache_file

BLOCK = 1 << 22


def sha256_stream(f, h=None):
    """Feed a readable binary stream into `h` (a new SHA-256 unless given) block by block; returns `h`."""
    h = h or hashlib.sha256()
    while block := f.read(BLOCK):
        h.update(block)
    return h


class HashingWriter(io.RawIOBase):
    """A writable stream that passes bytes to `out` and hashes them on the way (no second read)."""

    def __init__(self, out):
        self.out, self.sha = out, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.out.write(data)
        return len(data)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f).hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


_memos: dict[Path, dict[str, str]] = {}  # cache file -> (stamp -> digest): this process's view of each cache file


def _cache_file() -> Path:
    return cache_dir() / "digests.json"


def _load() -> dict[str, str]:
    path = _cache_file()  # XLP_CACHE may name another folder later in the same process
    if path not in _memos:
        try:
            _memos[path] = json.loads(path.read_text())
        except (OSError, ValueError):
            _memos[path] = {}
    return _memos[path]


def _save(memo: dict[str, str]) -> None:
    """Merge into the cache file (another driver may have added to it), drop files that are gone,
    write atomically; a cache that cannot be written only costs hashing again next time."""
    path = _cache_file()
    try:
        on_disk = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        on_disk = {}
    merged = {k: v for k, v in {**on_disk, **memo}.items() if os.path.exists(k.rsplit("|", 2)[0])}
    write_cache_file(path, json.dumps(merged))
    memo.update(merged)


def file_digests(paths: Iterable[Path]) -> dict[Path, str]:
    """SHA-256 of each file's bytes, remembered across runs by (real path, size, mtime) in the xlp
    cache folder: a relaunch reads nothing, and a file that was moved or copied is known by its
    content. New files are hashed in parallel threads (hashlib releases the GIL)."""
    memo = _load()
    stamps = {Path(p): _stamp(Path(p)) for p in paths}
    todo = [p for p, s in stamps.items() if s not in memo]
    if todo:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for p, digest in zip(todo, pool.map(_sha256_file, todo)):
                memo[stamps[p]] = digest
        _save(memo)
    return {p: memo[s] for p, s in stamps.items()}


@dataclass(frozen=True)
class DataFile:
    """An input file a unit reads: where it is now, and what it is (its content's SHA-256, which is
    what a unit's hash takes, so data that moved is not redone)."""
    path: str
    sha256: str


def data_files(paths: Iterable[Path]) -> dict[Path, DataFile]:
    """Each path as a DataFile; new files are hashed at once, in parallel."""
    return {p: DataFile(str(p), d) for p, d in file_digests(paths).items()}
