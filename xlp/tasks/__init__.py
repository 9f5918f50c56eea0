"""Task registry: one module per task, one line here."""

from xlp.tasks.pos import PosTask

TASKS = {task.name: task for task in (PosTask(),)}
