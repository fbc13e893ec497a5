"""Reference side of bench/train.py, run with the parity venv: one adapters 1.3.0 ST-A training step."""

import json
import statistics
import sys
import time
from pathlib import Path

import adapters  # noqa: F401
import torch
from adapters import BertAdapterModel

model_dir, repeats, batch, seq = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(2)
model = BertAdapterModel.from_pretrained(model_dir)
model.add_adapter("a", config="seq_bn")
model.add_classification_head("a", num_labels=2)
model.train_adapter("a")
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.randint(1000, 20000, (batch, seq), generator=torch.Generator().manual_seed(0))
mask = torch.ones_like(ids)
labels = torch.randint(0, 2, (batch,))


def step():
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(2):
    step()
samples = []
for _ in range(repeats):
    t = time.perf_counter()
    step()
    samples.append((time.perf_counter() - t) * 1000)
print(json.dumps({"ms": statistics.median(samples), "trainable": sum(p.numel() for p in params)}))
