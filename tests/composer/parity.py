"""What the parity tests share: the fixtures' places (built in the parity venv by scripts/parity), a fixture
folder's files, and the logits our model gives for an imported adapter on the fixtures' inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"
METHODS = PARITY / "methods"
PEFT_BASE = PARITY / "prompts" / "peft_base"


def files_in(d: Path) -> dict[str, bytes]:
    """A fixture folder's files by name, as an upload gives them."""
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def adapter_logits(base_dir: Path, art: Any) -> torch.Tensor:
    """Our logits for `art` (attached alone, with its head) on the fixtures' inputs."""
    model = AdaptedEncoder(load_base(base_dir, with_tokenizer=False, device="cpu")).eval()
    name = artifacts.attach(model, art)
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        return model(**x, head=name, composition=Single(name)).logits


def add_random(model: AdaptedEncoder, specs: dict[str, Any], seed: int, std: float, around_init: bool = False) -> None:
    """Add each adapter of `specs` (name: config) to `model` with random weights, N(0, std²) drawn from `seed`:
    replacing its initialisation, or added to it (`around_init`: an (IA)³ stays around its scales of 1)."""
    torch.manual_seed(seed)
    for name, cfg in specs.items():
        module = model.add_adapter(name, cfg)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_((p if around_init else 0) + torch.randn_like(p) * std)
