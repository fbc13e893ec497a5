"""HTTP soak: 32 concurrent clients against a running service (uvicorn in its own process) for 60 s,
mixing every request kind on one resident base, every response checked against expected outputs
computed beforehand on freshly built single-purpose models in this process.

Kinds in the mix: ST-A predict (seq_bn and double_seq_bn, so mixed batches both gather and scatter),
fusion predict with and without attention, a single shallow and a single deep soft prompt, and the
prompt ensemble under every voting rule, with early exit on and off. Concurrent requests for
different adapters are served as mixed batches by the micro-batcher.

    .venv/bin/python -m bench.soak [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from bench.common import api_server, emit, write_section
from composer import adapter_artifact as artifacts
from composer.base import load_base, packaged_encoder_dir
from composer.composition import Fuse, Single
from composer.encoder import AdaptedEncoder
from composer.fusion import artifacts as fusion_artifacts
from composer.fusion.modules import FusionConfig
from composer.heads import HeadConfig
from composer.presets import preset
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.ensemble import VOTING_RULES, predict_ensemble
from composer.prompts.model import PromptModel
from composer.prompts.prompt import PromptConfig
from registry_db.blobs import LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry
from registry_db.repo import adapters, catalog, keys
from service import artifact_store
from service.catalog import register_base_model

LABELS = ["neg", "pos"]
TEXTS = [
    "a moving and surprisingly funny film",
    "the plot never gets going",
    "great value, tastes fresh",
    "an uneven but charming story",
    "boring",
    "i would not buy this again",
    "the actors are wonderful",
    "it was fine, nothing more",
]
TOL = 2e-5  # responses round probabilities to 6 decimals


def build_modules() -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    base = load_base(packaged_encoder_dir(), device="cpu")
    model = AdaptedEncoder(base)
    arts: dict[str, object] = {}
    for name, kind in (("s0", "seq_bn"), ("s1", "seq_bn"), ("s2", "seq_bn"), ("h0", "double_seq_bn")):
        model.add_adapter(name, preset(kind))
        model.add_head(name, HeadConfig(num_labels=2, pooling="mean"))
        with torch.no_grad():
            for p in [*model.adapters[name].parameters(), *model.heads[name].parameters()]:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        arts[name] = artifacts.extract(model, name, head=name, labels=LABELS, max_length=64)
    model.add_fusion("fusion", ["s0", "s1", "s2"], FusionConfig(dropout=0.0))
    model.add_head("fusion", HeadConfig(num_labels=2))
    with torch.no_grad():
        for p in [*model.fusions["fusion"].parameters(), *model.heads["fusion"].parameters()]:
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    arts["fusion"] = fusion_artifacts.extract(model, "fusion", head="fusion", labels=LABELS, max_length=64)
    h, layers = base.hidden_size, base.num_layers
    head = HeadConfig(num_labels=2, layers=1, pooling="mean")
    for name, cfg, shape in [
        *((f"p{i}", PromptConfig(length=8), (8, h)) for i in range(3)),
        ("deep", PromptConfig(length=4, kind="deep"), (layers, 2, 4, h)),
    ]:
        tmp = PromptModel(base)
        tmp.add(name, cfg, head)
        with torch.no_grad():
            for p in tmp.heads[name].parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
        arts[name] = PromptArtifact(
            name=name,
            config=cfg,
            hidden_size=h,
            prompt=torch.randn(shape, generator=gen) * 0.5,
            head=head,
            head_tensors={k: v.detach().clone() for k, v in tmp.heads[name].state_dict().items()},
            labels=LABELS,
            base=base.identity,
            metrics={"accuracy": 0.6 + 0.1 * float(torch.rand(1, generator=gen))},
            max_length=64,
        )
    return arts


def expected(arts: dict[str, object]) -> dict:
    """Per module and text: probabilities (and fusion attention); per voting rule and early exit: ensemble votes."""
    out: dict = {}
    for name in ("s0", "s1", "s2", "h0", "fusion"):
        model = AdaptedEncoder(load_base(packaged_encoder_dir(), device="cpu")).eval()
        for m in ("s0", "s1", "s2") if name == "fusion" else ():
            artifacts.attach(model, arts[m], name=m)  # type: ignore[arg-type]
        if name == "fusion":
            fusion_artifacts.attach(model, arts[name], ["s0", "s1", "s2"], name=name)  # type: ignore[arg-type]
        else:
            artifacts.attach(model, arts[name], name=name)  # type: ignore[arg-type]
        comp = Fuse(name) if name == "fusion" else Single(name)
        for t in TEXTS:
            batch = model.base.tokenizer([t], truncation=True, max_length=64, return_tensors="pt")
            with torch.no_grad():
                o = model(**batch, head=name, composition=comp, return_fusion_attention=name == "fusion")
            att = {k: v[0].tolist() for k, v in o.fusion_attention.items()} if o.fusion_attention else None
            out[(name, t)] = (o.logits[0].softmax(-1).tolist(), att)
    prompts = PromptModel(load_base(packaged_encoder_dir(), device="cpu")).eval()
    for name in ("p0", "p1", "p2", "deep"):
        prompts.attach(arts[name], name=name)  # type: ignore[arg-type]
        for t in TEXTS:
            batch = dict(prompts.base.tokenizer([t], truncation=True, max_length=64, return_tensors="pt"))
            with torch.no_grad():
                out[(name, t)] = (prompts.logits([name], batch)[0, 0].softmax(-1).tolist(), None)
    scores = [arts[p].metrics["accuracy"] for p in ("p0", "p1", "p2")]  # type: ignore[attr-defined]
    for voting in VOTING_RULES:
        for early in (False, True) if voting == "majority" else (False,):
            for t in TEXTS:
                batch = dict(prompts.base.tokenizer([t], truncation=True, max_length=64, return_tensors="pt"))
                (v,) = predict_ensemble(prompts, ["p0", "p1", "p2"], batch, voting, scores, early)
                out[("ensemble", voting, early, t)] = v
    return out


def register(tmp: Path, arts: dict[str, object]) -> tuple[str, str, dict[str, str], str]:
    db_url = f"sqlite:///{tmp / 'registry.db'}"
    upgrade(db_url)
    reg = Registry(make_engine(db_url), LocalBlobStore(tmp / "blobs"))
    base_row, _ = register_base_model(reg, packaged_encoder_dir(), name="minilm")
    with reg.tx() as s:
        owner = keys.get_or_create_owner(s, "soak").id
        _, key = keys.create_key(s, owner, ["admin", "train", "read"])
        task = catalog.create_task(s, owner, "sentiment", "classification", LABELS)
    ids: dict[str, str] = {}
    for name, art in arts.items():
        w, c = artifact_store.store(reg, art)  # type: ignore[arg-type]
        with reg.tx() as s:
            row = adapters.register_adapter(
                s,
                owner_id=owner,
                task_id=task.id,
                base_model_id=base_row.id,
                name=name,
                blob_sha256=w,
                config_sha256=c,
                **artifact_store.registration(art),
            )  # type: ignore[arg-type]
            ids[name] = row.id
            if name == "fusion":
                adapters.add_fusion_members(s, row.id, [ids["s0"], ids["s1"], ids["s2"]])
    with reg.tx() as s:
        ens = adapters.create_set(
            s,
            owner_id=owner,
            kind="ensemble",
            name="e",
            task_id=task.id,
            voting="majority",
            adapter_ids=[ids["p0"], ids["p1"], ids["p2"]],
        )
        ids["ensemble"] = ens.id
    reg.close()
    return db_url, key, ids, str(tmp / "blobs")


def requests_mix(ids: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(what, path, body-template) — the inputs are drawn per request."""
    mix = [("predict", n, {"adapter": ids[n]}) for n in ("s0", "s1", "s2", "h0", "p0", "deep", "fusion")]
    mix.append(("predict", "fusion", {"adapter": ids["fusion"], "return_fusion_attention": True}))
    for voting in VOTING_RULES:
        for early in (False, True) if voting == "majority" else (False,):
            mix.append(("ensemble", f"{voting}/{early}", {"voting": voting, "early_exit": early}))
    return mix


def check(kind: str, name: str, body: dict, texts: list[str], resp: dict, want: dict) -> bool:
    outs = resp.get("outputs", [])
    if len(outs) != len(texts):
        return False
    for t, o in zip(texts, outs, strict=True):
        if kind == "predict":
            probs, att = want[(name, t)]
            if any(abs(o["probabilities"][lab] - p) > TOL for lab, p in zip(LABELS, probs, strict=True)):
                return False
            if body.get("return_fusion_attention"):
                got = o.get("fusion_attention", {}).get("layers", {})
                if got.keys() != att.keys() or any(
                    abs(a - b) > 1e-4 for k in att for a, b in zip(got[k], att[k], strict=True)
                ):
                    return False
        else:
            v = want[("ensemble", body["voting"], body["early_exit"], t)]
            if o["label"] != LABELS[v.label] or o["early_exit"] != v.early_exit:
                return False
            for p, w in zip(o["per_prompt"], v.per_prompt, strict=True):
                if ("skipped" in p) != (w is None) or (
                    w is not None and (p["label"] != LABELS[w[0]] or abs(p["probability"] - w[1]) > TOL)
                ):
                    return False
    return True


async def soak(url: str, key: str, ids: dict[str, str], want: dict, seconds: float, clients: int) -> dict:
    mix = requests_mix(ids)
    lat: list[float] = []
    counts = {"errors": 0, "mismatches": 0}
    per_kind: dict[str, int] = {}
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:

        async def client(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < stop:
                kind, name, body = rng.choice(mix)
                texts = rng.sample(TEXTS, rng.randint(1, 3))
                payload = {**body, "inputs": [{"text": t} for t in texts]}
                path = "/v1/predict" if kind == "predict" else f"/v1/ensembles/{ids['ensemble']}/predict"
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, json=payload)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                lat.append((time.perf_counter() - t0) * 1000)
                per_kind[f"{kind}:{name}"] = per_kind.get(f"{kind}:{name}", 0) + 1
                if r.status_code != 200:
                    counts["errors"] += 1
                elif not check(kind, name, body, texts, r.json(), want):
                    counts["mismatches"] += 1

        await asyncio.gather(*[client(i) for i in range(clients)])
    q = statistics.quantiles(lat, n=100)
    return {
        "soak_requests": len(lat),
        "soak_rps": round(len(lat) / seconds, 1),
        "soak_p50_ms": round(q[49], 1),
        "soak_p99_ms": round(q[98], 1),
        "soak_errors": counts["errors"],
        "soak_mismatches": counts["mismatches"],
        "soak_kinds": len(per_kind),
        "soak_clients": clients,
        "soak_seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    arts = build_modules()
    want = expected(arts)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    db_url, key, ids, blobs = register(tmp, arts)
    port = 19000 + os.getpid() % 1000
    with api_server(tmp, db_url, blobs, port, queue_max_rows="4096", request_timeout_s="60") as url:
        result = asyncio.run(soak(url, key, ids, want, 10 if a.quick else 60, 32))
    lines = [
        f"## HTTP soak: every request kind at once (6-layer MiniLM, CPU, 2 threads{', --quick' if a.quick else ''})",
        "",
        f"{result['soak_clients']} concurrent clients for {result['soak_seconds']} s against `uvicorn api.main:app`, each "
        f"request drawn from {result['soak_kinds']} kinds: ST-A (two layouts, so mixed batches gather and scatter), "
        "fusion with and without attention, a shallow and a deep soft prompt alone, and the 3-prompt ensemble "
        "under every voting rule, early exit on and off. Every output is compared with a freshly built "
        "single-purpose model computed beforehand (probabilities to 2e-5, attention to 1e-4, votes exactly). "
        "Throughput is far below P6's single-adapter load: a third of the requests are ensembles (three "
        "prompted forwards each, not batched across requests), requests carry 1-3 inputs, and 32 clients "
        "share two cores, hence the p50.",
        "",
        "| requests | throughput | p50 | p99 | mismatches | errors |",
        "|---|---|---|---|---|---|",
        f"| {result['soak_requests']} | {result['soak_rps']} req/s | {result['soak_p50_ms']} ms | "
        f"{result['soak_p99_ms']} ms | **{result['soak_mismatches']}** | **{result['soak_errors']}** |",
    ]
    write_section("soak", "\n".join(lines))
    emit(result)


if __name__ == "__main__":
    main()
