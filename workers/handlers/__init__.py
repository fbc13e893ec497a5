"""Job handlers, one module per job type. Each turns a JobContext into a Finish."""

from __future__ import annotations

from workers.handlers import adapter, evaluate, fusion, multitask, prompts

HANDLERS = {
    "adapter": adapter.handle,
    "multitask": multitask.handle,
    "fusion": fusion.handle,
    "prompts": prompts.handle,
    "evaluate": evaluate.handle,
}
