"""Tasks: what a model is trained to do (classification, causal LM), as registered objects."""

from fairlora.tasks.base import IGNORE_INDEX, Task, get_task, register_task, task_names

__all__ = ["IGNORE_INDEX", "Task", "get_task", "register_task", "task_names"]
