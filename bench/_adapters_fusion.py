"""Reference side of bench/fusion.py (parity venv): adapters 1.3.0 Fuse forward times, ms."""

import json
import sys

import adapters
import torch
from _adapters_timing import median_forward_ms
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
    return median_forward_ms(model, ids, repeats)


out = {}
model.add_adapter_fusion(Fuse(*names[:8]), "dynamic")
model.set_active_adapters(Fuse(*names[:8]))
for b in (1, 8):
    out[f"fuse8_b{b}"] = forward_ms(b)
model.set_active_adapters(None)
for b in (1, 8):
    out[f"base_b{b}"] = forward_ms(b)
print(json.dumps(out))
