"""Tasks: each one file, registered by the name used in configs."""

from mtlrec.tasks import genre, interest, next_item, profile, rating, social  # noqa: F401  (registration)
from mtlrec.tasks.base import TASKS, Features, HeadDims, Task, TaskOptions, build_tasks

__all__ = ["TASKS", "Features", "HeadDims", "Task", "TaskOptions", "build_tasks"]
