"""The table, the regrets and the JSON line of bench/transfer.py."""

from __future__ import annotations

import statistics

from bench.common import emit, write_section
from composer.transfer import ESTIMATORS


def _rows_mean(runs: list[dict]) -> list[float]:
    """Per test row, the mean correctness over several runs (seeds, or every source)."""
    return [statistics.mean(c) for c in zip(*(r["correct"] for r in runs), strict=True)]


def _acc(runs: list[dict], metric: str = "accuracy") -> float:
    return statistics.mean(r[metric] for r in runs)


def methods(e: dict) -> dict[str, list[dict]]:
    out = {"cold ST-A": e["cold"], "warm from a random source": list(e["warm"].values())}
    for est in ESTIMATORS:
        out[f"warm from the top-ranked ({est})"] = e["top1"][est]
    best = max(e["warm"], key=lambda s: e["warm"][s]["accuracy"])
    out["warm from the best source in hindsight (oracle)"] = [e["warm"][best]]
    if "fusion_top3" in e:
        out["fusion of the top 3 (logme)"] = [e["fusion_top3"]]
        out["fusion of 3 random sources"] = [e["fusion_rnd3"]]
    return out


def regret(e: dict, est: str, k: int) -> float:
    oracle = max(r["accuracy"] for r in e["warm"].values())
    best_k = max(e["warm"][s]["accuracy"] for s in e["ranked"][est]["order"][:k])
    return (oracle - best_k) / oracle


def report(
    per: dict, sizes, targets, quick: bool, rank_seconds: dict, n_sources: int, paired, section: str = ""
) -> None:  # type: ignore[no-untyped-def]
    lines = [
        f"## Registry-driven transfer, leave-one-out over the pool ({len(targets)} targets, {n_sources} sources each"
        f"{', --quick' if quick else ''})",
        "",
        "Targets: " + ", ".join(targets) + ". Each target's own pool adapter is left out of its registry.",
        "",
    ]
    summary: dict = {}
    for n in sizes:
        entries = [per[(t, n)] for t in targets]
        lines += [
            f"### {n} training rows",
            "",
            "| method | accuracy | macro-F1 | Δ accuracy vs cold [95% paired] |",
            "|---|---|---|---|",
            f"| majority | {statistics.mean(e['majority'] for e in entries):.3f} | – | – |",
        ]
        names = list(methods(entries[0]))
        for name in names:
            runs = [methods(e)[name] for e in entries]
            acc = statistics.mean(_acc(r) for r in runs)
            f1 = statistics.mean(_acc(r, "macro_f1") for r in runs)
            if name == "cold ST-A":
                lines.append(f"| {name} | {acc:.3f} | {f1:.3f} | – |")
                continue
            diffs = [
                list(zip(_rows_mean(r), _rows_mean(e["cold"]), strict=True)) for r, e in zip(runs, entries, strict=True)
            ]
            d, lo, hi = paired(diffs)
            lines.append(f"| {name} | {acc:.3f} | {f1:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
            summary.setdefault(n, {})[name] = d
        lines += [
            "",
            "| estimator | regret@1 | regret@3 | top-1 − cold | top-1 − random | ranking s (mean) |",
            "|---|---|---|---|---|---|",
        ]
        for est in ESTIMATORS:
            r1 = statistics.mean(regret(e, est, 1) for e in entries)
            r3 = statistics.mean(regret(e, est, 3) for e in entries)
            top = statistics.mean(_acc(e["top1"][est]) for e in entries)
            cold = statistics.mean(_acc(e["cold"]) for e in entries)
            rnd = statistics.mean(_acc(list(e["warm"].values())) for e in entries)
            secs = statistics.mean(e["ranked"][est]["seconds"] for e in entries)
            lines.append(f"| {est} | {r1:.3f} | {r3:.3f} | {top - cold:+.3f} | {top - rnd:+.3f} | {secs:.1f} |")
            summary.setdefault(f"est{n}", {})[est] = {"r1": r1, "r3": r3, "top_cold": top - cold, "top_rnd": top - rnd}
        lines += ["", "Per target (accuracy): cold mean of 3 seeds; oracle source; LogME's top-1 and its advice.", ""]
        lines += [
            "| target | majority | cold | oracle (source) | logme top-1 (source) | advice |",
            "|---|---|---|---|---|---|",
        ]
        for t, e in zip(targets, entries, strict=True):
            best = max(e["warm"], key=lambda s: e["warm"][s]["accuracy"])
            src = e["ranked"]["logme"]["order"][0]
            hurt = " (transfer hurts)" if e["warm"][best]["accuracy"] < _acc(e["cold"]) else ""
            lines.append(
                f"| {t} | {e['majority']:.3f} | {_acc(e['cold']):.3f} | {e['warm'][best]['accuracy']:.3f} ({best}){hurt}"
                f" | {_acc(e['top1']['logme']):.3f} ({src}) | {e['ranked']['logme']['advice'] or '–'} |"
            )
        lines.append("")
    lines += [
        f"Ranking 1,000 rows against {n_sources} adapters, features not cached: "
        + ", ".join(f"{k} {v} s" for k, v in rank_seconds.items())
        + " (goal ≤ 60 s).",
        "",
        "Goals: regret@3 ≤ 1%; top-1 warm start ≥ cold + 2 points at 100 rows; ranked beats random by ≥ 1 point.",
    ]
    write_section(section or ("transfer_quick" if quick else "transfer"), "\n".join(lines))
    first = summary[f"est{sizes[0]}"]["logme"]
    emit(
        {
            "bench": "transfer",
            "quick": quick,
            "regret_at_1": round(first["r1"], 4),
            "regret_at_3": round(first["r3"], 4),
            f"warm_top1_minus_cold_{sizes[0]}": round(first["top_cold"], 4),
            "ranked_minus_random": round(first["top_rnd"], 4),
            "rank_seconds": rank_seconds.get("logme"),
            "rank_seconds_by_estimator": rank_seconds,
            "by_estimator": {k: {m: round(x, 4) for m, x in v.items()} for k, v in summary[f"est{sizes[0]}"].items()},
        }
    )
