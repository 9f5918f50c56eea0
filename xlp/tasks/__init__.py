"""Task registry: one module per task, one line here.

A task turns a feature shard into probe examples: `examples(table, layer_columns, seed)` returns
features (L, n, d) and labels (n,); `needs` names the label columns it reads, `metric` what is
reported, and `seeded` whether the examples themselves depend on the seed. A task that scores its
own way (`evaluate`) with another task's probe names that task in `fit_with`.
"""

from xlp.tasks.arc import ArcHeadTask, ArcTask
from xlp.tasks.deprel import DeprelTask
from xlp.tasks.pos import PosTask
from xlp.tasks.pos_control import PosControlTask

TASKS = {task.name: task for task in (PosTask(), PosControlTask(), ArcTask(), ArcHeadTask(), DeprelTask())}
# tasks on whole sentences that run the model themselves (no probe, no stored word features)
SENTENCE_TASKS = {"retrieval", "bpc", "xnli"}
