"""Reference outputs of AdapterHub `adapters` 1.3.0's composition blocks over the checked-in bottleneck
fixtures, for tests/composer/test_parity_composition.py. Run in the parity venv (README.md here):

    .venv-parity/bin/python scripts/parity/make_compositions.py

`Average` in adapters 1.3.0 is wrong for bottleneck adapters: `BottleneckLayer.mean` takes the *mean* of
the weighted outputs, `mean(stack(h_i) * w_i)`, so with weights that sum to 1 (it normalises them) the
output is divided by the number of members: Average(a, a) is not a. The weighted average is the *sum*
`Σ w_i h_i`. (Its Average also needs every member at every site it runs: members of different
placements fail with a KeyError there, so the cases average members of one placement.) We compute the reference with that one line fixed (`average/...`), and keep the
unpatched output too (`average_as_shipped/...`) so the test shows the difference is real.
"""

from __future__ import annotations

from pathlib import Path

import adapters
import torch
from adapters.composition import Average, BatchSplit, Fuse, Parallel, Stack
from adapters.methods.bottleneck import BottleneckLayer, BottleneckState
from safetensors.torch import load_file, save_file
from transformers import BertModel

PARITY = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity"
NAMES = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn"]
FUSE = Fuse("seq_bn_f0", "seq_bn_f1", "seq_bn_f2")
CASES = {
    "stack/seq_bn+double_seq_bn": Stack("seq_bn", "double_seq_bn"),
    "stack/par_bn+seq_bn": Stack("par_bn", "seq_bn"),
    "stack/seq_bn+scaled_par_bn+double_seq_bn": Stack("seq_bn", "scaled_par_bn", "double_seq_bn"),
    "average/seq_bn+par_bn@0.7,0.3": Average("seq_bn", "par_bn", weights=[0.7, 0.3]),
    "average/par_bn+scaled_par_bn": Average("par_bn", "scaled_par_bn"),
    "average/seq_bn+seq_bn_copy": Average("seq_bn", "seq_bn_copy"),
    "stack/seq_bn+average(par_bn,scaled_par_bn)": Stack("seq_bn", Average("par_bn", "scaled_par_bn")),
    "average/stack(seq_bn,par_bn)+scaled_par_bn@1,3": Average(
        Stack("seq_bn", "par_bn"), "scaled_par_bn", weights=[1.0, 3.0]
    ),
    # one request, several tasks: the batch replicated per branch, [branches * B, T, H]
    # adapters 1.3.0's Parallel runs its first member's pre-processing once for every branch, fails where
    # its first member has no layer (KeyError) or a branch ends in a parallel adapter (its post_forward adds
    # the input from before the replication), and runs a nested block's pre-processing a second time. Ours
    # runs each branch as it runs alone; they agree for branches of plain sequential adapters of one layout.
    "parallel/seq_bn|seq_bn_b": Parallel("seq_bn", "seq_bn_b"),
    # each slice of the batch its own tree: row 0 seq_bn, rows 1-2 Stack(par_bn, seq_bn)
    "batch_split/seq_bn|stack(par_bn,seq_bn)@1,2": BatchSplit("seq_bn", Stack("par_bn", "seq_bn"), batch_sizes=[1, 2]),
    # a fusion inside a Stack (MAD-X style: a domain adapter under a task fusion), and a Stack after one;
    # the fusion is fixtures/parity/fusions/seq_bn (members seq_bn_f0..2)
    "stack/seq_bn+fuse(seq_bn_f*)": Stack("seq_bn", FUSE),
    "stack/par_bn+fuse(seq_bn_f*)": Stack("par_bn", FUSE),
    "stack/fuse(seq_bn_f*)+seq_bn": Stack(FUSE, "seq_bn"),
    # (adapters 1.3.0 fails with a KeyError when a Stack's fusion has no layer at a site another member has,
    # e.g. Stack("double_seq_bn", Fuse(...)) at the attention site; ours skips the fusion there)
    "stack/seq_bn+fuse(seq_bn_f*)+scaled_par_bn": Stack("seq_bn", FUSE, "scaled_par_bn"),
}


def fixed_mean(self, states, weights):  # type: ignore[no-untyped-def]
    """`BottleneckLayer.mean` with its one bug fixed: the weighted sum, not the mean, of the weighted outputs."""
    hidden = torch.sum(torch.stack([s.hidden_states for s in states], 0) * weights, dim=0)
    first = states[0]
    return BottleneckState(
        hidden, first.input_tensor, first.adapter_residual, first.layer_norm, first.bottleneck_up, states[-1].last
    )


def main() -> None:
    x = load_file(str(PARITY / "inputs.safetensors"))
    model = BertModel.from_pretrained(PARITY / "base").eval()
    adapters.init(model)
    for name in NAMES:
        model.load_adapter(str(PARITY / "adapters" / name), load_as=name, use_safetensors=True)
    model.load_adapter(str(PARITY / "adapters" / "seq_bn"), load_as="seq_bn_copy", use_safetensors=True)
    for member in FUSE.children:
        model.load_adapter(str(PARITY / "fusions" / "seq_bn" / member), load_as=member, use_safetensors=True)
    model.load_adapter_fusion(str(PARITY / "fusions" / "seq_bn" / "fusion"), use_safetensors=True)
    # another seq_bn adapter, for a Parallel of two different members of one layout
    model.load_adapter(str(PARITY / "adapters" / "seq_bn"), load_as="seq_bn_b", use_safetensors=True)
    gen = torch.Generator().manual_seed(900)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if ".seq_bn_b." in pname:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_adapter(str(PARITY / "adapters" / "seq_bn_b"), "seq_bn_b", use_safetensors=True)
    shipped_mean = BottleneckLayer.mean
    out: dict[str, torch.Tensor] = {}
    for tag, setup in CASES.items():
        model.set_active_adapters(setup)
        with torch.no_grad():
            if tag.startswith("average") or "average(" in tag:
                out[tag.replace("average", "average_as_shipped", 1)] = model(**x).last_hidden_state
                BottleneckLayer.mean = fixed_mean
            out[tag] = model(**x).last_hidden_state
        BottleneckLayer.mean = shipped_mean
    model.set_active_adapters("seq_bn")
    with torch.no_grad():
        out["single/seq_bn"] = model(**x).last_hidden_state
    d = PARITY / "compositions"
    d.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(d / "expected.safetensors"))
    print("wrote", d, sorted(out))


if __name__ == "__main__":
    main()
