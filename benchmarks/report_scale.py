"""The report at the paper's size, from results tables made directly (no model): 39 checkpoints, 44 languages
in-language and 18 x 18 pairs, 13 layers, pos/arc/deprel/bpc/xnli/align, 3 seeds. Renders the static report
(index.html with its figures) and the interactive explore.html the naive way (every emergence row written into
the page, as the report did) and xlp's way, and prints sizes and times.

    python benchmarks/report_scale.py [--small]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

LANGS = [chr(97 + i // 26) + chr(97 + i % 26) for i in range(44)]  # aa, ab, ...: ISO-shaped codes
STEPS = sorted({0, *np.unique(np.geomspace(1000, 1_500_000, 38).round(-3).astype(int))})
TASKS = {"pos": "accuracy", "arc": "accuracy", "deprel": "accuracy", "bpc": "bpc", "xnli": "accuracy",
         "align": "f1"}


def synthetic_results(langs=LANGS, cross=18, steps=STEPS, layers=13, seeds=3, xnli=15, seed=0):
    """Results whose curves rise with the step (bpc falls), made directly; their emergence rows are each curve's
    first step at 95 % of its rise, with an interval of one checkpoint either side."""
    from xlp.analysis.results import Results

    rng = np.random.default_rng(seed)
    steps = np.asarray(steps)
    rise = np.log1p(steps / 20_000) / np.log1p(steps[-1] / 20_000)
    grids = {"pos": (langs, langs[:cross]), "arc": (langs, langs[:cross]), "deprel": (langs, langs[:cross]),
             "bpc": (langs, []), "xnli": (langs[:xnli], langs[:xnli]), "align": ([], langs[:6])}
    frames = []
    for task, (own, across) in grids.items():
        pairs = [(x, x) for x in own] + [(s, t) for s in across for t in across if s != t]
        if task == "align":
            pairs = [(langs[0], t) for t in langs[1:7]]
        n_layers = 1 if task == "bpc" else layers
        keys = pd.MultiIndex.from_product([range(len(pairs)), range(n_layers), range(len(steps)), range(seeds)],
                                          names=["pair", "layer", "k", "seed"]).to_frame(index=False)
        base = 3.0 - 1.5 * rise if task == "bpc" else 0.3 + 0.5 * rise
        keys["value"] = base[keys.k] + rng.normal(0, 0.01, len(keys))
        keys["src_lang"] = [pairs[i][0] for i in keys.pair]
        keys["tgt_lang"] = [pairs[i][1] for i in keys.pair]
        keys["layer"] = keys.layer + (layers if task == "bpc" else 0)
        frames.append(keys.assign(task=task, metric=TASKS[task], step=steps[keys.k], baseline=0.3,
                                  checkpoint=[f"step{s}" for s in steps[keys.k]]))
    probes = pd.concat(frames, ignore_index=True).drop(columns=["pair", "k"])
    means = probes.groupby(["task", "layer", "src_lang", "tgt_lang", "step"]).value.mean().reset_index()
    reach = min(int(np.argmax(rise >= 0.95)), len(steps) - 2)
    em = means.drop_duplicates(["task", "layer", "src_lang", "tgt_lang"])[["task", "layer", "src_lang", "tgt_lang"]]
    em = em.assign(metric=em.task.map(TASKS), emerged=True, emergence_step=float(steps[reach]),
                   emergence_step_lo=float(steps[reach - 1]), emergence_step_hi=float(steps[reach + 1]),
                   best_step=int(steps[-1]))
    findings = pd.DataFrame(columns=["finding", "task", "other_task", "scope", "layer", "src_lang", "tgt_lang",
                                     "quantity", "value", "text"])
    layers = pd.DataFrame(columns=["task", "lang", "step", "best_layer", "best_layer_value", "last_layer",
                                   "last_layer_value", "last_layer_best_step", "last_layer_final_minus_best"])
    return Results(probes=probes, emergence=em.reset_index(drop=True), findings=findings, layers=layers,
                   extra={}, tasks=tuple(grids), definitions=dict.fromkeys(grids, ""), pairwise=frozenset(),
                   notes=(), lower_is_better=frozenset({"bpc"}))


def browser_load_seconds(page: Path) -> float | None:
    """Seconds from opening the page (offline) in Chromium until its curves are drawn; None without a browser."""
    import shutil

    browser = shutil.which("chromium")
    if browser is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-background-networking"])
        tab = b.new_context(offline=True).new_page()
        t = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_function("document.getElementById('curves').data !== undefined", timeout=60_000)
        seconds = time.perf_counter() - t
        b.close()
    return seconds


def main(small: bool) -> None:
    from xlp.config import Spec
    from xlp.report import write_report
    from xlp.report.tables import emergence_display, html_table
    from xlp.storage import Store

    results = synthetic_results(langs=LANGS[:8], cross=4, steps=STEPS[::4], layers=3) if small \
        else synthetic_results()
    print(f"{len(results.probes):,} probe rows, {len(results.emergence):,} curves")
    t = time.perf_counter()
    naive = html_table(emergence_display(results.emergence))  # the page used to write every curve's row
    naive_s = time.perf_counter() - t
    out = Path(tempfile.mkdtemp())
    spec = Spec(name="paper", output=str(out), checkpoints=[{"path": "ckpts/step_*"}],
                data={"ud_root": "ud", "languages": LANGS}, tasks=list(TASKS))
    t = time.perf_counter()
    write_report(Store(str(out)), results, spec, {"notes": [], "units": {}})
    ours_s = time.perf_counter() - t
    sizes = {f.name: f.stat().st_size for f in (out / "report").iterdir() if f.is_file()}
    figures = sum(f.stat().st_size for f in (out / "report" / "figures").iterdir())
    print(f"naive: the emergence table alone as HTML rows: {len(naive) / 1e6:.1f} MB ({naive_s:.1f} s)")
    print(f"xlp: the whole report in {ours_s:.1f} s: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items())
          + f", figures/ {figures / 1e6:.1f} MB")
    load = browser_load_seconds(out / "report" / "explore.html")
    print("explore.html drawn in Chromium (offline) in " + (f"{load:.1f} s" if load else "- (no chromium)"))


if __name__ == "__main__":
    main("--small" in sys.argv)
