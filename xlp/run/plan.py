"""The grid of work, laid out from what pre-flight resolved: extraction units (checkpoint x language
x split), probe units (checkpoint x task x source language, with its layers, seeds and targets inside
one unit, so one batched solve fits the probes of every layer and each shard is read once per unit)
and sentence-task units (one per checkpoint and task)."""

from __future__ import annotations

from dataclasses import dataclass, field

from xlp.config import Spec
from xlp.models.checkpoints import Checkpoint
from xlp.probing import mdl
from xlp.run import preflight
from xlp.run.manifest import Manifest, manifest
from xlp.run.preflight import RunInputs
from xlp.run.units import ExtractUnit, ProbeUnit, SentenceUnit
from xlp.tasks import FeatureTask, OwnProbeTask, WordTask
from xlp.version import __version__


@dataclass
class Plan:
    checkpoints: list[Checkpoint]
    layers: list[int]
    extract: list[ExtractUnit] = field(default_factory=list)
    probe: list[ProbeUnit | SentenceUnit] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    words: int = 0  # words to extract over all units
    duplicates: dict[int, int] = field(default_factory=dict)  # step -> earlier identical step (not probed again)
    feature_bytes: int = 0

    def probe_rows(self, seeds: int, cross_lingual: bool) -> int:
        """Rows the probe stage adds to probes.parquet (an upper bound where the data decides)."""
        n = 0
        for u in self.probe:
            if isinstance(u, ProbeUnit):
                n += (len(u.tasks) * len(u.targets) + u.probe.mdl) * len(u.layers)  # mdl: one row per layer
            else:
                n += u.sentence_task.rows_per_unit(len(u.langs), len(u.layers), cross_lingual)
        return n * seeds

    def summary(self) -> dict:
        return {
            "checkpoints": len(self.checkpoints), "steps": [c.step for c in self.checkpoints],
            "layers": self.layers, "sources": self.sources, "targets": self.targets,
            "extraction_units": len(self.extract), "probe_units": len(self.probe),
        }

    def to_dict(self) -> dict:
        """What plan.json holds (`xlp status` reads it): every unit key with the hash it must be recorded with."""
        return {
            "xlp_version": __version__,
            "summary": self.summary(),
            "checkpoints": {str(c.step): c.name for c in self.checkpoints},  # where each step is now
            "duplicates": {str(k): v for k, v in self.duplicates.items()},
            "notes": self.notes,
            # by key, as plan.json lists them: the reducer reads outputs in this order (their columns' order)
            "units": {stage: dict(sorted((u.key, u.hash) for u in units))
                      for stage, units in (("extract", self.extract), ("probe", self.probe))},
        }


def make_plan(run: Spec | Manifest, inputs: RunInputs | None = None) -> Plan:
    """Lay out every unit of the run (pre-flight first, unless its result is given)."""
    run = manifest(run)
    spec = run.spec
    inputs = inputs or preflight.check(run)
    d, ud = spec.data, inputs.data.ud
    plan = Plan(checkpoints=inputs.checkpoints, layers=inputs.layers, sources=inputs.sources,
                targets=inputs.targets, notes=inputs.notes, feature_bytes=preflight.feature_bytes(spec, inputs),
                duplicates=inputs.duplicates)
    probed = [c for c in inputs.checkpoints if c.step not in inputs.duplicates]
    layers = tuple(inputs.layers)
    extract: dict[tuple[int, str, str], ExtractUnit] = {}
    for ckpt in probed:
        wanted = {(lang, *ud[lang].train, d.max_train_sentences, ud[lang].part("train")) for lang in plan.sources}
        wanted |= {(lang, *ud[lang].test, d.max_test_sentences, ud[lang].part("test")) for lang in plan.targets}
        for lang, split, file, cap, part in sorted(wanted, key=lambda w: (w[0], w[1])):
            unit = ExtractUnit(ckpt=ckpt, lang=lang, split=split, file=file, max_sentences=cap,
                               lenient=d.conllu == "lenient", layers=layers, pooling=inputs.poolings[ckpt.name],
                               dtype=spec.feature_dtype, part=part)
            extract[(ckpt.step, lang, split)] = unit
            plan.extract.append(unit)
            plan.words += inputs.words[(file, cap, part)]

    size = spec.probe.layers_per_unit or len(layers)
    layer_groups = [layers[i:i + size] for i in range(0, len(layers), size)]
    for ckpt in probed:
        for tasks in _fit_groups(inputs.word_tasks):
            langs, sources, targets_of_grid = spec.grid(tasks[0].name)
            options = tuple((t.name, run.tasks.options[t.name].model_dump_json()) for t in tasks
                            if type(run.tasks.options[t.name]).model_fields) or None
            # a task that fits its own probe (structural probes) reads no probe.kind: it is left out of its hash
            probe = spec.probe.read_by(mlp=spec.probe.kind == "mlp" and not isinstance(tasks[0], OwnProbeTask))
            code = mdl.definition() if spec.probe.mdl and isinstance(tasks[0], WordTask) else None
            for group in layer_groups:
                for src in plan.sources:
                    tgts = [t for t in plan.targets if (t == src and src in langs)
                            or (src in sources and t in targets_of_grid and t != src)]
                    if not tgts:
                        continue
                    targets = tuple((t, ud[t].test[0]) for t in tgts)
                    needs = [extract[(ckpt.step, src, ud[src].train[0])],
                             *(extract[(ckpt.step, t, s)] for t, s in targets)]
                    needs = list({u.key: u for u in needs}.values())
                    plan.probe.append(ProbeUnit(ckpt=ckpt, tasks=tasks, layers=group, src=src,
                                                pooling=inputs.poolings[ckpt.name],
                                                train_split=ud[src].train[0], targets=targets, probe=probe,
                                                needs=tuple(u.key for u in needs),
                                                inputs=tuple(u.hash for u in needs), options=options,
                                                online_code=code))
    for task in inputs.tasks:
        found = inputs.sentence_inputs.get(task.name)
        if found is None:
            continue
        for ckpt in probed:
            if ckpt.name not in inputs.skipped[task.name]:
                plan.probe.append(SentenceUnit(ckpt=ckpt, sentence_task=task,
                                               layers=task.unit_layers(inputs.layers, inputs.depths[ckpt.name]),
                                               inputs=found, seeds=tuple(spec.probe.seeds)))
    return plan


def _fit_groups(word_tasks: list[FeatureTask]) -> list[tuple[FeatureTask, ...]]:
    """The word tasks in probe units: a task that scores with another's probe (`fit_with`) joins that
    task's unit when both run, so the probe is fit once; otherwise each task is a unit of its own."""
    names = [t.name for t in word_tasks]
    groups: dict[str, list[FeatureTask]] = {}
    for task in word_tasks:
        owner = task.fit_with
        groups.setdefault(owner if owner in names else task.name, []).append(task)
    return [tuple(sorted(g, key=lambda t: t.name != owner)) for owner, g in groups.items()]
