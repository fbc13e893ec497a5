"""All tables. Importing this package registers every model on `Base.metadata`."""

from registry_db.models.adapters import (
    ADAPTER_KINDS,
    ADAPTER_STATUSES,
    Adapter,
    AdapterSet,
    AdapterSetMember,
    Alias,
    AliasHistory,
    FusionMember,
    ReferenceEpoch,
)
from registry_db.models.auth import SCOPES, ApiKey, Owner
from registry_db.models.base import Base, new_id, utcnow
from registry_db.models.blobs import BlobChunk, BlobObject
from registry_db.models.catalog import SPLITS, TASK_KINDS, BaseModelRow, Dataset, Task
from registry_db.models.jobs import FINISHED, JOB_STATUSES, JOB_TYPES, Checkpoint, Job, JobEvent

__all__ = [
    "ADAPTER_KINDS",
    "ADAPTER_STATUSES",
    "FINISHED",
    "JOB_STATUSES",
    "JOB_TYPES",
    "SCOPES",
    "SPLITS",
    "TASK_KINDS",
    "Adapter",
    "AdapterSet",
    "AdapterSetMember",
    "Alias",
    "AliasHistory",
    "ApiKey",
    "Base",
    "BaseModelRow",
    "BlobChunk",
    "BlobObject",
    "Checkpoint",
    "Dataset",
    "FusionMember",
    "Job",
    "JobEvent",
    "Owner",
    "ReferenceEpoch",
    "Task",
    "new_id",
    "utcnow",
]
