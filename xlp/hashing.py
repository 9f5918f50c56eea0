"""SHA-256 of streams, read in blocks (files of any size), and of streams as they are written."""

from __future__ import annotations

import hashlib
import io

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
