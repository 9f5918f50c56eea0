"""Statistics on a run's rows: curves, emergence, best checkpoints, findings. Knows nothing of Ray."""

import functools
import hashlib
from pathlib import Path


@functools.cache
def code_digest() -> str:
    """A digest of this package's source: results reduced by other analysis code are not current."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]
