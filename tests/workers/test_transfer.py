"""Registry-driven transfer in-process: rankings against oracles (the LogME reference algorithm, features
from a freshly built model), exact warm starts, `members: {auto: k}`, tenancy and the bad paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from composer import adapter_artifact as artifacts
from composer import adapter_training
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from composer.transfer import logme, semb
from registry_db.errors import InvalidInput, NotFound
from registry_db.repo import adapters, catalog, jobs, keys
from service import artifact_store, transfer
from service.catalog import load_registered_base, upload_dataset
from service.jobs import JOB_TYPES
from service.settings import Settings
from service.submit import submit_job
from tests.workers.fixtures import adapter_spec, jsonl, make_world, toy_rows
from tests.workers.test_submit_and_runner import Outbox
from workers.runner import run


def reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    """LogME as its authors' reference code computes it (You et al. 2021, `LogME.py`): a full SVD."""
    f = f.astype(np.float64)
    fh, f = f, f.transpose()
    d, n = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    out = []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64)
        alpha, beta, lam = 1.0, 1.0, 1.0
        tmp = vh @ (f @ y_)
        for _ in range(11):
            gamma = (beta * s / (alpha + beta * s)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / alpha_de
            beta_de = ((y_ - fh @ m) ** 2).sum()
            beta = (n - gamma) / beta_de
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        ev = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * s))
            - beta / 2.0 * beta_de
            - alpha / 2.0 * alpha_de
            - n / 2.0 * np.log(2 * np.pi)
        )
        out.append(ev / n)
    return float(np.mean(out))


def test_logme_and_semb_match_their_references():
    g = torch.Generator().manual_seed(0)
    for n, d, c in ((200, 16, 2), (60, 40, 3), (500, 32, 5)):
        f = torch.randn(n, d, generator=g)
        y = torch.randint(0, c, (n,), generator=g)
        f[:, 0] += y.float()  # some signal
        assert logme(f, y) == pytest.approx(reference_logme(f.numpy(), y.numpy()), rel=1e-9, abs=1e-9)
    a, b = torch.randn(30, 8, generator=g), torch.randn(50, 8, generator=g)
    want = float(a.double().mean(0) @ b.double().mean(0) / (a.double().mean(0).norm() * b.double().mean(0).norm()))
    assert semb(a, [b])[0] == pytest.approx(want, abs=1e-12)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path, tiny_bert_dir):
    """Owner acme: task `sentiment` with its own adapter, sources `flip` and `noise` with one adapter each,
    and a target `target` with train, validation and test data. Owner rival: one private source."""
    db = request.getfixturevalue("fresh_pg_database") if request.param == "postgresql" else None
    w = make_world(tmp_path, tiny_bert_dir, db_url=db)
    w.settings = Settings(  # type: ignore[attr-defined]
        data_dir=tmp_path,
        heartbeat_interval=0.2,
        stale_after=2,
        checkpoint_every_steps=5,
        progress_every_seconds=0,
        rank_precision="float32",  # held to a float32 oracle below; bfloat16 is checked against it
    )
    with w.registry.tx() as s:
        for name in ("flip", "noise", "target"):
            catalog.create_task(s, w.owner, name, "classification", ["neg", "pos"])
        w.rival = keys.create_owner(s, "rival").id  # type: ignore[attr-defined]
        catalog.create_task(s, w.rival, "theirs", "classification", ["neg", "pos"])
    flipped = [{**r, "label": "neg" if r["label"] == "pos" else "pos"} for r in toy_rows(32, 7)]
    noisy = [{**r, "label": "pos" if i % 3 else "neg"} for i, r in enumerate(toy_rows(32, 9))]
    w.ids = {}  # type: ignore[attr-defined]
    w.ids["sentiment"] = train(w, adapter_spec(w))
    for task, rows in (("flip", flipped), ("noise", noisy)):
        ds = upload_dataset(w.registry, w.owner, task, "train", jsonl(rows))[0].id  # type: ignore[attr-defined]
        w.ids[task] = train(w, {**adapter_spec(w), "task": task, "train_dataset": ds, "validation_dataset": None})
    ds = upload_dataset(w.registry, w.rival, "theirs", "train", jsonl(toy_rows(24, 3)))[0].id  # type: ignore[attr-defined]
    spec = {**adapter_spec(w), "task": "theirs", "train_dataset": ds, "validation_dataset": None}
    w.ids["theirs"] = train(w, spec, owner=w.rival)
    up = {}
    for split, seed in (("train", 11), ("validation", 12), ("test", 13)):
        up[split] = upload_dataset(w.registry, w.owner, "target", split, jsonl(toy_rows(40, seed)))[0].id  # type: ignore[attr-defined]
    w.target = up  # type: ignore[attr-defined]
    yield w
    w.registry.close()


def train(w, spec, owner=None) -> str:
    job = submit(w, "adapter", spec, owner)
    return job.result["adapter_id"]


def submit(w, job_type, spec, owner=None):
    job, _ = submit_job(w.registry, owner or w.owner, job_type, spec, send=Outbox())
    status = run(w.registry, w.settings, job.id, JOB_TYPES)
    with w.registry.tx() as s:
        done = jobs.get_job(s, job.id)
    assert status == "succeeded", done.error
    return done


def loader(w):
    def load(row):
        return load_registered_base(row, "cpu", w.registry, w.settings.data_dir)

    return load


def rank(w, estimator, owner=None, task="target", **kw):
    return transfer.rank(w.registry, w.settings, loader(w), owner or w.owner, task, estimator, **kw)


def test_rankings_score_every_readable_source_as_an_oracle_does(world, tiny_bert_dir, monkeypatch):
    w = world
    read = []
    real = transfer.load_dataset_examples
    monkeypatch.setattr(transfer, "load_dataset_examples", lambda reg, ds, task: read.append(ds) or real(reg, ds, task))
    got = {e: rank(w, e) for e in ("logme", "semb", "fusion_probe")}
    # the target's own split, and SEmb's source training sets: train splits only, never validation or test
    assert read and all(ds.split == "train" for ds in read)
    assert w.target["test"] not in {ds.id for ds in read} and w.target["validation"] not in {ds.id for ds in read}
    for r in got.values():  # the three sources of acme; never rival's private one, never the target's own
        assert {i["adapter_id"] for i in r.items} == {w.ids["sentiment"], w.ids["flip"], w.ids["noise"]}
        assert [i["rank"] for i in r.items] == [1, 2, 3] and r.rows_used == 40
        scores = [i["score"] for i in r.items]
        assert scores == sorted(scores, reverse=True) and all(math.isfinite(x) for x in scores)
    probe = [i["score"] for i in got["fusion_probe"].items]
    assert sum(probe) == pytest.approx(1.0, abs=1e-3)  # mean attention over the candidates
    # oracle: a freshly built model with the downloaded adapter, mean-pooled by hand, LogME of that
    base = load_base(tiny_bert_dir)
    examples = transfer.target_rows(w.registry, w.owner, "target", 1000, None)[1]
    enc = base.tokenizer([e.text for e in examples], padding=True, return_tensors="pt")
    labels = torch.tensor([["neg", "pos"].index(e.label) for e in examples])
    for item in got["logme"].items:
        with w.registry.tx() as s:
            art = artifact_store.fetch(w.registry, adapters.get_adapter(s, item["adapter_id"]))
        model = AdaptedEncoder(base).eval()
        adapter, _ = artifacts.build(model, art)
        model.put("a", adapter)
        with torch.no_grad():
            hidden = model(**enc, composition=Single("a")).hidden
        mask = enc["attention_mask"].unsqueeze(-1).float()
        feats = (hidden * mask).sum(1) / mask.sum(1)
        assert item["score"] == pytest.approx(logme(feats, labels), abs=2e-5)
    bf16 = transfer.rank(
        w.registry, w.settings.model_copy(update={"rank_precision": "bfloat16"}), loader(w), w.owner, "target", "logme"
    )
    want = {i["adapter_id"]: i["score"] for i in got["logme"].items}
    assert all(abs(i["score"] - want[i["adapter_id"]]) < 2e-3 for i in bf16.items), (bf16.items, want)
    again = rank(w, "logme")  # every feature comes from the cache now, and the scores are the same
    assert [(i["adapter_id"], i["score"]) for i in again.items] == [
        (i["adapter_id"], i["score"]) for i in got["logme"].items
    ]


def test_rival_sees_only_its_own_and_bad_requests_say_why(world):
    w = world
    with pytest.raises(InvalidInput, match="no ready adapters of other tasks"):
        rank(w, "logme", owner=w.rival, task="theirs")  # its only adapter is the task's own; acme's are private
    with pytest.raises(NotFound):
        rank(w, "logme", owner=w.rival, task="target")  # another owner's task
    with pytest.raises(NotFound):
        rank(w, "logme", task="no-such-task")
    with pytest.raises(InvalidInput, match="no train dataset"):
        with w.registry.tx() as s:
            catalog.create_task(s, w.owner, "empty", "classification", ["neg", "pos"])
        rank(w, "logme", task="empty")
    with pytest.raises(InvalidInput, match="unknown estimator"):
        rank(w, "vibes")
    with pytest.raises(NotFound):  # a warm start from another owner's private adapter
        submit_job(w.registry, w.owner, "adapter", warm_spec(w, w.ids["theirs"]), send=Outbox())


def warm_spec(w, source, **kw):
    spec = {k: v for k, v in adapter_spec(w).items() if k != "adapter"}
    return {**spec, "task": "target", "train_dataset": w.target["train"], "validation_dataset": None} | {
        "warm_start": {"from": source},
        **kw,
    }


def test_a_warm_start_begins_exactly_at_its_source_and_records_it(world, monkeypatch):
    w = world
    seen = {}
    real_fit = adapter_training.fit

    def spy(objective, *a, **kw):  # step 0: the weights the optimiser is handed
        name = next(iter(objective.module.adapters))
        seen["start"] = {k: v.detach().clone() for k, v in objective.module.adapters[name].state_dict().items()}
        return real_fit(objective, *a, **kw)

    monkeypatch.setattr(adapter_training, "fit", spy)
    done = submit(w, "adapter", warm_spec(w, w.ids["flip"]))
    with w.registry.tx() as s:
        src = artifact_store.fetch(w.registry, adapters.get_adapter(s, w.ids["flip"]))
        new_row = adapters.get_adapter(s, done.result["adapter_id"])
        new = artifact_store.fetch(w.registry, new_row)
    want, _ = artifacts.split_tensors(src)
    assert seen["start"].keys() == want.keys()
    assert all(torch.equal(seen["start"][k], want[k]) for k in want)
    assert any(not torch.equal(new.tensors[f"adapter.{k}"], want[k]) for k in want)  # then it trained
    assert new.config.to_dict() == src.config.to_dict()
    assert done.result["warm_start"]["from"] == w.ids["flip"] and done.result["warm_start"]["rank"] is None
    assert new_row.method_config["warm_start"]["from"] == w.ids["flip"]
    auto = submit(w, "adapter", warm_spec(w, "auto"))
    top = rank(w, "logme").items[0]
    lineage = auto.result["warm_start"]
    assert lineage["from"] == top["adapter_id"] and lineage["rank"] == 1 and lineage["estimator"] == "logme"
    with pytest.raises(InvalidInput, match="adapter config"):
        submit_job(w.registry, w.owner, "adapter", warm_spec(w, "auto", adapter={"reduction_factor": 2}), send=Outbox())


def test_fusion_members_auto_takes_the_ranking_top_after_the_task_own(world):
    w = world
    own = train(
        w, {**adapter_spec(w), "task": "target", "train_dataset": w.target["train"], "validation_dataset": None}
    )
    spec = {
        "task": "target",
        "members": {"auto": 2},
        "train_dataset": w.target["train"],
        "validation_dataset": w.target["validation"],
        "hyperparameters": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 8, "patience": 0},
    }
    done = submit(w, "fusion", spec)
    top = [i["adapter_id"] for i in rank(w, "logme").items[:2]]
    with w.registry.tx() as s:
        members = [m.id for m in adapters.fusion_members(s, done.result["adapter_id"])]
    assert members == [own, *top]
    assert done.result["members_chosen"]["own"] == own
    assert [i["adapter_id"] for i in done.result["members_chosen"]["ranked"]] == top
