"""Resumable, verified downloads into xlp's cache folder."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from xlp.errors import XlpError
from xlp.hashing import sha256_stream

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f).hexdigest()


def _fetch_once(url: str, part: Path, progress: Progress | None) -> None:
    """Append the rest of `url` to `part`, asking the server for a byte range when part is non-empty."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-", "User-Agent": "xlp"} if offset
                                 else {"User-Agent": "xlp"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        status = getattr(resp, "status", None)
        if offset and status != 206:  # the server ignored the range: start again
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length else None
        task = progress.add_task(part.name.removesuffix(".part"), total=total, completed=offset) if progress else None
        with open(part, "ab" if offset else "wb") as out:
            while block := resp.read(CHUNK):
                out.write(block)
                if progress:
                    progress.advance(task, len(block))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(url: str, dest: Path, sha256: str | None = None, *, retries: int = 3,
             console: Console | None = None, quiet: bool = False) -> Path:
    """Download `url` to `dest` once: an interrupted transfer continues from its `.part` file
    (within this call up to `retries` times, or on the next call); a checksum mismatch deletes it."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    progress = None if quiet else Progress("[progress.description]{task.description}", BarColumn(),
                                           DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                           console=console or Console(stderr=True), transient=True)
    last: Exception | None = None
    with progress or _Null():
        for _ in range(retries + 1):
            try:
                _fetch_once(url, part, progress)
                last = None
                break
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
                last = e
                if isinstance(e, urllib.error.HTTPError) and e.code in (404, 403, 401, 410):
                    break
    if last is not None:
        got = part.stat().st_size if part.exists() else 0
        raise XlpError(f"download of {url} failed after {got:,} bytes: {last}; "
                       f"run the same command again to resume") from None
    if sha256:
        digest = sha256_of(part)
        if digest != sha256.lower():
            part.unlink()
            raise XlpError(f"download of {url}: checksum mismatch (sha256 {digest}, expected {sha256}); "
                           f"the file was deleted, nothing was cached")
    part.replace(dest)
    return dest


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
