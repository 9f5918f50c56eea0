"""The Typer app, its consoles and the one way a command reads a spec."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Probe every checkpoint of a multilingual pretraining run, per language and skill.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
debug = {"on": False}


class Consoles:
    """stdout and stderr, made anew for every command so that they take the terminal's width (COLUMNS) as it is
    when the command runs, also where one process runs several (a notebook, the tests)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.out, self.err = Console(), Console(stderr=True)


con = Consoles()


@app.callback()
def _options(on: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    debug["on"] = on
    con.reset()


def load(spec_path: Path):
    """The run manifest of a spec file (YAML, or a submitted run's spec.json)."""
    from xlp.run.manifest import load_manifest

    return load_manifest(spec_path)
