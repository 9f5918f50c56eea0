"""The report's prose: how the findings are computed and what each term means, with the run's settings."""

from __future__ import annotations

import html
from collections.abc import Mapping

from xlp.config import AnalysisSpec, Spec

esc = html.escape

PROCEDURE = """<p>How these are computed (docs/statistics.md has each test's null, what is resampled, each q-value's
family and the false-positive rates measured). The unit resampled is the <em>sentence</em>: its words, arcs and
relations share its difficulty, so they are resampled, split into halves and counted in sign tests together. A curve
<em>emerged</em> only if (1) its reference value (the best, or the final checkpoint's:
<code>analysis.emergence_reference</code> = {ref}) rose above the first checkpoint's by more than
<code>analysis.min_effect</code> ({effect}, in the metric's units), (2) is above the baseline, both with the best
chosen on one half of the sentences and tested on the other, both ways, the choice redone in every bootstrap
replicate, and (3) the rise is a trend (a permutation test of the checkpoints' order); the largest of the three
p-values, corrected by Benjamini–Hochberg over the task's curves in the run, is below {alpha}, and the first
checkpoint does not already reach θ × the reference. p-values are (b + 1) / (B + 1), never 0. Intervals are
{level:.0f} % bootstrap percentile intervals ({boot} resamples): the whole curve recomputed on resampled sentences,
then its step. <em>Degradation</em> is cross-fitted: the sentences are split in two fixed random halves (seed
{seed}); the best checkpoint is chosen on one half and best − final measured on the other, both ways, and averaged;
q-values are Benjamini–Hochberg over the task's degradation tests. Each finding's sentence names its test and the
family its q-value controls. Sentences speak of each task's last layer; the tables have every layer.
findings.parquet holds every number.</p>"""


def procedure(a: AnalysisSpec) -> str:
    return PROCEDURE.format(ref=esc(a.emergence_reference), alpha=a.alpha, boot=a.bootstrap,
                            level=100 * (1 - a.alpha), seed=a.seed, effect=esc(str(a.min_effect)))


def definitions(spec: Spec, tasks: Mapping[str, str], poolings: str) -> str:
    """The definitions list: the terms, then each of the run's tasks (`tasks`: name -> definition)."""
    a = spec.analysis
    return f"""<dl>
<dt>Curve</dt><dd>metric against pretraining step for one (task, layer, source, target), averaged over probe seeds.</dd>
<dt>Emerged</dt><dd>the curve's reference value ({esc(a.emergence_reference)}) beats its baseline, and its first
checkpoint by more than <code>analysis.min_effect</code>, beyond the noise (one-sided bootstrap over sentences, and
seeds where they differ, cross-fitted), and the rise is a trend over checkpoints (permutation test); the largest of
the three p-values, corrected by Benjamini–Hochberg over the task's curves, is below {a.alpha}, and the first
checkpoint does not already reach θ × the reference (see Findings for the procedure). Otherwise the curve did not
emerge and has no emergence step.</dd>
<dt>Emergence step</dt><dd>for a curve that emerged, the first checkpoint whose value reaches θ × the reference
value, θ = {a.emergence_threshold}. The normalised variant is the first checkpoint with (value − first) / (reference −
first) ≥ θ. Each comes with a {100 * (1 - a.alpha):.0f} % interval (<code>_lo</code>, <code>_hi</code>): the step
recomputed on {a.bootstrap} bootstrap resamples of the test items (the whole curve and its reference recomputed each
time), percentiles taken among the checkpoints' steps. It says how far the step could move with other test items of
the same language; it is not an interval over pretraining runs. Where every checkpoint says how many tokens it had
seen, the <code>_tokens</code> columns give the same checkpoints in tokens.</dd>
<dt>Best checkpoint</dt><dd>the argmax of the curve (argmin for bits per character), the earliest on ties;
final_minus_best = final value − best value, on all test items (a point estimate that favours the best).</dd>
<dt>Degradation</dt><dd><code>degradation</code> = best − final (positive: the final is worse) with the best chosen
on one half of the test items and measured on the other, averaged over both directions; <code>degradation_p</code>
its bootstrap p-value, <code>degradation_q</code> Benjamini–Hochberg over the task's tests in this run,
<code>degradation_significant</code>: q &lt; {a.alpha} and degradation &gt; 0. The items are the task's own
(words, sentence pairs, sentences: bits per character and alignment F1 are recomputed from each resampled
sentence's bits and characters, or link counts).</dd>
{"".join(f"<dt>{esc(name)}</dt><dd>{esc(text)}</dd>" for name, text in tasks.items())}
<dt>Single best-on-average checkpoint</dt><dd>the step maximising the mean over languages of the in-language curve,
among the checkpoints every language has; a language's regret = its best value − its value at that step, positive
where that step is worse for it (for bits per character, the value at that step − the best).</dd>
<dt>Probe</dt><dd>L2-regularised (l2 = {spec.probe.l2}) multinomial logistic regression on frozen word vectors
({esc(poolings)} subword pooling: a word's vector is its first, last or mean subword's;
<code>auto</code> is last in a causal LM, whose last subword alone has seen the whole word, and first otherwise;
the <code>pooling</code> column of probes.parquet records it per row).</dd></dl>"""
