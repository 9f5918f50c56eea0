"""The `xlp` command line: one thin module per group of subcommands (launch and validate, status, report and
compare, pretrain and data); each calls the run layer and prints what it returns."""

from __future__ import annotations

import sys

from xlp.cli import inputs, launch, report, status  # noqa: F401 - each registers its commands on the app
from xlp.cli.app import app, con, debug
from xlp.errors import XlpError


def main() -> None:
    try:
        app()
    except XlpError as e:
        if debug["on"]:
            raise
        con.err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        con.err.print("interrupted; everything finished so far is kept, relaunch to resume")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: still no traceback without --debug
        if debug["on"]:
            raise
        con.err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e}\n(everything finished so far is kept; "
                      f"rerun with `xlp --debug ...` for the traceback and report it)", highlight=False, soft_wrap=True)
        sys.exit(2)
