"""Where shared data lives, and names that are safe as path components."""

from __future__ import annotations

import os
import re
from pathlib import Path

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def shared_dir() -> Path:
    """`XLP_SHARED`, else the `shared/` folder beside the repository (the layout of this project)."""
    env = os.environ.get("XLP_SHARED")
    if env:
        return Path(env)
    beside_repo = Path(__file__).resolve().parents[2] / "shared"
    return beside_repo if beside_repo.exists() else Path.cwd().parent / "shared"


def cache_dir() -> Path:
    """`XLP_CACHE`, else `$XDG_CACHE_HOME/xlp`, else `~/.cache/xlp`."""
    if os.environ.get("XLP_CACHE"):
        return Path(os.environ["XLP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xlp"


def is_safe_name(name: str) -> bool:
    """True if `name` can be one path component without escaping its folder."""
    return bool(SAFE_NAME.match(name)) and name not in {".", ".."}


def write_cache_file(path: Path, text: str) -> None:
    """Replace a cache file in the xlp cache atomically (a temporary file, then a rename); a cache that cannot be
    written only costs computing its entries again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"_tmp-{os.getpid()}-{path.name}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        pass
