"""`xlp pretrain`, `xlp data ud` and `xlp convert fairseq`: making the inputs a run reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from xlp.cli.app import app, con, load
from xlp.errors import XlpError


@app.command(name="pretrain")
def pretrain_cmd(
    spec: Optional[Path] = typer.Argument(None, help="A spec whose `pretrain:` section to use (optional)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint folder (step_<N>/ inside)."),
    languages: Optional[str] = typer.Option(None, help="Comma-separated ISO codes; default: all in ud_root."),
    steps: Optional[int] = typer.Option(None, help="Training steps."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    ud_root: Optional[str] = typer.Option(None, help="UD release folder (default $XLP_SHARED/ud)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Pretrain a miniature XLM-R on UD train/dev text and the UDHR, saving a checkpoint series.

    Resumable: a rerun continues from the last saved checkpoint.  Example: xlp pretrain --out runs/mini-xlmr
    """
    from xlp.config.spec import pretrain_with
    from xlp.models.replica import pretrain

    base = load(spec).spec.pretrain if spec else None
    if spec and base is None:
        raise XlpError(f"{spec}: has no `pretrain:` section")
    if base is None and out is None:
        raise XlpError("give --out DIR (or a spec with a `pretrain:` section)")
    cfg = pretrain_with(base, out=str(out) if out else None, steps=steps, seed=seed, ud_root=ud_root,
                        languages=languages.split(",") if languages else None)
    dirs = pretrain(cfg, console=con.err, quiet=quiet)
    con.out.print(f"{len(dirs)} checkpoints in {cfg.out}: " + ", ".join(d.name for d in dirs))


def _dataset_tasks() -> dict[str, str]:
    """`xlp data NAME` -> the task whose `dataset` option it fetches (the registry is imported only here)."""
    from xlp.tasks import BUILT_IN

    return {t.data_command: t.name for t in BUILT_IN.values() if t.data_command}


class _DataCommands(TyperGroup):
    """`xlp data`'s own commands, and one per task that reads a dataset (`Task.data_command`), made when asked
    for, so that the command line starts without importing the tasks."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *_dataset_tasks()})

    def get_command(self, ctx: Any, name: str) -> Any:
        own = super().get_command(ctx, name)
        if own is not None or name not in _dataset_tasks():
            return own
        task, one = _dataset_tasks()[name], typer.Typer()

        @one.command(name=name, help=f"Fetch the dataset `{task}.dataset` names into the hub cache, ahead of a run "
                                     f"(offline later); print each config's split with its files' sizes and SHA-256."
                                     f"  Example: xlp data {name} cluster.yaml")
        def command(spec: Path = typer.Argument(..., help="The spec whose dataset to fetch.")) -> None:
            _fetch_dataset(name, task, spec)

        return typer.main.get_command(one)


def _fetch_dataset(what: str, name: str, spec: Path) -> None:
    """Resolve (and download into the hub cache) what the spec's task reads through `<task>.dataset`, as
    pre-flight will; print each config's split, its files' sizes and SHA-256."""
    from xlp.data.hub import DatasetSplit
    from xlp.tasks import BUILT_IN

    run = load(spec)
    ctx = run.context(name)
    if getattr(ctx.options, "dataset", None) is None:
        raise XlpError(f"{spec}: {name}.dataset is not set; `xlp data {what}` fetches the dataset it names")
    notes: list[str] = []
    found = (run.tasks.tasks.get(name) or BUILT_IN[name]).inputs(ctx, notes)
    parts = [p for p in found.files if isinstance(p, DatasetSplit)] if found else []
    for note in notes:  # the dataset and the commit its revision resolved to
        con.out.print(note, highlight=False, soft_wrap=True)
    total = 0
    for part in parts:
        con.out.print(part.where, highlight=False, soft_wrap=True)
        for f in part.files:
            size = Path(f.path).stat().st_size
            total += size
            con.out.print(f"  {f.path}  {size:,} bytes  sha256 {f.sha256}", highlight=False, soft_wrap=True)
    con.out.print(f"{name}: {len(parts)} splits, {sum(len(p.files) for p in parts)} files, {total:,} bytes",
                  highlight=False)


data_app = typer.Typer(help="Fetch inputs: UD releases into xlp's cache (XLP_CACHE, default ~/.cache/xlp), a spec's "
                       "datasets into the hub's cache.", no_args_is_help=True, cls=_DataCommands)
app.add_typer(data_app, name="data")
convert_app = typer.Typer(help="Convert checkpoints from other toolkits to Hugging Face directories.",
                          no_args_is_help=True)
app.add_typer(convert_app, name="convert")


@data_app.command("ud")
def data_ud(
    version: str = typer.Option("2.16", "--version", help="UD release, e.g. 2.16."),
    languages: Optional[str] = typer.Option(None, "--languages", "-l", help="Comma-separated ISO codes; default: all."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Folder to unpack into (default: the cache)."),
    url: Optional[str] = typer.Option(None, "--url",
                                      help="Archive URL ({version} is filled in); default: the release's."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 of the archive."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download a UD release once (resumable, checksum-verified) and unpack the requested languages.

    Prints the folder to use as `data.ud_root` (or write `ud_root: ud://2.16` in the spec).
    Example: xlp data ud --version 2.16 --languages en,de,fi
    """
    from xlp.data.ud_release import fetch_ud

    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    root = fetch_ud(version, langs, dest, url, sha256, console=con.err, quiet=quiet)
    con.out.print(str(root))


@convert_app.command("fairseq")
def convert_fairseq_cmd(
    src: Path = typer.Argument(..., help="fairseq folder: model.pt, dict.txt, sentencepiece.bpe.model."),
    dst: Path = typer.Argument(..., help="New Hugging Face model folder."),
    heads: Optional[int] = typer.Option(None, help="Attention heads, if the checkpoint's args do not say."),
    step: Optional[int] = typer.Option(None, help="Pretraining step to record (default: from model.pt)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Unpickle arbitrary objects in model.pt."),
) -> None:
    """Convert a fairseq RoBERTa / XLM-R checkpoint to an XLMRobertaForMaskedLM folder (safetensors).

    fairseq is not needed.  Example: xlp convert fairseq xlmr-replica/checkpoint_5_20000 runs/replica/step_20000
    """
    from xlp.models.fairseq import convert_fairseq

    out = convert_fairseq(src, dst, heads=heads, step=step, allow_pickle=allow_pickle)
    con.out.print(f"converted {src} -> {out}")
