"""Which figures a run's report has, and drawing them where the caller says (here, or as Ray tasks): the
acquisition plot, each task's plots of figures.py, and each control task's selectivity curves."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xlp.analysis.results import Results
from xlp.report.figures import PER_TASK, Drawn, Plot, Style, acquisition, new_figure, render, step_axis

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def selectivity(results: Results, name: str, style: Style) -> Plot | None:
    """Each language's in-language selectivity (the task's accuracy minus its control task's, Hewitt & Liang) against
    the pretraining step at the last layer, from the control task's table `name` (selectivity.parquet and kin)."""
    title, table = results.extra[name]
    d = table[table["src_lang"] == table["tgt_lang"]]
    if d.empty:
        return None
    layer = int(d["layer"].max())
    d = d[d["layer"] == layer]
    task = table.columns[-3]  # the controlled task's column, then "control" and "selectivity"

    def draw() -> Figure:
        fig, ax = new_figure((8, 4.5))
        for lang in [x for x in style if x in set(d["src_lang"])]:
            g = d[d["src_lang"] == lang].sort_values("step")
            colour, marker = style[lang]
            ax.plot(g["step"], g["selectivity"], color=colour, marker=marker, ms=4, label=lang)
        ax.axhline(0, color="grey", lw=0.8)
        step_axis(ax, d["step"].unique())
        ax.set(xlabel="pretraining step (symlog)", ylabel=f"{task} minus control accuracy",
               title=f"{task} selectivity: in-language, layer {layer}")
        ax.legend(title="language", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
        return fig

    return Plot(f"selectivity_{task}", f"{title}, in-language, layer {layer} (the last layer), mean over seeds; "
                "above 0: the probe does better on the task than on its control.", draw)


def _render_or_note(plot: Plot) -> Drawn | str:
    try:
        return render(plot)
    except Exception as e:  # noqa: BLE001
        return f"Figure {plot.name} was skipped: {type(e).__name__}: {e}"


def draw_all(results: Results, style: Style, map_plots: Callable | None = None
             ) -> tuple[dict[str, list[Drawn]], list[str]]:
    """Every figure, by the section it belongs to ("acquisition", "curves", "transfer", "layers"; selectivity
    curves go with the learning curves), and a note for each that could not be drawn. `map_plots(function, plots)`
    draws them (default: here; the run layer passes Ray tasks): a plot carries what it shows, so it draws the same
    bytes wherever it is drawn."""
    plans: list[tuple[str, str, Callable[[], Plot | None]]] = [("acquisition", "acquisition",
                                                                 lambda: acquisition(results, style))]
    for kind, make in PER_TASK.items():
        plans += [(kind, f"{kind}_{t}", lambda make=make, t=t: make(results, t, style)) for t in results.tasks]
    plans += [("curves", name, lambda name=name: selectivity(results, name, style))
              for name in sorted(results.extra) if name.startswith("selectivity")]
    drawn: dict[str, list[Drawn]] = {kind: [] for kind in ("acquisition", *PER_TASK)}
    made, notes = [], []
    for kind, name, plan in plans:
        try:
            made += [(kind, plot) for plot in [plan()] if plot is not None]
        except Exception as e:  # noqa: BLE001 - a plotting corner case must not lose the run's tables
            notes.append(f"Figure {name} was skipped: {type(e).__name__}: {e}")
    run = map_plots or (lambda f, xs: [f(x) for x in xs])
    for (kind, _), out in zip(made, run(_render_or_note, [plot for _, plot in made])):
        (drawn[kind] if isinstance(out, Drawn) else notes).append(out)
    return drawn, notes
