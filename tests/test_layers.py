"""Layers import one way only: each layer of xlp may import the layers below it and nothing above, and no
two modules import each other in a circle. `xlp validate --schema-only` loads neither torch nor matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xlp"

# lowest first: a layer imports only itself and the layers before it
LAYERS = ["xlp.version", "xlp.errors", "xlp.paths", "xlp.hashing", "xlp.storage", "xlp.config", "xlp.data",
          "xlp.probing", "xlp.models", "xlp.tasks", "xlp.analysis", "xlp.report", "xlp.run", "xlp.api", "xlp.cli",
          "xlp"]


def _module(f: Path) -> str:
    parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    return max(i for i, layer in enumerate(LAYERS)
               if module == layer or (layer != "xlp" and module.startswith(layer + ".")))


def _imports(f: Path, everywhere: bool) -> set[str]:
    """The xlp modules `f` imports: anywhere in it, or only at module level (what runs on import)."""
    tree = ast.parse(f.read_text())
    nodes = ast.walk(tree) if everywhere else tree.body
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "xlp"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xlp":
            for a in node.names:  # `from xlp.run import preflight` imports the module xlp.run.preflight
                sub = f"{node.module}.{a.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
    return found


def _modules() -> dict[str, Path]:
    return {_module(f): f for f in PACKAGE.rglob("*.py")}


def test_no_layer_imports_one_above_it():
    up = [f"{mod} imports {imp}" for mod, f in _modules().items() for imp in _imports(f, everywhere=True)
          if _layer(imp) > _layer(mod)]
    assert not up, up


def test_no_modules_import_each_other_in_a_circle():
    mods = _modules()
    graph = {m: {i for i in _imports(f, everywhere=True) if i in mods and i != m} for m, f in mods.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]) if n in stack else f"{m} -> {n}")
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package's __init__ importing its own modules is how a package exposes them, not a circle
    cycles = [c for c in cycles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not cycles, cycles


def test_no_module_over_300_lines():
    lines = {str(f.relative_to(PACKAGE)): len(f.read_text().splitlines()) for f in PACKAGE.rglob("*.py")}
    long = {f: n for f, n in lines.items() if n > 300}
    assert not long, long


@pytest.mark.parametrize("spec", ["examples/quickstart.yaml", "cluster.yaml"])
def test_validating_a_spec_loads_neither_torch_nor_matplotlib(tmp_path, spec):
    spec = PACKAGE.parent / spec
    code = ("import sys\nfrom xlp.cli import main\nsys.argv = ['xlp', 'validate', '--schema-only', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted(m for m in sys.modules\n"
            "               if m.split('.')[0] in ('torch', 'matplotlib', 'ray', 'transformers', 'datasets'))\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-2000:]
