"""What the reference sides of the benches (run in the parity venv, by path) share: a median forward time."""

import statistics
import time

import torch


def median_forward_ms(model, ids: torch.Tensor, repeats: int, warmup: int = 2) -> float:  # type: ignore[no-untyped-def]
    """Median time of `model(input_ids=ids)` in ms, after `warmup` runs."""
    samples = []
    with torch.no_grad():
        for _ in range(warmup):
            model(input_ids=ids)
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=ids)
            samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)
