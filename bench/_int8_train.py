"""One training run on a base of the given precision, in its own process so its peak RSS is its own:
`python -m bench._int8_train fp32|int8 STEPS` prints {"step_ms", "peak_rss_mb"} as one JSON line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from composer.adapter_training import train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.corpora import load_corpus
from composer.presets import preset
from composer.training import Callback, TrainConfig


class Clock(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step(self, step: int, total: int, epoch: int, loss: float, lr: float) -> None:
        self.times.append(time.perf_counter())


def main() -> None:
    precision, steps = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(2)
    base = load_base(packaged_encoder_dir(), device="cpu", precision=precision, kernels=False)
    c = load_corpus("rt_polarity").subset(32 * steps, seed=0)
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, batch_size=32, max_length=64, patience=0)
    clock = Clock()
    train_st_adapter(base, c.task, c.train, [], preset("lora"), cfg, callbacks=[clock])
    gaps = sorted(b - a for a, b in zip(clock.times, clock.times[1:], strict=False))
    # VmHWM: this process image's own peak (ru_maxrss would carry the launching process's peak across exec)
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    rss_kb = int(status["VmHWM"].split()[0])
    print(json.dumps({"step_ms": round(1000 * gaps[len(gaps) // 2], 1), "peak_rss_mb": round(rss_kb / 1024, 1)}))


if __name__ == "__main__":
    main()
