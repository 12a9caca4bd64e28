"""Per-task gradient engines: compute the per-task Jacobian ``J`` of one step.

* :class:`SharedInputJacobian`: every sample feeds every loss; exact; one pass per task.
* :class:`TaskPartitionedJacobian`: each sample belongs to one task; exact; one vectorized pass.
* :class:`RepresentationJacobian`: gradients w.r.t. a shared representation; approximate; one pass.
"""

from gradsurgery.engines.per_task_gradients import PerTaskGradients, SplitGradients
from gradsurgery.engines.representation import RepresentationJacobian
from gradsurgery.engines.shared_input import SharedInputJacobian
from gradsurgery.engines.task_partitioned import TaskBatch, TaskPartitionedJacobian, group_by_task

__all__ = [
    "PerTaskGradients",
    "RepresentationJacobian",
    "SharedInputJacobian",
    "SplitGradients",
    "TaskBatch",
    "TaskPartitionedJacobian",
    "group_by_task",
]
