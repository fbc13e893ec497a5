"""Reference side of bench/composition.py (parity venv): adapters 1.3.0 forward times (ms, medians) of the
same blocks at batch 8, seq 64: one adapter, Stack(a, b), Parallel of 8 at full depth and with the first 4
of 6 layers left out, and BatchSplit of 8 rows over 8 adapters."""

import json
import sys

import adapters
import torch
from _adapters_timing import median_forward_ms
from adapters import SeqBnConfig
from adapters.composition import BatchSplit, Parallel, Stack
from transformers import BertModel

model_dir, repeats = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)
torch.manual_seed(0)
model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
adapters.init(model)
for i in range(8):
    model.add_adapter(f"a{i}", config="seq_bn")
    model.add_adapter(f"d{i}", config=SeqBnConfig(leave_out=[0, 1, 2, 3]))
ids = torch.randint(1000, 20000, (8, 64), generator=torch.Generator().manual_seed(0))


def forward_ms(active) -> float:  # type: ignore[no-untyped-def]
    model.set_active_adapters(active)
    return median_forward_ms(model, ids, repeats)


out = {
    "single": forward_ms("a0"),
    "stack2": forward_ms(Stack("a0", "a1")),
    "parallel8": forward_ms(Parallel(*[f"a{i}" for i in range(8)])),
    "parallel8_leave_out": forward_ms(Parallel(*[f"d{i}" for i in range(8)])),
    "batch_split8": forward_ms(BatchSplit(*[f"a{i}" for i in range(8)], batch_sizes=[1] * 8)),
}
print(json.dumps(out))
