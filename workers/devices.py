"""Device choice for a job, made in the child process (CUDA is never initialised before a fork)."""

from __future__ import annotations

import os


def pick_device(preferred: str | None = None) -> str:
    """`preferred` if set; else the first device CUDA_VISIBLE_DEVICES exposes; else cpu."""
    if preferred:
        return preferred
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
