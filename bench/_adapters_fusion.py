"""Reference side of bench/fusion.py (parity venv): adapters 1.3.0 Fuse forward times, ms."""

import json
import statistics
import sys
import time

import adapters
import torch
from adapters.composition import Fuse
from transformers import BertModel

model_dir, repeats = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)
torch.manual_seed(0)
model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
adapters.init(model)
names = [f"a{i}" for i in range(16)]
for n in names:
    model.add_adapter(n, config="seq_bn")


def forward_ms(b: int) -> float:
    """Median forward time at batch b, seq 64, after two warm-up runs."""
    ids = torch.randint(1000, 20000, (b, 64), generator=torch.Generator().manual_seed(0))
    samples = []
    with torch.no_grad():
        for _ in range(2):
            model(input_ids=ids)
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=ids)
            samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


out = {}
model.add_adapter_fusion(Fuse(*names[:8]), "dynamic")
model.set_active_adapters(Fuse(*names[:8]))
for b in (1, 8):
    out[f"fuse8_b{b}"] = forward_ms(b)
model.set_active_adapters(None)
for b in (1, 8):
    out[f"base_b{b}"] = forward_ms(b)
print(json.dumps(out))
