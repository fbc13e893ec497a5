"""What each adapter kind costs at serving time, and what mixing kinds in one batch costs, on the real
MiniLM (6 layers): rows of different kinds share one forward (bottleneck rows through the site handler, LoRA,
(IA)³ and BitFit rows through the chained linear handlers, Compacters as bottlenecks).

- `mixed_kinds8_over_uniform8`: throughput of a batch of 8 rows on 8 kinds (ST-A, LoRA, AdaLoRA, (IA)³, BitFit,
  diff pruning, Compacter++, the plain base) ÷ a batch of 8 rows on one ST-A. Goal ≥ 0.85. The AdaLoRA serves
  at init_r 12 (what an unpruned one costs); the diff is saved, sparse at 0.5%.
- `mixed_kinds10_over_uniform10`: rows of every kind, served as the runtime serves them (`composer.rows`, heads
  included): the 8 rows above plus a prompt-tuning row and a prefix row (20 virtual tokens each, the presets'),
  ÷ 10 rows on one ST-A. Every row then carries the 20 prompt slots (masked where they are not its own) and the
  20 cached prefix positions: what sharing one forward with prompt rows costs.
  `mixed_kinds10_by_layout_over_uniform10`: the same rows as two forwards (the prompt row apart), the other plan
  the runtime measures.
- `mixed_kinds8_over_uniform8_64tokens`: the same 8 kinds on 8 real product reviews (the fine-foods test set, cut at
  64 tokens) ÷ those reviews on one ST-A: where each row's work outweighs the fixed cost of each small op.
- `mixed_no_diff_over_uniform8`: the same batch with the diff row on the plain base (where the rest stands).
- `in_mixed_<preset>_ms`: what that kind's one row adds to the mixed batch: the mixed batch's time less that of the
  same batch with that row on the plain base.
- `<preset>_over_base`: a batch of 8 rows on one module of that kind, time ÷ the bare base's.

Median over rounds; in a round every setup runs once per repeat, call by call in a rotating order (`interleaved`),
each a median over the repeats; the spread is the rounds' min and max.

    .venv/bin/python -m bench.kinds [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from bench.common import add_device, emit, interleaved, section, use_device, write_section
from composer.base import load_base, packaged_encoder_dir
from composer.composition import BatchSplit, Single
from composer.corpora import load_corpus
from composer.diff.kernel import KERNEL
from composer.encoder import AdaptedEncoder
from composer.heads import HeadConfig
from composer.method import Models
from composer.presets import preset, prompt_preset
from composer.prompts.model import PromptModel
from composer.rows import BY_LAYOUT, ONE, predict_rows

MODULES = {  # name: (preset, fields); one module per kind, and the plain base makes the eighth row
    "seq_bn": ("seq_bn", {}),
    "lora": ("lora", {}),
    "adalora": ("adalora", {"rank_pattern": None}),
    "ia3": ("ia3", {}),
    "bitfit": ("bitfit", {}),
    "diff": ("diff", {}),
    "compacter++": ("compacter++", {}),
}
TEXTS = [
    "the film was a quiet, moving portrait of a family",
    "terrible service and the soup was cold",
    "a sharp script with very little to say",
    "fresh ingredients and a friendly staff",
    "i would not watch it again",
    "one of the best meals i have had this year",
    "the plot drags in the middle",
    "great value for the price",
]
PROMPTS = {"prompt": "prompt_tuning", "prefix": "p_tuning_v2"}  # a shallow prompt and flat prefixes, as served


def add_modules(model: AdaptedEncoder) -> None:
    """One module per kind (MODULES) on `model`, perturbed from their initialisation (the global seed's draws);
    the diff as it serves once saved: pruned to its density, sparse."""
    for name, (p, fields) in MODULES.items():
        module = model.add_adapter(name, preset(p, **fields))
        with torch.no_grad():
            for t in module.parameters():
                t.add_(torch.randn_like(t) * 0.02)
        if name == "diff":
            cfg, tensors = module.training_hooks().saved()
            del model.adapters[name]
            model.add_adapter(name, cfg, weights=tensors)


def ops(go) -> int:  # type: ignore[no-untyped-def]
    """How many aten ops one call of `go` runs, views (slices, transposes, reshapes) aside."""
    from torch.utils._python_dispatch import TorchDispatchMode

    count = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            count[0] += not func.is_view
            return func(*args, **(kwargs or {}))

    with Count():
        go()
    return count[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    add_device(ap)
    a = ap.parse_args()
    device = use_device(a.device)
    torch.set_num_threads(2)
    rounds, repeats = (5, 5) if a.quick else (11, 15)
    kernel = KERNEL.load() is not None  # loaded before timing (a serving process loads it in the background)
    base = load_base(packaged_encoder_dir(), device=device)
    model = AdaptedEncoder(base).eval()
    torch.manual_seed(0)
    add_modules(model)
    batch = dict(base.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    mixed = BatchSplit((*MODULES, None))

    tiny = dict(base.tokenizer(["a"] * len(TEXTS), return_tensors="pt"))  # 3 tokens a row: the fixed costs alone
    reviews = [r.text for r in load_corpus("fine_foods").test[:8]]
    long = dict(base.tokenizer(reviews, padding=True, truncation=True, max_length=64, return_tensors="pt"))

    def run(comp, inputs=batch, mkl=False):  # type: ignore[no-untyped-def]
        def go() -> None:
            with torch.inference_mode(), KERNEL.off() if mkl else contextlib.nullcontext():  # as serving runs it
                model(**inputs, composition=comp)

        return go

    prompts = PromptModel(base).eval()
    for name in MODULES:
        model.add_head(name, HeadConfig(num_labels=2))
    for name, p in PROMPTS.items():
        prompts.add(name, prompt_preset(p), HeadConfig(num_labels=2))
        with torch.no_grad():
            for t in prompts.prompts[name].parameters():
                t.normal_(0.0, 0.5)
    models = Models(base=base, encoder=model, prompts=prompts)
    rows10 = dict(base.tokenizer([*TEXTS, *TEXTS[:2]], padding=True, return_tensors="pt"))
    kinds10 = [*MODULES, "seq_bn", *PROMPTS]  # the plain-base row's place: a second ST-A row (it needs a head)

    def served(names, plan=ONE):  # type: ignore[no-untyped-def]
        def go() -> None:
            with torch.inference_mode():
                predict_rows(models, names, rows10, plan)

        return go

    def without(kind: str) -> BatchSplit:  # the mixed batch with `kind`'s row on the plain base
        return BatchSplit(tuple(m if m != kind else None for m in MODULES) + (None,))

    runs = {
        "base": run(None),
        "mixed": run(mixed),
        "mixed_mkl": run(mixed, mkl=True),
        **{f"mixed_no_{n}": run(without(n)) for n in MODULES},
        "mixed_tiny": run(mixed, tiny),
        "uniform_tiny": run(Single("seq_bn"), tiny),
        "mixed64": run(mixed, long),
        "mixed64_no_diff": run(without("diff"), long),
        "uniform64": run(Single("seq_bn"), long),
        **{n: run(Single(n)) for n in MODULES},
        "mixed10": served(kinds10),
        "mixed10_by_layout": served(kinds10, BY_LAYOUT),
        "uniform10": served(["seq_bn"] * 10),
    }
    samples: dict[str, list[float]] = {n: [] for n in runs}
    for r in range(rounds):
        for n, ms in interleaved(runs, r, repeats).items():
            samples[n].append(ms)
    med = {n: statistics.median(v) for n, v in samples.items()}
    ratio = {f"{n}_over_base": round(med[n] / med["base"], 3) for n in MODULES}
    gaps = {n: [m - w for m, w in zip(samples["mixed"], samples[f"mixed_no_{n}"], strict=True)] for n in MODULES}
    added = {f"in_mixed_{n}_ms": round(statistics.median(g), 2) for n, g in gaps.items()}  # per round, side by side
    per_round = [samples["seq_bn"][i] / samples["mixed"][i] for i in range(rounds)]
    per_round64 = [samples["uniform64"][i] / samples["mixed64"][i] for i in range(rounds)]
    per_round_mkl = [samples["seq_bn"][i] / samples["mixed_mkl"][i] for i in range(rounds)]
    per_round_nd = [samples["seq_bn"][i] / samples["mixed_no_diff"][i] for i in range(rounds)]
    per_round64_nd = [samples["uniform64"][i] / samples["mixed64_no_diff"][i] for i in range(rounds)]
    per_round10 = [samples["uniform10"][i] / samples["mixed10"][i] for i in range(rounds)]
    per_round10s = [samples["uniform10"][i] / samples["mixed10_by_layout"][i] for i in range(rounds)]
    result = {
        "mixed_kinds10_by_layout_over_uniform10": round(statistics.median(per_round10s), 3),
        "mixed_kinds10_over_uniform10": round(statistics.median(per_round10), 3),
        "mixed_kinds10_over_uniform10_min": round(min(per_round10), 3),
        "mixed_kinds10_over_uniform10_max": round(max(per_round10), 3),
        "mixed_kinds8_over_uniform8": round(statistics.median(per_round), 3),
        "mixed_kinds8_over_uniform8_64tokens": round(statistics.median(per_round64), 3),
        "mixed_no_diff_over_uniform8": round(statistics.median(per_round_nd), 3),
        "mixed_diff_mkl_over_uniform8": round(statistics.median(per_round_mkl), 3),
        "diff_kernel": kernel,
        "mixed_no_diff_over_uniform8_64tokens": round(statistics.median(per_round64_nd), 3),
        "mixed_kinds8_over_uniform8_min": round(min(per_round), 3),
        "mixed_kinds8_over_uniform8_max": round(max(per_round), 3),
        **ratio,
        **added,
        "base_ms": round(med["base"], 2),
        "mixed_tiny_minus_uniform_tiny_ms": round(med["mixed_tiny"] - med["uniform_tiny"], 2),
    }
    n_ops = (ops(runs["mixed"]), ops(runs["seq_bn"]))
    lines = [
        f"## Serving cost per kind ({'--quick, ' if a.quick else ''}6-layer MiniLM, batch 8, "
        f"{'CPU, 2 threads' if device == 'cpu' else device})",
        "",
        "| batch of 8 rows | ms (median) | ÷ bare base | its one row in the mixed batch adds, ms (rounds) |",
        "|---|---:|---:|---:|",
        f"| bare base | {med['base']:.2f} | 1.000 | |",
        *(
            f"| one {n} | {med[n]:.2f} | {ratio[f'{n}_over_base']:.3f} | {added[f'in_mixed_{n}_ms']:.2f} "
            f"({min(gaps[n]):.2f}–{max(gaps[n]):.2f}) |"
            for n in MODULES
        ),
        f"| 8 rows on 8 modules of different kinds | {med['mixed']:.2f} | {med['mixed'] / med['base']:.3f} | |",
        "",
        f"Mixed kinds ÷ uniform (one ST-A), throughput: **{result['mixed_kinds8_over_uniform8']}** (rounds "
        f"{result['mixed_kinds8_over_uniform8_min']}–{result['mixed_kinds8_over_uniform8_max']}; goal ≥ 0.85) on "
        "these 8 short sentences (about 13 tokens a row). On 8 real product reviews cut at 64 tokens (fine-foods "
        f"test set; {med['mixed64']:.2f} against {med['uniform64']:.2f} ms): "
        f"**{result['mixed_kinds8_over_uniform8_64tokens']}** (rounds {min(per_round64):.3f}–{max(per_round64):.3f}). "
        "The mixed batch holds ST-A, LoRA, AdaLoRA, (IA)³, BitFit, diff pruning, Compacter++ and a plain-base row, "
        "each module's rows on their own slice of the batch (`composer.runs`). The diff row's sparse products run "
        f"through a C++ kernel ({'loaded' if kernel else 'NOT built on this machine, so MKL served both'}; "
        "`composer/diff/kernel.py`: one pass per linear, 36 a forward, each with its bias; a cost mostly fixed "
        "whatever the row count). Through MKL's CSR product instead (query, key and value sharing one product, "
        "24 a forward, as before the kernel), in the same rounds: "
        f"{result['mixed_diff_mkl_over_uniform8']}. With that row on the plain base, "
        f"{result['mixed_no_diff_over_uniform8']} (on the reviews, {result['mixed_no_diff_over_uniform8_64tokens']})"
        f". What stays is a cost per op, not per token: the mixed batch runs {n_ops[0] - n_ops[1]} more small ops "
        f"a forward than the uniform one ({n_ops[0]} against {n_ops[1]}, views aside), each with its views and "
        f"Python around it, and with 3 tokens a row it still costs {med['mixed_tiny'] - med['uniform_tiny']:.2f} "
        f"ms more ({med['mixed_tiny']:.2f} against {med['uniform_tiny']:.2f} ms). Inside the forward each small op "
        "also costs more than alone (MKL's CSR product on 13 tokens: 10-15 µs called over and over, 30-45 µs just "
        "after a large op, even on one thread and with its operands touched just before it; a LoRA site's two "
        "ops: 20 µs in the forward, 11.6 µs alone). Timed op by op before the kernel, on a quiet machine (each "
        "non-view aten op of a forward, in one process; wall 20.03 against 15.19 ms): the ops themselves took "
        "15.53 against 13.04 ms, and everything around them (Python, module calls, views) 4.50 against 2.15 ms; "
        "of the ops' 2.49 ms, MKL's 24 sparse products were 1.35 ms (45-75 µs each in the forward), the small "
        "adapter matmuls 0.58 ms. The kernel lays out 16 tokens at a time transposed, so each stored entry is one "
        "16-lane multiply-add: just after a large matmul, on 13 tokens, 8-35 µs against MKL's 17-80 at the four "
        "site shapes (a plain C kernel tried earlier, without that layout, lost to MKL in 6 of 8 shapes). "
        "Tried and measured, not kept: `torch.compile` of the encoder for this fixed composition (39 "
        "against 25 ms: the per-forward handlers fail its guards); the diff as dense times CSRᵀ, `spmm_reduce` or "
        "gather/index_add (1.5-5x slower in the forward than the strided `addmm`), or FBGEMM's `embedding_bag` as "
        "the product on the input's transpose (the product itself 13-17 µs, but transposing in and adding back "
        "cost 20-60 µs more). What stays is the other kinds' small ops: only fusing them into fewer kernels would "
        "cut it.",
        "",
        f"With a prompt-tuning row and a prefix row as well (10 rows, 10 kinds, served through `composer.rows` with "
        f"heads; {med['mixed10']:.2f} ms against {med['uniform10']:.2f} ms for 10 rows on one ST-A): "
        f"**{result['mixed_kinds10_over_uniform10']}** (rounds {result['mixed_kinds10_over_uniform10_min']}–"
        f"{result['mixed_kinds10_over_uniform10_max']}). Every row then carries 20 prompt slots and 20 cached prefix "
        "positions, masked where they are not its own. Run as two forwards, the prompt row apart from the rest "
        f"(the plan `by_layout`, {med['mixed10_by_layout']:.2f} ms): "
        f"**{result['mixed_kinds10_by_layout_over_uniform10']}**. The runtime measures both plans per shape and "
        "runs the faster (`composer.rows.PLANS`).",
    ]
    write_section(section("kinds"), "\n".join(lines))
    emit(result)


if __name__ == "__main__":
    main()
