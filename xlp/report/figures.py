"""The report's figures, drawn from the results tables: each a function that returns what to draw, `render`
turns it into PNG and SVG bytes. matplotlib is imported where a figure is drawn, never on `import xlp.report`,
and through its object API (no pyplot), so no global backend is set."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xlp.analysis.curve_table import tokens_by_step
from xlp.analysis.results import Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe & Ito's colour-blind-safe palette; past 8 languages colours repeat with another marker
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = "os^Dv"
Style = dict[str, tuple[str, str]]  # language -> (colour, marker), in the report's order of languages


@dataclass(frozen=True)
class Plot:
    name: str  # report/figures/<name>.{png,svg}
    caption: str
    draw: Callable[[], Figure]


@dataclass(frozen=True)
class Drawn:
    name: str
    caption: str
    png: bytes
    svg: bytes


def language_style(first: Sequence[str], probes: pd.DataFrame) -> Style:
    """A colour and marker per language: `first` (the spec's languages) in order, then the others the rows have."""
    langs = list(first)
    langs += sorted((set(probes.get("src_lang", [])) | set(probes.get("tgt_lang", []))) - set(langs))
    return {lang: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)])
            for i, lang in enumerate(langs)}


def render(plot: Plot) -> Drawn:
    """Draw the plot; its PNG and SVG (without a date, so the same figure gives the same bytes)."""
    from matplotlib import rc_context

    fig = plot.draw()
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
    with rc_context({"svg.hashsalt": plot.name}):  # the SVG's ids from the figure, not a random salt
        fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    return Drawn(re.sub(r"[^A-Za-z0-9_.-]", "_", plot.name), plot.caption, png.getvalue(), svg.getvalue())


def new_figure(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def step_axis(ax: Axes, steps) -> None:
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


def _tokens_axis(ax: Axes, tokens: pd.Series | None, steps) -> None:
    """Each step's tick also names the tokens seen there (`tokens_by_step`), where every checkpoint of the run
    says."""
    if tokens is None or len(steps) > 10:
        return
    steps = sorted(int(s) for s in steps)
    ax.set_xticks(steps, [f"{s} · {_short(tokens[s])}" for s in steps], fontsize=7, rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set_xlabel("pretraining step (symlog) and tokens seen")


def _short(n: float) -> str:
    """1638400 -> 1.6M: tokens as an axis label."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def last_layer(results: Results, task: str) -> int:
    p = results.probes
    return int(p.loc[p["task"] == task, "layer"].max())


def curve_rows(results: Results, task: str, layer: int | None = None) -> pd.DataFrame:
    """The rows of each language's curve: in-language, or for a pairwise task (retrieval, where a sentence
    trivially finds itself) or one with no in-language rows (align) the language as source against every other
    target; one layer or all."""
    p = results.probes
    p = p[(p["task"] == task) & ((p["layer"] == layer) if layer is not None else True)]
    same = p["src_lang"] == p["tgt_lang"]
    if task in results.pairwise or not same.any():  # align has pairs only: each source's curve over its targets
        return p[~same]
    return p[same]


def curves(results: Results, task: str, style: Style, layer: int | None = None) -> Plot | None:
    """Each language's learning curve at `layer` (default: the last), the languages and colours of `style`."""
    last = layer is None
    layer = last_layer(results, task) if last else layer
    d = curve_rows(results, task, layer)
    if d.empty:
        return None
    pairwise = bool((d["src_lang"] != d["tgt_lang"]).any())
    has_step0 = bool((d["step"] == 0).any())
    tokens = tokens_by_step(results.probes)  # outside draw(): a figure drawn elsewhere carries only what it shows

    def draw() -> Figure:
        fig, ax = new_figure((8, 4.5))
        for lang in [x for x in style if x in set(d["src_lang"])]:
            g = d[d["src_lang"] == lang]
            per_seed = g.groupby(["step", "seed"])["value"].mean()  # over targets, when pairwise
            s = per_seed.groupby(level="step").agg(["mean", "min", "max"])
            colour, marker = style[lang]
            ax.plot(s.index, s["mean"], color=colour, marker=marker, ms=4, label=lang)
            ax.fill_between(s.index, s["min"], s["max"], color=colour, alpha=0.2, lw=0)
            ax.axhline(g["baseline"].mean(), color=colour, ls="--", lw=0.8, alpha=0.8)
            if has_step0:
                ax.axhline(s.loc[0, "mean"], color=colour, ls=":", lw=0.8, alpha=0.8)
        step_axis(ax, d["step"].unique())
        what = "mean over the other languages as targets" if pairwise else "in-language"
        ax.set(xlabel="pretraining step (symlog)", ylabel=d["metric"].iloc[0],
               title=f"{task}: {what} learning curves, layer {layer}")
        _tokens_axis(ax, tokens, d["step"].unique())
        ax.legend(title="source" if pairwise else "language", loc="center left", bbox_to_anchor=(1.01, 0.5),
                  fontsize=8)
        return fig

    baseline = ("chance (1 / sentences)" if task in results.pairwise else
                "the task's baseline" if pairwise else "the language's majority-class baseline")
    return Plot(f"curves_{task}" + ("" if last else f"_layer{layer}"),
                f"{task}, layer {layer}{' (the last layer)' if last else ''}: mean over seeds, band = min–max across "
                f"seeds, dashed = {baseline}"
                + (", dotted = the step-0 (random-initialisation) checkpoint." if has_step0 else "."), draw)


def transfer(results: Results, task: str, style: Style, layer: int | None = None) -> Plot | None:
    """The source x target grid of emergence steps at `layer` (default: the last), languages as in `style`."""
    e = results.emergence
    if e.empty or "emergence_step" not in e:
        return None
    last = layer is None
    layer = last_layer(results, task) if last else layer
    curves = e[(e["task"] == task) & (e["layer"] == layer)]
    if not (curves["src_lang"] != curves["tgt_lang"]).any():
        return None  # in-language only (bpc): no transfer to show
    grid = curves.pivot(index="src_lang", columns="tgt_lang", values="emergence_step")
    grid = grid.loc[[x for x in style if x in grid.index], [x for x in style if x in grid.columns]]
    ran = curves.assign(ran=1.0).pivot(index="src_lang", columns="tgt_lang", values="ran").reindex_like(grid)

    def draw() -> Figure:
        from matplotlib.colors import ListedColormap, Normalize, SymLogNorm  # here: the driver only plans figures

        v, missing = grid.to_numpy(dtype=float), np.isnan(ran.to_numpy(dtype=float))
        positive = v[v > 0]
        if positive.size and positive.max() > positive.min():
            norm = SymLogNorm(linthresh=positive.min(), vmin=0, vmax=positive.max(), base=10)
        else:
            norm = Normalize(vmin=0, vmax=max(float(np.nanmax(v)) if (~np.isnan(v)).any() else 1, 1))
        fig, ax = new_figure((1.2 + 0.55 * v.shape[1], 1.0 + 0.5 * v.shape[0]))
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
        ax.set(xlabel="target language", ylabel="source language", title=f"{task}: emergence step, layer {layer}")
        fig.colorbar(im, ax=ax, label="emergence step")
        return fig

    name = f"transfer_{task}" + ("" if last else f"_layer{layer}")
    return Plot(name, f"{task}, layer {layer}: emergence step of each source → target curve (probe "
                "trained on the source, tested on the target); grey cells: did not emerge; blank cells: pairs the "
                "run does not have.", draw)


def layers(results: Results, task: str, style: Style) -> Plot | None:
    d = curve_rows(results, task)
    what = "cross-lingual" if (d["src_lang"] != d["tgt_lang"]).any() else "in-language"
    grid = d.groupby(["layer", "step"])["value"].mean().unstack("step")
    if len(grid) < 2:
        return None  # one layer (bpc reads the last): its curves say it all
    metric = d["metric"].iloc[0]

    def draw() -> Figure:
        fig, ax = new_figure((max(4.0, 0.45 * grid.shape[1] + 2), max(2.5, 0.35 * grid.shape[0] + 1.5)))
        im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
        every = max(1, grid.shape[1] // 12)
        ax.set_xticks(range(0, grid.shape[1], every), [str(s) for s in grid.columns[::every]], rotation=45)
        ax.set_yticks(range(grid.shape[0]), [str(x) for x in grid.index])
        ax.set(xlabel="pretraining step", ylabel="layer (0 = embeddings)",
               title=f"{task}: mean {what} {metric} by layer and step")
        fig.colorbar(im, ax=ax, label=metric)
        return fig

    return Plot(f"layers_{task}", f"{task}: {what} value averaged over languages and seeds.", draw)


def acquisition(results: Results, style: Style) -> Plot | None:
    """Per task (its last layer), each language's in-language emergence step with its interval; x: did not
    emerge."""
    e = results.emergence
    if e.empty or "emerged" not in e:
        return None
    e = e[(e.src_lang == e.tgt_lang) & ~e.task.isin(results.pairwise)]
    e = e[e.layer == e.groupby("task").layer.transform("max")]
    tasks = [t for t in results.tasks if t in set(e.task)]
    if not tasks:
        return None
    steps = sorted(set(results.probes["step"]))

    def draw() -> Figure:
        fig, ax = new_figure((8, 0.6 + 0.45 * len(tasks) * max(1, len(style)) ** 0.5))
        right = steps[-1] * 2 if steps and steps[-1] > 0 else 1
        for i, task in enumerate(tasks):
            g = e[e.task == task]
            for j, lang in enumerate([x for x in style if x in set(g.src_lang)]):
                row = g[g.src_lang == lang].iloc[0]
                y = i + 0.8 * (j + 0.5) / max(1, g.src_lang.nunique()) - 0.4
                colour, marker = style[lang]
                label = lang if i == 0 else None
                if row.emerged:
                    if not np.isnan(row.emergence_step_lo):
                        ax.plot([row.emergence_step_lo, row.emergence_step_hi], [y, y], color=colour, lw=1.5)
                    ax.plot(row.emergence_step, y, marker=marker, color=colour, ms=5, label=label)
                else:
                    ax.plot(right, y, marker="x", color=colour, ms=5, label=label)
        step_axis(ax, [*steps, right])
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set(xlabel="emergence step (symlog; x at the right: did not emerge)",
               title="in-language emergence step per task (last layer), with its interval")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="language")
        return fig

    return Plot("acquisition", "each language's in-language emergence step and its bootstrap interval, per task at "
                "its last layer; x = did not emerge.", draw)


PER_TASK = {"curves": curves, "transfer": transfer, "layers": layers}
