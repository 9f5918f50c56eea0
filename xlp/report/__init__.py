"""The run's self-contained HTML report: summary, definitions, figures (inline PNG) and tables."""

from __future__ import annotations

import base64
import html
import io
import re
from importlib import metadata

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize, SymLogNorm  # noqa: E402

from xlp.analysis.curve_table import direction, tokens_by_step  # noqa: E402
from xlp.analysis.findings import FINDINGS, findings_table  # noqa: E402
from xlp.tasks import BUILT_IN, pairwise_only, resolve_tasks  # noqa: E402

# Okabe & Ito's colour-blind-safe palette; past 8 languages colours repeat with another marker
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = "os^Dv"
PACKAGES = ["xlp", "torch", "transformers", "ray", "pyarrow", "numpy", "pandas", "matplotlib"]
SECTIONS = ["findings", "summary", "definitions", "notes", "curves", "transfer", "layers", "best", "emergence",
            "tables", "spec"]
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}
pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}dt{font-weight:600}dd{margin:0 0 .6em 1.5em}"""

esc = html.escape
NOT_EMERGED = "did not emerge"
STEP_COLUMNS = ["emergence_step", "emergence_step_lo", "emergence_step_hi", "emergence_step_normalized",
                "emergence_step_normalized_lo", "emergence_step_normalized_hi"]


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _poolings(probes: pd.DataFrame, asked: str) -> str:
    """The pooling the word vectors got, as recorded in the rows (`auto` resolved per checkpoint)."""
    used = sorted(set(probes["pooling"].dropna())) if "pooling" in probes else []
    return f"{asked}: {', '.join(used)}" if used and used != [asked] else asked


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, escape=True, na_rep="",
                      float_format=lambda v: f"{v:.4f}")


def _emergence_display(em: pd.DataFrame) -> pd.DataFrame:
    """The curves' table as shown: steps as integers, "did not emerge" where a curve has none."""
    out = em.copy()
    for col in [c for c in STEP_COLUMNS if c in out]:
        out[col] = [NOT_EMERGED if pd.isna(x) else str(int(x)) for x in out[col]]
    tokens = [c for c in out if "_tokens" in c]
    if "best_tokens" not in out or out["best_tokens"].isna().all():
        return out.drop(columns=tokens)  # the checkpoints do not say how many tokens they had seen
    for col in tokens:
        out[col] = ["" if pd.isna(x) else f"{x:,.0f}" for x in out[col]]
    return out


def _step_axis(ax, steps) -> None:
    steps = sorted(int(s) for s in steps)
    linthresh = min([s for s in steps if s > 0], default=1)
    ax.set_xscale("symlog", linthresh=linthresh)  # symlog because step 0 is a checkpoint
    if steps and steps[-1] > 0:
        ax.set_xlim(left=-0.2 * linthresh)  # no negative steps, but room for the markers at step 0
    else:
        ax.set_xlim(-1, 1)
    if len(steps) <= 10:
        crowded = {"rotation": 30, "ha": "right", "rotation_mode": "anchor"} if len(steps) > 6 else {}
        ax.set_xticks(steps, [str(s) for s in steps], **crowded)
        ax.minorticks_off()


def _step_norm(values: np.ndarray) -> Normalize:
    positive = values[values > 0]
    if positive.size and positive.max() > positive.min():
        return SymLogNorm(linthresh=positive.min(), vmin=0, vmax=positive.max(), base=10)
    return Normalize(vmin=0, vmax=max(float(np.nanmax(values)) if values.size else 1, 1))


def _short(n: float) -> str:
    """1638400 -> 1.6M: tokens as an axis label."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


class _Report:
    def __init__(self, store, spec, probes: pd.DataFrame, emergence: pd.DataFrame):
        self.store, self.spec, self.probes, self.emergence = store, spec, probes, emergence
        self.notes: list[str] = []
        self.inlang = probes[probes["src_lang"] == probes["tgt_lang"]] if not probes.empty else probes
        present = list(dict.fromkeys(probes["task"])) if not probes.empty else []
        self.task_of = {**BUILT_IN, **{t.name: t for t in resolve_tasks(spec.tasks)}}
        names = [t.name for t in resolve_tasks(spec.tasks)]
        self.tasks = [t for t in names if t in present] + [t for t in present if t not in names]
        for t in names:
            if t not in present:
                self.notes.append(f"No probe results for task {t}; its figures and rows are skipped.")
        langs = list(spec.data.languages)
        langs += sorted((set(probes.get("src_lang", [])) | set(probes.get("tgt_lang", []))) - set(langs))
        self.style = {lang: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)])
                      for i, lang in enumerate(langs)}

    def last_layer(self, task: str) -> int:
        return int(self.probes.loc[self.probes["task"] == task, "layer"].max())

    def figure(self, name: str, draw, caption: str) -> str:
        """Draw, save PNG and SVG under report/figures, return the <figure> with the PNG inline."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        fig = None
        try:
            fig = draw()
            png, svg = io.BytesIO(), io.BytesIO()
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
        except Exception as e:  # a plotting corner case must not lose the run's tables
            self.notes.append(f"Figure {name} was skipped: {type(e).__name__}: {e}")
            return ""
        finally:
            if fig is not None:
                plt.close(fig)
        self.store.write_bytes(f"report/figures/{name}.png", png.getvalue())
        self.store.write_bytes(f"report/figures/{name}.svg", svg.getvalue())
        data = base64.b64encode(png.getvalue()).decode()
        return (f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(caption)} (<code>figures/{esc(name)}.svg</code>)</figcaption></figure>")

    def pairwise(self, task: str) -> bool:
        """A task whose in-language values are trivial (retrieval): its curves use the other languages."""
        known = self.task_of.get(task)
        return bool(known and known.pairwise_only)

    def curve_rows(self, task: str, layer: int | None = None) -> pd.DataFrame:
        """The rows of each language's curve: in-language, or for retrieval (where a sentence trivially
        finds itself) the language as source against every other target; one layer or all."""
        if self.pairwise(task):
            d = self.probes[self.probes["src_lang"] != self.probes["tgt_lang"]]
        else:
            d = self.inlang
        return d[(d["task"] == task) & ((d["layer"] == layer) if layer is not None else True)]

    def curves(self, task: str) -> str:
        layer = self.last_layer(task)
        pairwise = self.pairwise(task)
        d = self.curve_rows(task, layer)
        if d.empty:
            return ""
        has_step0 = bool((d["step"] == 0).any())
        if not has_step0:
            self.notes.append(f"{task}: the series has no step-0 checkpoint, so the curves show no "
                              "random-initialisation baseline.")

        def draw():
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for lang in [x for x in self.style if x in set(d["src_lang"])]:
                g = d[d["src_lang"] == lang]
                per_seed = g.groupby(["step", "seed"])["value"].mean()  # over targets, when pairwise
                s = per_seed.groupby(level="step").agg(["mean", "min", "max"])
                colour, marker = self.style[lang]
                ax.plot(s.index, s["mean"], color=colour, marker=marker, ms=4, label=lang)
                ax.fill_between(s.index, s["min"], s["max"], color=colour, alpha=0.2, lw=0)
                ax.axhline(g["baseline"].mean(), color=colour, ls="--", lw=0.8, alpha=0.8)
                if has_step0:
                    ax.axhline(s.loc[0, "mean"], color=colour, ls=":", lw=0.8, alpha=0.8)
            _step_axis(ax, d["step"].unique())
            what = "mean over the other languages as targets" if pairwise else "in-language"
            ax.set(xlabel="pretraining step (symlog)", ylabel=d["metric"].iloc[0],
                   title=f"{task}: {what} learning curves, layer {layer}")
            self.tokens_axis(ax, d["step"].unique())
            ax.legend(title="source" if pairwise else "language", loc="center left",
                      bbox_to_anchor=(1.01, 0.5), fontsize=8)
            return fig

        baseline = "chance (1 / sentences)" if pairwise else "the language's majority-class baseline"
        return self.figure(f"curves_{task}", draw, f"{task}, layer {layer} (the last layer): mean over seeds, "
                           f"band = min–max across seeds, dashed = {baseline}"
                           + (", dotted = the step-0 (random-initialisation) checkpoint." if has_step0 else "."))

    def tokens_axis(self, ax, steps) -> None:
        """Each step's tick also names the tokens seen there, where every checkpoint of the run says."""
        tokens = tokens_by_step(self.probes) if len(steps) <= 10 else None
        if tokens is None:
            return
        steps = sorted(int(s) for s in steps)
        ax.set_xticks(steps, [f"{s} · {_short(tokens[s])}" for s in steps], fontsize=7, rotation=30, ha="right",
                      rotation_mode="anchor")
        ax.set_xlabel("pretraining step (symlog) and tokens seen")

    def transfer(self, task: str) -> str:
        e = self.emergence
        if e.empty or "emergence_step" not in e:
            return ""
        layer = self.last_layer(task)
        curves = e[(e["task"] == task) & (e["layer"] == layer)]
        if not (curves["src_lang"] != curves["tgt_lang"]).any():
            return ""  # in-language only (bpc): no transfer to show
        grid = curves.pivot(index="src_lang", columns="tgt_lang", values="emergence_step")
        order = list(self.style)
        grid = grid.loc[[x for x in order if x in grid.index], [x for x in order if x in grid.columns]]
        ran = curves.assign(ran=1.0).pivot(index="src_lang", columns="tgt_lang", values="ran").reindex_like(grid)

        def draw():
            v, missing = grid.to_numpy(dtype=float), np.isnan(ran.to_numpy(dtype=float))
            norm = _step_norm(v[~np.isnan(v)])
            fig, ax = plt.subplots(figsize=(1.2 + 0.55 * v.shape[1], 1.0 + 0.5 * v.shape[0]))
            ax.set_facecolor("#eeeeee")  # cells of curves that did not emerge
            im = ax.imshow(np.ma.masked_invalid(v), cmap="viridis", norm=norm, aspect="auto")
            ax.imshow(np.ma.masked_where(~missing, np.ones_like(v)), cmap=ListedColormap(["white"]), aspect="auto")
            for (i, j), x in np.ndenumerate(v):
                if missing[i, j]:
                    continue  # a pair the run does not have
                if np.isnan(x):
                    ax.text(j, i, "did not\nemerge", ha="center", va="center", fontsize=5, color="#555")
                else:
                    ax.text(j, i, f"{int(x)}", ha="center", va="center", fontsize=7,
                            color="white" if norm(x) < 0.5 else "black")
            ax.set_xticks(range(v.shape[1]), grid.columns)
            ax.set_yticks(range(v.shape[0]), grid.index)
            ax.set(xlabel="target language", ylabel="source language",
                   title=f"{task}: emergence step, layer {layer}")
            fig.colorbar(im, ax=ax, label="emergence step")
            return fig

        return self.figure(f"transfer_{task}", draw, f"{task}, layer {layer}: emergence step of each "
                           "source → target curve (probe trained on the source, tested on the target); grey "
                           "cells: did not emerge; blank cells: pairs the run does not have.")

    def layers(self, task: str) -> str:
        d = self.curve_rows(task)
        what = "cross-lingual" if self.pairwise(task) else "in-language"
        grid = d.groupby(["layer", "step"])["value"].mean().unstack("step")
        if len(grid) < 2:
            return ""  # one layer (bpc reads the last): its curves say it all

        def draw():
            fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * grid.shape[1] + 2), max(2.5, 0.35 * grid.shape[0] + 1.5)))
            im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
            every = max(1, grid.shape[1] // 12)
            ax.set_xticks(range(0, grid.shape[1], every), [str(s) for s in grid.columns[::every]], rotation=45)
            ax.set_yticks(range(grid.shape[0]), [str(x) for x in grid.index])
            ax.set(xlabel="pretraining step", ylabel="layer (0 = embeddings)",
                   title=f"{task}: mean {what} {d['metric'].iloc[0]} by layer and step")
            fig.colorbar(im, ax=ax, label=d["metric"].iloc[0])
            return fig

        return self.figure(f"layers_{task}", draw, f"{task}: {what} value averaged over languages and seeds.")

    def acquisition_figure(self) -> str:
        """Per task (its last layer), each language's in-language emergence step with its interval;
        x: did not emerge."""
        e = self.emergence
        if e.empty or "emerged" not in e:
            return ""
        e = e[(e.src_lang == e.tgt_lang) & ~e.task.isin(pairwise_only())]
        e = e[e.layer == e.groupby("task").layer.transform("max")]
        tasks = [t for t in self.tasks if t in set(e.task)]
        if not tasks:
            return ""

        def draw():
            fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * len(tasks) * max(1, len(self.style)) ** 0.5))
            steps = sorted(set(self.probes["step"]))
            right = steps[-1] * 2 if steps and steps[-1] > 0 else 1
            for i, task in enumerate(tasks):
                g = e[e.task == task]
                for j, lang in enumerate([x for x in self.style if x in set(g.src_lang)]):
                    row = g[g.src_lang == lang].iloc[0]
                    y = i + 0.8 * (j + 0.5) / max(1, g.src_lang.nunique()) - 0.4
                    colour, marker = self.style[lang]
                    if row.emerged:
                        lo, hi = row.emergence_step_lo, row.emergence_step_hi
                        if not np.isnan(lo):
                            ax.plot([lo, hi], [y, y], color=colour, lw=1.5)
                        ax.plot(row.emergence_step, y, marker=marker, color=colour, ms=5,
                                label=lang if i == 0 else None)
                    else:
                        ax.plot(right, y, marker="x", color=colour, ms=5, label=lang if i == 0 else None)
            _step_axis(ax, [*steps, right])
            ax.set_yticks(range(len(tasks)), tasks)
            ax.set(xlabel="emergence step (symlog; x at the right: did not emerge)",
                   title="in-language emergence step per task (last layer), with its interval")
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="language")
            return fig

        return self.figure("acquisition", draw, "each language's in-language emergence step and its bootstrap "
                           "interval, per task at its last layer; x = did not emerge.")

    def best(self) -> str:
        rows, lines = [], []
        for task in self.tasks:
            layer = self.last_layer(task)
            d = self.curve_rows(task, layer)
            curves = d.groupby(["src_lang", "step"])["value"].mean().unstack("step")  # language × step
            if curves.empty:
                continue
            curves = curves.loc[[x for x in self.style if x in curves.index]]
            sign = direction(str(d["metric"].iloc[0]))  # bpc: lower is better
            avg_step = (sign * curves.mean(axis=0)).idxmax()  # steps ascend, so idxmax is the earliest on ties
            lines.append(f"<p>{esc(task)} (layer {layer}): single best-on-average checkpoint = step {avg_step} "
                         f"(mean over languages {curves[avg_step].mean():.4f}).</p>")
            for lang, c in curves.iterrows():
                c = c.dropna()
                best = (sign * c).idxmax()
                rows.append({"task": task, "language": lang, "layer": layer, "best_step": best,
                             "best_value": c[best], "final_step": c.index[-1], "final_value": c.iloc[-1],
                             "final_minus_best": c.iloc[-1] - c[best], "avg_best_step": avg_step,
                             "value_at_avg_best": curves.at[lang, avg_step],
                             "regret": sign * (c[best] - curves.at[lang, avg_step]) + 0.0})  # no -0
        return "".join(lines) + (_table(pd.DataFrame(rows)) if rows else "<p>No in-language results.</p>")


PROCEDURE = """<p>How these are computed. A curve <em>emerged</em> only if (1) its reference value (the best, or the
final checkpoint's: <code>analysis.emergence_reference</code> = {ref}) is above the majority-class baseline and (2)
above the first checkpoint's value, each with a one-sided bootstrap p &lt; {alpha} over the test items (the curve's
items resampled, the same draw at every checkpoint; where probe seeds differ, the seeds resampled too), and (3) the
rise is a trend: a one-sided permutation test of the checkpoints' order (Mann–Kendall from the first checkpoint to the
reference, or to the reference and on to a smooth decline after it; p &lt; {alpha} against every order of the
checkpoints being equally likely, the choice of the best included), so one lucky checkpoint among differing ones does
not pass, and with 3 checkpoints or fewer nothing can. Pairs of checkpoints count in the trend only where they differ
beyond the noise (bootstrap and an exact sign test over the items that differ), so a noisy plateau is neither a rise
nor a fall. All three must hold, so a curve's p-value is the largest of the three, and it emerged when its
Benjamini–Hochberg q-value over all of the task's curves in the run is &lt; {alpha}. A curve that did not emerge has
no emergence step. Intervals are {level:.0f} % bootstrap percentile intervals ({boot} resamples): the whole curve
recomputed on resampled items, then its step. <em>Degradation</em> is cross-fitted: the test items are split in two
fixed random halves (seed {seed}); the best checkpoint is chosen on one half and best − final measured on the other,
both ways, and the two estimates averaged; its p-value is the bootstrap probability (selection redone in every
resample) that this average is ≤ 0; q-values are Benjamini–Hochberg over all of a task's degradation tests in the run
(every layer, source and target), and a curve degrades significantly when q &lt; {alpha}. Acquisition order uses a
two-sided exact sign test over languages (ties, including where neither task emerged, left out). Sentences speak of
each task's last layer; the tables have every layer. findings.parquet holds every number.</p>"""


def _findings_html(r: _Report, findings: pd.DataFrame, analysis) -> str:
    parts = [PROCEDURE.format(ref=esc(analysis.emergence_reference), alpha=analysis.alpha, boot=analysis.bootstrap,
                              level=100 * (1 - analysis.alpha), seed=analysis.seed)]
    if findings.empty:
        return parts[0] + "<p>No curves, so no findings.</p>"
    for key, title in FINDINGS.items():
        f = findings[findings.finding == key]
        sentences = f[f.quantity == "sentence"].text
        numbers = f[(f.quantity != "sentence") & (f.src_lang == "")]
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in sentences) + "</ul>" if len(sentences)
                     else "<p>Nothing to compute for this run.</p>")
        if len(numbers):
            wide = numbers.pivot_table(index=["task", "other_task", "scope", "layer"], columns="quantity",
                                       values="value", aggfunc="first", sort=False)  # the rows that exist only
            wide = wide[[q for q in dict.fromkeys(numbers.quantity) if q in wide]].reset_index()
            wide.columns.name = None
            for col in wide.columns[4:]:  # counts and steps as integers
                if wide[col].dropna().map(float.is_integer).all():
                    wide[col] = wide[col].astype("Int64")
            parts.append(_table(wide.loc[:, (wide != "").any(axis=0)]))
        if key == "acquisition":
            parts.append(r.acquisition_figure())
    return "".join(parts)


def write_report(store, spec, plan: dict, probes: pd.DataFrame, emergence: pd.DataFrame,
                 extra_tables: dict[str, pd.DataFrame] | None = None, timings: dict[str, str] | None = None,
                 findings: pd.DataFrame | None = None) -> None:
    """Write report/index.html (figures inline) and report/figures/<kind>_<task>.{png,svg} to the store."""
    r = _Report(store, spec, probes, emergence)
    s, a = plan.get("summary", {}), spec.analysis
    theta = a.emergence_threshold
    if findings is None:
        findings = findings_table(probes, emergence, a.alpha, spec.tasks)
    body = {
        "findings": _findings_html(r, findings, a),
        "summary": "<ul>" + "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in [
            ("run", spec.name), ("checkpoints", s.get("checkpoints")),
            ("steps", ", ".join(map(str, s.get("steps", [])))), ("tasks", ", ".join(spec.tasks)),
            ("layers", s.get("layers")), ("sources", s.get("sources")), ("targets", s.get("targets")),
            *((f"timing: {stage}", t) for stage, t in (timings or {}).items()),
            ("versions", ", ".join(f"{p} {_version(p)}" for p in PACKAGES))]) + "</ul>",
        "definitions": f"""<dl>
<dt>Curve</dt><dd>metric against pretraining step for one (task, layer, source, target), averaged over probe seeds.</dd>
<dt>Emerged</dt><dd>the curve's reference value ({esc(a.emergence_reference)}) beats its baseline and its first
checkpoint by more than the noise (one-sided bootstrap over test items, and seeds where they differ, p &lt; {a.alpha}),
and the rise is a trend over checkpoints (permutation test); the largest of the three p-values, corrected by
Benjamini–Hochberg over the task's curves, is below {a.alpha} (see Findings for the procedure).
Otherwise the curve did not emerge and has no emergence step.</dd>
<dt>Emergence step</dt><dd>for a curve that emerged, the first checkpoint whose value reaches θ × the reference
value, θ = {theta}. The normalised variant is the first checkpoint with (value − first) / (reference − first) ≥ θ.
Each comes with a {100 * (1 - a.alpha):.0f} % interval (<code>_lo</code>, <code>_hi</code>): the step recomputed on
{a.bootstrap} bootstrap resamples of the test items (the whole curve and its reference recomputed each time),
percentiles taken among the checkpoints' steps. It says how far the step could move with other test items of the
same language; it is not an interval over pretraining runs. Where every checkpoint says how many tokens it had
seen, the <code>_tokens</code> columns give the same checkpoints in tokens.</dd>
<dt>Best checkpoint</dt><dd>the argmax of the curve (argmin for bits per character), the earliest on ties;
final_minus_best = final value − best value, on all test items (a point estimate that favours the best).</dd>
<dt>Degradation</dt><dd><code>degradation</code> = best − final (positive: the final is worse) with the best chosen
on one half of the test items and measured on the other, averaged over both directions; <code>degradation_p</code>
its bootstrap p-value, <code>degradation_q</code> Benjamini–Hochberg over the task's tests in this run,
<code>degradation_significant</code>: q &lt; {a.alpha} and degradation &gt; 0. The items are the task's own
(words, sentence pairs, sentences: bits per character and alignment F1 are recomputed from each resampled
sentence's bits and characters, or link counts).</dd>
{"".join(f"<dt>{esc(t.name)}</dt><dd>{esc(t.definition)}</dd>" for t in resolve_tasks(spec.tasks))}
<dt>Single best-on-average checkpoint</dt><dd>the step maximising the mean over languages of the in-language curve
(last layer); a language's regret = its best value − its value at that step.</dd>
<dt>Probe</dt><dd>L2-regularised (l2 = {spec.probe.l2}) multinomial logistic regression on frozen word vectors
({esc(_poolings(probes, spec.pooling))} subword pooling: a word's vector is its first, last or mean subword's;
<code>auto</code> is last in a causal LM, whose last subword alone has seen the whole word, and first otherwise;
the <code>pooling</code> column of probes.parquet records it per row).</dd></dl>""",
        "curves": "".join(r.curves(t) for t in r.tasks),
        "transfer": "".join(r.transfer(t) for t in r.tasks),
        "layers": "".join(r.layers(t) for t in r.tasks),
        "best": r.best(),
        "emergence": _table(_emergence_display(emergence)) if not emergence.empty else "<p>No curves.</p>",
        "tables": "".join(f"<h3>{esc(name)}</h3>{_table(df)}" for name, df in (extra_tables or {}).items()),
        "spec": f"<pre>{esc(spec.model_dump_json(indent=1))}</pre>",
    }
    # notes last: figures add their own notes when skipped
    body["notes"] = "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in [*plan.get("notes", []), *r.notes]) + "</ul>"
    titles = {"findings": "Findings", "best": "Best checkpoints", "tables": "Tables", "spec": "Spec",
              "curves": "Learning curves",
              "transfer": "Cross-lingual transfer", "layers": "Layers × steps", "emergence": "Emergence table"}
    sections = "\n".join(f'<section id="{k}"><h2>{titles.get(k, k.capitalize())}</h2>{body[k] or "<p>None.</p>"}'
                         "</section>" for k in SECTIONS)
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>xlp: {esc(spec.name)}</title>'
            f"<style>{CSS}</style></head><body><h1>xlp run: {esc(spec.name)}</h1>\n{sections}\n</body></html>\n")
    store.write_bytes("report/index.html", page.encode())
