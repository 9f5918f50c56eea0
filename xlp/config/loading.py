"""Reading a spec file: YAML, ${VAR} expansion, sections older specs wrote elsewhere, then the core models;
every error names the file, line and key."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from xlp.config.source import SpecSource
from xlp.config.spec import Spec
from xlp.errors import XlpError
from xlp.paths import shared_dir

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, where: str, path: Path) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            var = m.group(1)
            if var in os.environ:
                return os.environ[var]
            if var == "XLP_SHARED":
                return str(shared_dir())
            raise XlpError(f"{path}: key `{where}`: environment variable ${{{var}}} is not set")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    return value


def _move_legacy(raw: dict, legacy: dict[tuple, tuple]) -> dict[tuple, tuple]:
    """Move sections from where older specs wrote them (`legacy`: old loc -> loc now, as the tasks that own
    them declare); returns loc now -> old loc, so that errors name the key as written."""
    moved = {}
    for old, new in legacy.items():
        parent = raw
        for part in old[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old[-1] not in parent:
            continue
        value = parent.pop(old[-1])
        target = raw
        for part in new[:-1]:
            target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else {}
        if new[-1] in target:
            raise XlpError(f"`{'.'.join(old)}` and `{'.'.join(new)}` say the same thing: keep one "
                           f"(`{'.'.join(new)}`)")
        target[new[-1]] = value
        moved[new] = old
    return moved


def load_spec(path: str | Path, legacy: dict[tuple, tuple] | None = None) -> Spec:
    """Read and validate a spec file's core keys (task option sections are checked with the run's tasks,
    `xlp.run.manifest`); raise XlpError naming file, line and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XlpError(f"spec file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise XlpError(f"cannot read spec {path}: {e}") from None
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise XlpError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise XlpError(f"{path}: a spec is a YAML mapping of keys (name, output, checkpoints, data, ...)")
    return spec_from_dict(_expand(raw, "", path), path, root, legacy)


def spec_from_dict(raw: dict, path: str | Path, root: yaml.Node | None = None,
                   legacy: dict[tuple, tuple] | None = None) -> Spec:
    """Validate a spec's keys (a copy of `raw` is read; sections of older specs are moved first)."""
    raw = json.loads(json.dumps(raw))
    source = SpecSource(Path(path), root, _move_legacy(raw, legacy or {}))
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise source.error(e) from None
    spec._source = source
    return spec
