"""The `xlp` command line: launch, status, validate, report, compare, pretrain."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from xlp.errors import XlpError

app = typer.Typer(help="Probe every checkpoint of a multilingual pretraining run, per language and skill.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
stdout = Console()
err = Console(stderr=True)
_debug = {"on": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    _debug["on"] = debug


def _load(spec_path: Path):
    from xlp.config import load_spec

    return load_spec(spec_path)


@app.command()
def launch(
    spec: Path = typer.Argument(..., help="The experiment spec (YAML)."),
    address: Optional[str] = typer.Option(None, help="Ray address; overrides the spec and RAY_ADDRESS."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines on stdout: one per finished unit, then a summary."),
    verify: bool = typer.Option(False, "--verify", help="Check every finished output against its SHA-256 in the "
                                "ledger (reads them all) and redo those that changed."),
    submit: bool = typer.Option(False, "--submit", help="Run the driver on the cluster as a Ray Job (--address "
                                "http://HEAD:8265); prints the job id for `xlp status --job`."),
) -> None:
    """Validate SPEC, run extraction and probes on Ray, reduce, and write results and a report.

    Resumable: a relaunch redoes only what is missing.  Example: xlp launch examples/quickstart.yaml
    """
    from xlp.run.driver import launch as run_launch

    s = _load(spec)
    if submit:
        from xlp.run.submit import submit as submit_job

        job = submit_job(spec, s, address, verify)
        if as_json:
            print(json.dumps({"event": "submitted", "job": job, "run": s.output}), flush=True)
        else:
            stdout.print(job)
            err.print(f"submitted: follow it with `xlp status --job {job} --address {address or '$RAY_ADDRESS'}` "
                      f"or `xlp status {s.output}`")
        return
    if s.pretrain is not None:  # build the checkpoint series first if it is not there yet
        from xlp.models.replica import pretrain

        pretrain(s.pretrain, console=err, quiet=quiet)
    emit = (lambda event: print(json.dumps(event), flush=True)) if as_json else None
    result = run_launch(s, console=err, quiet=quiet or as_json, address=address, events=emit, verify=verify)
    summary = {"run": s.output, "extracted": result.extracted, "probed": result.probed,
               "skipped_done": result.skipped, "failed": result.failed, "seconds": round(result.seconds, 2),
               "results": f"{s.output}/results", "report": f"{s.output}/report/index.html"}
    if as_json:
        print(json.dumps({"event": "summary", **summary}), flush=True)
    elif not quiet:
        err.print(f"[green]done[/] in {result.seconds:.1f}s: {result.extracted} shards extracted, "
                  f"{result.probed} probe units fit, {result.skipped} already done. "
                  f"Results in {s.output}/results, report at {s.output}/report/index.html")
    if result.failed:
        lines = "\n".join(f"  {k}: {v}" for k, v in list(result.failed.items())[:20])
        raise XlpError(f"{len(result.failed)} units failed (results hold everything else; relaunch to retry):\n{lines}")


@app.command()
def validate(
    spec: Path = typer.Argument(..., help="The experiment spec (YAML)."),
    schema_only: bool = typer.Option(False, "--schema-only",
                                     help="Check keys and types only (no data or checkpoints)."),
) -> None:
    """Check SPEC without running anything: keys, paths, splits, checkpoint configs; print the grid.

    Example: xlp validate examples/quickstart.yaml
    """
    s = _load(spec)
    if schema_only:
        stdout.print(f"[green]{spec}: spec is valid[/] (schema only)")
        return
    from xlp.models.loading import weight_sizes
    from xlp.run import preflight
    from xlp.run.plan import make_plan
    from xlp.tasks import resolve_tasks

    if s.pretrain is not None:
        from xlp.models.replica import is_complete, save_schedule

        if not is_complete(s.pretrain):
            stdout.print(f"checkpoints: `xlp launch` first pretrains the series into {s.pretrain.out} "
                         f"(steps {', '.join(map(str, save_schedule(s.pretrain)))}); "
                         f"run `xlp pretrain {spec}` to validate the grid before launching")
            preflight.check_data_only(s)
            stdout.print("[green]spec and data are valid[/]")
            return
    plan = make_plan(s)
    n_seeds = len(s.probe.seeds)
    t = Table(title=f"{spec}: grid")
    t.add_column("dimension")
    t.add_column("size", justify="right")
    t.add_column("values")
    t.add_row("checkpoints", str(len(plan.checkpoints)), ", ".join(str(c.step) for c in plan.checkpoints))
    t.add_row("languages", str(len(s.data.languages)), f"sources {plan.sources}; targets {plan.targets}")
    t.add_row("tasks", str(len(s.tasks)), ", ".join(s.tasks))
    t.add_row("layers", str(len(plan.layers)), str(plan.layers))
    t.add_row("seeds", str(n_seeds), str(s.probe.seeds))
    for task in resolve_tasks(s.tasks):
        units = [u for u in plan.probe if task.name in u.task.split("+")]
        langs = sorted({lang for u in units for lang in getattr(u, "langs", ())}) or None
        t.add_row(f"task {task.name}", f"{len(units)} units", task.describe_grid(s, langs))
    t.add_row("extraction units", str(len(plan.extract)), "checkpoint x language x split")
    t.add_row("probe units", str(len(plan.probe)), "checkpoint x task x source (layers, seeds, targets inside)")
    t.add_row("probe rows", f"{plan.probe_rows(n_seeds, s.cross_lingual):,}",
              "checkpoint x task x layer x source x target x seed")
    t.add_row("words to extract", f"{plan.words:,}", f"features about {plan.feature_bytes / 2**30:.2f} GiB")
    per_ckpt = plan.feature_bytes / max(1, len(plan.checkpoints) - len(plan.duplicates))
    for c in plan.checkpoints:
        sizes = weight_sizes(c)
        weights = (f"{sizes[0] / 1e6:,.1f} M parameters, {sizes[1] / 2**30:.2f} GiB of weights ({sizes[2]})"
                   if sizes else "weights not on this machine")
        features = "probed as its twin" if c.step in plan.duplicates else f"features {per_ckpt / 2**30:.2f} GiB"
        t.add_row(f"step {c.step}", "", f"{weights}; {features}")
    stdout.print(t)
    for note in plan.notes:
        stdout.print(f"note: {note}")
    stdout.print("[green]spec is valid[/]")


@app.command()
def status(
    target: Optional[str] = typer.Argument(None, help="A run folder or URI (s3://...), or the spec that names it."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (with --watch, one line per look)."),
    watch: Optional[float] = typer.Option(None, "--watch", metavar="SECONDS",
                                          help="Look again every SECONDS until no driver runs the folder."),
    job: Optional[str] = typer.Option(None, "--job", help="A job id from `xlp launch --submit`."),
    address: Optional[str] = typer.Option(None, help="The cluster's dashboard address, for --job."),
) -> None:
    """Progress per stage (done / running / pending / failed, rows/s, ETA), per node, and errors.

    Reads the run folder alone, so it works from any machine that sees it, also after the cluster is gone.

    Example: xlp status runs/quickstart --watch 5
    """
    import time

    from rich.console import Group
    from rich.live import Live

    from xlp.run.status import run_status

    if job:
        from xlp.run.submit import job_status

        js = job_status(job, address)
        if as_json:
            print(json.dumps(js))
        else:
            stdout.print(f"job {job}: {js['status']}" + (f" ({js['message']})" if js["message"] else ""))
            for line in js["log_tail"]:
                stdout.print(f"  {line}", highlight=False, markup=False)
        if target is None:
            return
    if target is None:
        raise XlpError("give a run folder or spec (or --job ID)")
    run = _load(Path(target)).output if "://" not in target and Path(target).is_file() else target

    def looks():  # the run's status now, then with --watch every `watch` seconds while a driver runs
        st = run_status(run)
        yield st
        while watch and st["driver"]["running"]:
            time.sleep(watch)
            st = run_status(run)
            yield st

    if as_json or not (watch and stdout.is_terminal):  # not a live screen: every look printed in full
        for st in looks():
            if as_json:
                print(json.dumps(st), flush=True)
            else:
                stdout.print(Group(*_status_view(run, st)))
        return
    with Live(console=stdout, auto_refresh=False) as live:
        for st in looks():
            live.update(Group(*_status_view(run, st)), refresh=True)


def _status_view(run: str, st: dict) -> list:
    t = Table(title=f"xlp status: {run}", caption=st["driver"]["detail"])
    for col in ("stage", "total", "done", "running", "pending", "failed", "rows/s", "ETA"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for stage, row in st["stages"].items():
        eta = "" if row["eta_s"] is None else _duration(row["eta_s"])
        t.add_row(stage, *(str(row[k]) for k in ("total", "done", "running", "pending", "failed", "rows_per_s")), eta)
    view: list = [t]
    if st["nodes"]:
        n = Table(title="done per node")
        for col in ("node", "ray node", "stage", "units", "rows", "worker s"):
            n.add_column(col, justify="right" if col in ("units", "rows", "worker s") else "left")
        for r in st["nodes"]:
            n.add_row(r["node"], r["ray_node"], r["stage"], str(r["units"]), f"{r['rows']:,}", f"{r['seconds']:,.1f}")
        view.append(n)
    for stage, row in st["stages"].items():
        view += [f"[yellow]running[/] {stage} {key}" for key in row["running_units"][:10]]
    for stage, row in st["stages"].items():
        view += [f"[red]failed[/] {stage} {key}: {error}" for key, error in list(row["errors"].items())[:10]]
    return view


def _duration(seconds: float) -> str:
    """3725 -> '1:02:05'; a day or more -> '2d 03:04:05'."""
    days, rest = divmod(round(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}d {h:02d}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"


@app.command()
def report(run: str = typer.Argument(..., help="A run folder or URI (s3://...).")) -> None:
    """Rebuild RUN's results tables and report from the probe outputs on disk.

    Example: xlp report runs/quickstart
    """
    from xlp.config import Spec
    from xlp.run.reduce import reduce_run
    from xlp.storage import Store

    store = Store(run)
    try:
        spec = Spec.model_validate_json(store.read_bytes("spec.json"))
    except (OSError, FileNotFoundError):
        raise XlpError(f"{run}: not an xlp run folder (no spec.json); launch a spec first") from None
    reduce_run(store, spec, force=True)
    stdout.print(f"report written to {run}/report/index.html")


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="Two run folders or URIs or more (pretraining seeds, model sizes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write comparison.parquet, .csv and per_run.parquet here."),
) -> None:
    """The same curves across runs: in how many runs each emerged, the spread of its emergence step, its best
    checkpoints and degradation, with a sentence per task.

    Example: xlp compare runs/multiberts-seed_0 runs/multiberts-seed_1 runs/multiberts-seed_2 --out runs/compare
    """
    from xlp.analysis.compare import compare_curves, differing_settings, load_runs, summary

    per_run, specs = load_runs(runs)
    for what in differing_settings(specs):
        err.print(f"[yellow]note:[/] the runs differ in {what}: their curves differ by that too", highlight=False)
    compared = compare_curves(per_run)
    if compared.empty:
        raise XlpError("compare: the runs share no curve (task, layer, source, target)")
    for line in summary(compared):
        stdout.print(line, highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        compared.to_parquet(out / "comparison.parquet", index=False)
        compared.to_csv(out / "comparison.csv", index=False)
        per_run.to_parquet(out / "per_run.parquet", index=False)
        stdout.print(f"{len(compared)} curves compared across {per_run['run'].nunique()} runs: "
                     f"{out}/comparison.parquet")


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
    from xlp.config import PretrainSpec
    from xlp.models.replica import pretrain

    base = _load(spec).pretrain if spec else None
    if spec and base is None:
        raise XlpError(f"{spec}: has no `pretrain:` section")
    if base is None and out is None:
        raise XlpError("give --out DIR (or a spec with a `pretrain:` section)")
    fields = base.model_dump() if base else {"out": str(out)}
    given = {"out": str(out) if out else None, "steps": steps, "seed": seed, "ud_root": ud_root,
             "languages": languages.split(",") if languages else None}
    fields.update({k: v for k, v in given.items() if v is not None})
    try:
        cfg = PretrainSpec.model_validate(fields)
    except ValueError as e:
        raise XlpError(f"pretrain options: {e}") from None
    dirs = pretrain(cfg, console=err, quiet=quiet)
    stdout.print(f"{len(dirs)} checkpoints in {cfg.out}: " + ", ".join(d.name for d in dirs))


data_app = typer.Typer(help="Fetch inputs into xlp's cache (XLP_CACHE, default ~/.cache/xlp).", no_args_is_help=True)
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
    root = fetch_ud(version, langs, dest, url, sha256, console=err, quiet=quiet)
    stdout.print(str(root))


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
    stdout.print(f"converted {src} -> {out}")


def main() -> None:
    try:
        app()
    except XlpError as e:
        if _debug["on"]:
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; everything finished so far is kept, relaunch to resume")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: still no traceback without --debug
        if _debug["on"]:
            raise
        err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e}\n(everything finished so far is kept; "
                  f"rerun with `xlp --debug ...` for the traceback and report it)", highlight=False, soft_wrap=True)
        sys.exit(2)
