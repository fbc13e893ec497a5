"""The job types by name. Each is one module of this package that defines `JOB` (its spec model,
registry checks, handler and queue); submission, the worker's runner, the queue routing and the API's
schema all read `JOB_TYPES`. A new job type is one new module and one line here."""

from __future__ import annotations

from service.jobs import adapter, evaluate, fusion, multitask, prompts
from service.jobs.base import JobType

JOB_TYPES: dict[str, JobType] = {m.JOB.name: m.JOB for m in (adapter, multitask, fusion, prompts, evaluate)}

__all__ = ["JOB_TYPES", "JobType"]
