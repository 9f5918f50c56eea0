"""The report's tables: results tables as shown (formatting and selection only, no arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

NOT_EMERGED = "did not emerge"
STEP_COLUMNS = ["emergence_step", "emergence_step_lo", "emergence_step_hi", "emergence_step_normalized",
                "emergence_step_normalized_lo", "emergence_step_normalized_hi"]
FINDING_KEYS = ["task", "other_task", "scope", "layer"]


def html_table(df: pd.DataFrame) -> str:
    """A table as HTML: floats to 4 decimals, missing values blank, text escaped."""
    return df.to_html(index=False, border=0, escape=True, na_rep="", float_format=lambda v: f"{v:.4f}")


def _integers(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Columns whose values are all whole numbers (counts, steps) shown as integers (blank where missing)."""
    for col in columns:
        if df[col].dropna().map(float.is_integer).all():
            df[col] = ["" if pd.isna(x) else str(int(x)) for x in df[col]]
    return df


def emergence_display(em: pd.DataFrame) -> pd.DataFrame:
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


def finding_numbers(findings: pd.DataFrame, key: str) -> pd.DataFrame:
    """A finding's numbers over all languages (the rows without a language), one row per (task, other task,
    scope, layer) that has them, a column per quantity; columns empty in every row left out."""
    numbers = findings[(findings.finding == key) & (findings.quantity != "sentence") & (findings.src_lang == "")]
    if numbers.empty:
        return pd.DataFrame()
    wide = numbers.pivot_table(index=FINDING_KEYS, columns="quantity", values="value", aggfunc="first",
                               sort=False)  # the rows that exist only
    wide = wide[[q for q in dict.fromkeys(numbers.quantity) if q in wide]].reset_index()
    wide.columns.name = None
    wide = _integers(wide, wide.columns[len(FINDING_KEYS):])
    return wide.loc[:, (wide != "").any(axis=0)]


def finding_sentences(findings: pd.DataFrame, key: str) -> list[str]:
    return list(findings[(findings.finding == key) & (findings.quantity == "sentence")].text)


def best_per_language(findings: pd.DataFrame, tasks: Sequence[str], languages: Sequence[str]) -> pd.DataFrame:
    """Finding (d) per language at each task's last layer: its best checkpoint, and its regret under the checkpoint
    best on average over languages (avg_best_step); tasks and languages in the given orders (others after)."""
    best = findings[(findings.finding == "best") & (findings.quantity != "sentence")]
    per = best[best.src_lang != ""]
    if per.empty:
        return pd.DataFrame()
    per = per[per.layer == per.groupby("task").layer.transform("max")]
    wide = per.pivot_table(index=["task", "layer", "src_lang"], columns="quantity", values="value",
                           aggfunc="first", sort=False).reset_index()
    avg = best[(best.src_lang == "") & (best.quantity == "avg_best_step")][["task", "layer", "value"]]
    wide = wide.merge(avg.rename(columns={"value": "avg_best_step"}), on=["task", "layer"], how="left")
    wide = wide.rename(columns={"src_lang": "language"})[["task", "layer", "language", "best_step", "regret",
                                                          "avg_best_step"]]
    wide.columns.name = None
    order = {"task": {x: i for i, x in enumerate(tasks)}, "language": {x: i for i, x in enumerate(languages)}}
    wide = wide.sort_values(["task", "language"], key=lambda col: col.map(order[col.name]).fillna(len(col)),
                            kind="stable", ignore_index=True)
    return _integers(wide, ["best_step", "avg_best_step"])
