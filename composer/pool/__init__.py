"""The transfer pool: real labelled source tasks read from pinned package archives (../shared/POOL.md)."""

from composer.pool.build import build_task, built_tasks, load_pool_task, pool_dir
from composer.pool.readers import READERS

__all__ = ["READERS", "build_task", "built_tasks", "load_pool_task", "pool_dir"]
