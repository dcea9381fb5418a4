"""Task data with overlapping boolean group columns: registry, loaders, generated identity set.

`load_task_data(cfg.data, task, seed)` returns train/test frames with columns `id`, `text`,
`label` (classification), optional `prompt` (causal_lm) and one bool column per group.
"""

from fairlora.data.registry import list_datasets, load_task_data
from fairlora.data.types import DatasetInfo, TaskData

__all__ = ["DatasetInfo", "TaskData", "list_datasets", "load_task_data"]
