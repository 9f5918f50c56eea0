"""What `xlp validate` reports of a run before anything runs: the grid's dimensions, each task's own grid,
the units and rows it will make, the words to extract and the disk they take, each checkpoint's size."""

from __future__ import annotations

from dataclasses import dataclass, field

from xlp.run import preflight
from xlp.run.manifest import Manifest
from xlp.run.plan import make_plan
from xlp.run.resources import local_cpus, plan_resources


@dataclass
class GridReport:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (dimension, size, values)
    notes: list[str] = field(default_factory=list)
    pending_pretrain: str | None = None  # set when the series is still to be pretrained: only the data was checked


def describe(run: Manifest) -> GridReport:
    """Pre-flight and plan the run, and lay out what it will do (or, for a series still to be pretrained,
    check the data and say so)."""
    from xlp.models.loading import pick_device, resolve_precision, weight_sizes

    s = run.spec
    if s.pretrain is not None:
        from xlp.models.replica import is_complete, save_schedule

        if not is_complete(s.pretrain):
            preflight.check_data_only(run)
            return GridReport(pending_pretrain=f"`xlp launch` first pretrains the series into {s.pretrain.out} "
                                               f"(steps {', '.join(map(str, save_schedule(s.pretrain)))})")
    plan = make_plan(run)
    n_seeds = len(s.probe.seeds)
    report = GridReport(notes=plan.notes)
    add = report.rows.append
    add(("checkpoints", str(len(plan.checkpoints)), ", ".join(str(c.step) for c in plan.checkpoints)))
    add(("languages", str(len(s.data.languages)), f"sources {plan.sources}; targets {plan.targets}"))
    add(("tasks", str(len(run.tasks.tasks)), ", ".join(run.tasks.tasks)))
    add(("layers", str(len(plan.layers)), str(plan.layers)))
    add(("seeds", str(n_seeds), str(s.probe.seeds)))
    for task in run.tasks:
        units = [u for u in plan.probe if task.name in u.task.split("+")]
        langs = sorted({lang for u in units for lang in getattr(u, "langs", ())}) or None
        add((f"task {task.name}", f"{len(units)} units", task.describe_grid(run.context(task.name), langs)))
    add(("extraction units", str(len(plan.extract)), "checkpoint x language x split"))
    add(("probe units", str(len(plan.probe)), "checkpoint x task x source (layers, seeds, targets inside)"))
    add(("probe rows", f"{plan.probe_rows(n_seeds, s.cross_lingual):,}",
         "checkpoint x task x layer x source x target x seed"))
    add(("words to extract", f"{plan.words:,}", f"features about {plan.feature_bytes / 2**30:.2f} GiB"))
    res = plan_resources(s.cluster, len(plan.extract))
    report.rows += res.describe(local_cpus(s.cluster))
    here = pick_device(None)
    add(("precision", s.precision, f"{resolve_precision(s.precision, here)} on this machine's {here.type}"
         + ("; auto: bfloat16 on a GPU and on a CPU with native bfloat16, float32 elsewhere, per worker"
            if s.precision == "auto" else "")))
    per_ckpt = plan.feature_bytes / max(1, len(plan.checkpoints) - len(plan.duplicates))
    for c in plan.checkpoints:
        sizes = weight_sizes(c)
        weights = (f"{sizes[0] / 1e6:,.1f} M parameters, {sizes[1] / 2**30:.2f} GiB of weights ({sizes[2]})"
                   if sizes else "weights not on this machine")
        features = "probed as its twin" if c.step in plan.duplicates else f"features {per_ckpt / 2**30:.2f} GiB"
        add((f"step {c.step}", "", f"{weights}; {features}"))
    return report
