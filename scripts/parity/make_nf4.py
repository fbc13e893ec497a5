"""bitsandbytes 0.50 NF4 on fixed weights, for the NF4 base's parity check (run in the parity venv, with
`pip install bitsandbytes==0.50.2` there):

    .venv-parity/bin/python scripts/parity/make_nf4.py

QLoRA's 4-bit NormalFloat: per block of 64 weights (row-major), the block's absmax scales it to [-1, 1] and each
weight takes the nearest of the 16 NF4 values, two to a byte. Writes tests/fixtures/parity/nf4/nf4.safetensors:
per case, the weight, bitsandbytes' packed codes and absmax (`functional.quantize_4bit`), its dequantised weight
(`functional.dequantize_4bit`), and `matmul_4bit`'s output and gradient to its input on a fixed input; and the
same with QLoRA's double quantisation (`compress_statistics=True`, under `<case>.double.`): the absmax less its
mean, quantised in blocks of 256 to bitsandbytes' signed 8-bit dynamic map (its codes, the second absmax, the
offset and the map as it stood when used).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity" / "nf4"
# 1920 = 30 blocks; 63: a short last block; 36,864 = 576 blocks, so 3 blocks of absmax (the last short)
CASES = {"ffn": (48, 40), "ragged": (7, 9), "ties": (4, 16), "wide": (96, 384)}


def main() -> None:
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    gen = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in CASES.items():
        w = torch.randn(shape, generator=gen) * 0.05
        if name == "ties":  # one block, absmax 1: values on the midpoints between NF4 codes, and exact zeros
            code = F.get_4bit_type("nf4", device="cpu")
            mids = (code[:-1] + code[1:]) / 2
            rest = torch.randn(8, generator=gen) * 0.2
            w = torch.cat([torch.ones(1), mids, code * 0.5, torch.zeros(8), -code * 0.3, rest]).view(shape)
        packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
        x = torch.randn(3, shape[1], generator=gen, requires_grad=True)
        dq = F.dequantize_4bit(packed, state)
        y = bnb.matmul_4bit(x, packed.t(), quant_state=state)  # QLoRA's training path (MatMul4Bit)
        y.pow(2).sum().backward()
        tensors.update(
            {
                f"{name}.weight": w,
                f"{name}.packed": packed.reshape(-1),
                f"{name}.absmax": state.absmax,
                f"{name}.dequantised": dq,
                f"{name}.x": x.detach(),
                f"{name}.y": y.detach(),
                f"{name}.x_grad": x.grad,
            }
        )
        packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        x = torch.randn(3, shape[1], generator=gen, requires_grad=True)
        y = bnb.matmul_4bit(x, packed.t(), quant_state=state)
        y.pow(2).sum().backward()
        tensors.update(
            {
                f"{name}.double.packed": packed.reshape(-1),
                f"{name}.double.absmax": state.absmax,
                f"{name}.double.offset": state.offset.reshape(1),
                f"{name}.double.absmax2": state.state2.absmax,
                f"{name}.double.code": state.state2.code.clone(),
                f"{name}.double.dequantised": F.dequantize_4bit(packed, state),
                f"{name}.double.x": x.detach(),
                f"{name}.double.y": y.detach(),
                f"{name}.double.x_grad": x.grad,
            }
        )
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, OUT / "nf4.safetensors", metadata={"bitsandbytes": bnb.__version__, "blocksize": "64"})
    print(f"wrote {OUT / 'nf4.safetensors'}")


if __name__ == "__main__":
    main()
