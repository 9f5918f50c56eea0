"""Where a spec came from: its file and YAML nodes, so that any check, now or later (a task's options),
names the file, line and key of what it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import yaml
from pydantic import ValidationError

from xlp.errors import XlpError

UNKNOWN_KEY = "unknown key (check its spelling against the spec reference in the README)"


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line in the YAML source of the value at `loc` (as deep as it exists)."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, val in node.value:
                if key.value == str(part):
                    line, nxt = key.start_mark.line + 1, val
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    return line



@dataclass(frozen=True)
class SpecSource:
    """Where a spec came from, so that a later check (a task's options) names the file, line and key."""
    path: Path
    root: yaml.Node | None = None
    moved: dict[tuple, tuple] = dataclass_field(default_factory=dict)

    def error(self, e: ValidationError, prefix: tuple = ()) -> XlpError:
        """The validation error as one line per problem: file:line: key `a.b`: message."""
        lines = []
        for err in e.errors():
            loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            written = next((old + loc[len(new):] for new, old in self.moved.items() if loc[:len(new)] == new), loc)
            key = ".".join(str(p) for p in written) or "(top level)"
            line = _line_of(self.root, written)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = UNKNOWN_KEY
            lines.append(f"{self.path}{f':{line}' if line else ''}: key `{key}`: {msg}")
        return XlpError("invalid spec\n" + "\n".join(lines))

    def key_error(self, loc: tuple, msg: str) -> XlpError:
        line = _line_of(self.root, self.moved.get(loc, loc))
        where = f"{self.path}:{line}" if line else str(self.path)
        return XlpError(f"invalid spec\n{where}: key `{'.'.join(map(str, loc))}`: {msg}")
