"""Request kinds interleaved over HTTP on one resident base, each compared with a freshly built model;
and the bad paths between kinds and endpoints: wrong endpoint, regression prompts, a base that changed."""

from __future__ import annotations

import shutil
import threading

import torch

from api.archives import make_zip
from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from composer.heads import HeadConfig
from composer.presets import preset
from composer.prompts.model import PromptModel
from registry_db.repo import adapters, catalog
from service import artifact_store
from service.catalog import register_base_model
from tests.api.conftest import HP
from tests.conftest import make_tiny_bert

INPUTS = [{"text": "good movie"}, {"text": "a really boring plot"}, {"text": "the food was fresh"}]


def fresh_prompt_probs(api, prompt_id: str, texts: list[str]) -> torch.Tensor:
    """The oracle: a PromptModel on a freshly loaded base with only this prompt."""
    with api.registry.tx() as s:
        row = adapters.get_adapter(s, prompt_id)
        base_row = catalog.get_base_model(s, row.base_model_id)
    model = PromptModel(load_base(base_row.path)).eval()
    model.attach(artifact_store.fetch(api.registry, row), name="p")
    batch = dict(model.base.tokenizer(texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        return model.logits(["p"], batch)[:, 0].softmax(-1)


def test_prompts_adapters_and_mixed_batches_leave_nothing_behind(api, tiny_bert_dir):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids, name="a"), api.train_adapter(ids, name="b")
    body = {
        "type": "prompts",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "validation_dataset": ids["validation"],
        "k": 1,
        "prompt": {"length": 4},
        "hyperparameters": HP,
    }
    job = api.client.post("/v1/jobs", json=body, headers=api.h()).json()
    ens = api.client.get(f"/v1/jobs/{job['id']}", headers=api.h()).json()["result"]["ensemble_id"]
    prompt = api.client.get(f"/v1/ensembles/{ens}", headers=api.h()).json()["prompts"][0]

    def ensemble() -> list[float]:
        r = api.client.post(f"/v1/ensembles/{ens}/predict", headers=api.h(), json={"inputs": INPUTS})
        assert r.status_code == 200, r.text
        return [o["per_prompt"][0]["probability"] for o in r.json()["outputs"]]

    want = fresh_prompt_probs(api, prompt, [i["text"] for i in INPUTS])
    alone = ensemble()
    torch.testing.assert_close(torch.tensor(alone), want.max(-1).values, atol=2e-6, rtol=0)
    # an ST-A predict, then the ensemble again
    assert api.client.post("/v1/predict", headers=api.h(), json={"adapter": a, "inputs": INPUTS}).status_code == 200
    assert ensemble() == alone
    # concurrent requests for two adapters and the prompt (mixed batches), then the ensemble again
    out: dict[str, dict] = {}

    def call(ref: str) -> None:
        out[ref] = api.client.post("/v1/predict", headers=api.h(), json={"adapter": ref, "inputs": INPUTS}).json()

    # two adapters and the prompt at once: the micro-batcher may put all three in one forward (composer.rows)
    threads = [threading.Thread(target=call, args=(r,)) for r in (a, b, prompt)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("outputs" in v for v in out.values()), out
    beside = torch.tensor([[o["probabilities"]["neg"], o["probabilities"]["pos"]] for o in out[prompt]["outputs"]])
    torch.testing.assert_close(beside, want, atol=2e-6, rtol=0)
    assert ensemble() == alone
    # the single prompt through /v1/predict: the same probabilities as the fresh model
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": prompt, "inputs": INPUTS})
    assert r.status_code == 200 and r.json()["kind"] == "soft_prompt", r.text
    got = torch.tensor([[o["probabilities"]["neg"], o["probabilities"]["pos"]] for o in r.json()["outputs"]])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    # and each adapter's answer equals a fresh model's
    for ref in (a, b):
        with api.registry.tx() as s:
            row = adapters.get_adapter(s, ref)
        model = AdaptedEncoder(load_base(tiny_bert_dir))
        artifacts.attach(model.eval(), artifact_store.fetch(api.registry, row), name="x")
        batch = model.base.tokenizer([i["text"] for i in INPUTS], padding=True, return_tensors="pt")
        with torch.no_grad():
            probs = model(**batch, head="x", composition=Single("x")).logits.softmax(-1)
        got = torch.tensor([[o["probabilities"]["neg"], o["probabilities"]["pos"]] for o in out[ref]["outputs"]])
        torch.testing.assert_close(got, probs, atol=2e-6, rtol=0)


def test_each_kind_on_the_wrong_endpoint_is_a_422_naming_the_right_one(api):
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    r = api.client.post("/v1/ensembles", headers=api.h(), json={"name": "e", "task": "sentiment", "prompts": [a]})
    assert r.status_code == 422 and r.json()["type"].endswith("wrong-endpoint") and "/v1/predict" in r.json()["detail"]
    body = {
        "type": "prompts",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "k": 2,
        "prompt": {"length": 4},
        "hyperparameters": HP,
    }
    ens = api.client.get(
        f"/v1/jobs/{api.client.post('/v1/jobs', json=body, headers=api.h()).json()['id']}", headers=api.h()
    ).json()["result"]["ensemble_id"]
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": ens, "inputs": INPUTS})
    assert r.status_code == 422 and f"/v1/ensembles/{ens}/predict" in r.json()["detail"], r.text
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": "no-such-thing", "inputs": INPUTS})
    assert r.status_code == 404


def test_prompts_for_a_regression_task_are_refused_at_submit(api):
    r = api.client.post("/v1/tasks", headers=api.h(), json={"name": "score", "kind": "regression", "labels": []})
    assert r.status_code == 201, r.text
    rows = b"".join(b'{"text": "good movie", "label": %d}\n' % (i % 5) for i in range(12))
    ds = api.client.post(
        "/v1/tasks/score/datasets", headers=api.h(), data={"split": "train"}, files={"file": ("t.jsonl", rows)}
    ).json()["id"]
    body = {"type": "prompts", "task": "score", "base_model": api.base_id, "train_dataset": ds, "k": 2}
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 422 and "regression" in r.json()["detail"], r.text
    assert api.outbox == []  # nothing was queued


def test_a_base_whose_files_changed_is_a_409_not_a_500(api, tmp_path, other_bert_dir):
    moved = make_tiny_bert(tmp_path / "own", seed=7)  # a base of its own, not yet resident
    row, _ = register_base_model(api.registry, moved, name="copy")
    model = AdaptedEncoder(load_base(moved))
    model.add_adapter("x", preset("seq_bn", reduction_factor=4))
    model.add_head("x", HeadConfig(num_labels=2))
    files = dict(
        zip(kinds.get("st_a").file_names, artifacts.to_files(artifacts.extract(model, "x", head="x")), strict=True)
    )
    api.task_with_data()
    r = api.client.post(
        "/v1/adapters/import",
        headers=api.h(),
        data={"task": "sentiment", "base_model": row.id},
        files={"file": ("x.zip", make_zip(files))},
    )
    assert r.status_code == 201, r.text
    shutil.copy(other_bert_dir / "model.safetensors", moved / "model.safetensors")  # someone replaced the weights
    api.client.app.state.runtime.residents.pop(row.id)  # the import probed it: as after an API restart, not resident
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": r.json()["id"], "inputs": INPUTS})
    assert r.status_code == 409 and r.json()["type"].endswith("wrong-base"), r.text


def test_refused_archives_answer_4xx_and_leave_nothing_registered(api, tmp_path):
    import io
    import pickle
    import zipfile

    from fastapi.testclient import TestClient

    from api.app import create_app
    from service.settings import Settings
    from tests.api.conftest import ADMIN

    api.task_with_data()

    def zip_of(entries, compression=zipfile.ZIP_STORED) -> bytes:  # (name, bytes, is_symlink)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data, link in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = compression
                if link:
                    info.external_attr = 0o120777 << 16
                zf.writestr(info, data)
        return buf.getvalue()

    wider = make_tiny_bert(tmp_path / "wider", seed=3)  # same family, another architecture: hidden 48, not 32
    cfg = __import__("json").loads((wider / "config.json").read_text())
    cfg.update(hidden_size=48, intermediate_size=64)
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(**{k: v for k, v in cfg.items() if k in BertConfig().to_dict()}), add_pooling_layer=False
    ).save_pretrained(wider)
    model = AdaptedEncoder(load_base(wider))
    model.add_adapter("x", preset("seq_bn", reduction_factor=4))
    other_arch = dict(zip(kinds.get("st_a").file_names, artifacts.to_files(artifacts.extract(model, "x")), strict=True))
    adapter_cfg = b'{"config": {}, "hidden_size": 32}'
    cases = {
        "zip bomb": (
            zip_of(
                [("adapter_config.json", adapter_cfg, False), ("adapter.safetensors", b"\0" * (3 << 20), False)],
                zipfile.ZIP_DEFLATED,
            ),
            413,
        ),
        "symlink": (zip_of([("adapter_config.json", b"/etc/passwd", True)]), 422),
        "absolute path": (zip_of([("/etc/adapter_config.json", adapter_cfg, False)]), 422),
        "dot-dot": (zip_of([("../adapter_config.json", adapter_cfg, False)]), 422),
        "pickle": (
            zip_of(
                [("adapter_config.json", adapter_cfg, False), ("pytorch_adapter.bin", pickle.dumps({"x": 1}), False)]
            ),
            422,
        ),
        "another architecture": (make_zip(other_arch), 422),
    }
    settings = Settings(data_dir=tmp_path, register_packaged_encoder=False, max_upload_mb=1, max_archive_mb=2)
    blobs = lambda: sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file())  # noqa: E731
    with TestClient(create_app(settings, registry=api.registry, send=lambda *_: True)) as client:
        before = (api.client.get("/v1/adapters", headers=api.h()).json()["items"], blobs())
        for label, (data, status) in cases.items():
            r = client.post(
                "/v1/adapters/import",
                headers={"Authorization": f"Bearer {ADMIN}"},
                data={"task": "sentiment", "base_model": api.base_id},
                files={"file": ("x.zip", data)},
            )
            assert r.status_code == status, (label, r.text)
            assert r.headers["content-type"] == "application/problem+json", label
        assert (api.client.get("/v1/adapters", headers=api.h()).json()["items"], blobs()) == before


def test_requests_racing_an_archive_are_served_or_404_never_500(api):
    """Predicts for one cold adapter from 8 threads while it is archived: each is served from what was
    loaded (with the right answer) or answers 404 `archived`; nothing is left resident afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    ids = api.task_with_data()
    a = api.train_adapter(ids)
    want = None
    codes = []

    def ask(_: int) -> tuple[int, dict]:
        r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": a, "inputs": [{"text": "good movie"}]})
        return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, i) for i in range(16)]
        assert api.client.post(f"/v1/adapters/{a}/archive", headers=api.h()).status_code == 200
        for f in futures:
            code, body = f.result()
            codes.append(code)
            if code == 200:
                want = want or body["outputs"]
                assert body["outputs"] == want
            else:
                assert code == 404 and body["type"].endswith("archived"), body
    assert set(codes) <= {200, 404}
    assert ask(0)[0] == 404
    assert a not in {m["id"] for m in api.client.get("/v1/adapters/loaded", headers=api.h()).json()}


def test_an_evicted_adapter_reloads_from_the_host_tier_with_the_same_answer_and_stats_say_so(api):
    """An LRU eviction keeps the built adapter in host memory: the next request reattaches it (no blob
    fetch) and answers exactly as before; /serving/stats splits first loads from host reloads."""
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    body = {"adapter": a, "inputs": INPUTS}
    first = api.client.post("/v1/predict", headers=api.h(), json=body).json()
    stats = api.client.get("/serving/stats", headers=api.h()).json()
    assert stats["store_load_p50_ms"] is not None and stats["host_reload_p50_ms"] is None
    rt = api.client.app.state.runtime
    rt.evict(a, forget=False)  # what the LRU does under a full cache
    assert a not in rt.cache and a in rt.host
    again = api.client.post("/v1/predict", headers=api.h(), json=body).json()
    assert again["outputs"] == first["outputs"]
    after = api.client.get("/serving/stats", headers=api.h()).json()
    assert after["host_hits"] == stats["host_hits"] + 1 and after["evictions"] == stats["evictions"] + 1
    # the diff's kernel, as this process serves it (loaded before the session, tests/conftest.py)
    from composer.diff.kernel import KERNEL

    assert after["kinds"] == {"diff": {"kernel": KERNEL.state()}}
    assert KERNEL.state() == "loaded" or KERNEL.state().startswith("unavailable: ")
    assert after["host_reload_p50_ms"] is not None and after["cold_loads"] == stats["cold_loads"] + 1


def test_a_process_that_prefetches_serves_its_first_requests_from_the_host_tier(api, tmp_path):
    """COMPOSER_SERVING_PREFETCH: a new API process builds the ready adapters into its host tier at start-up
    (an archived one is not), and their first requests reattach them with the answers of a process that did
    not prefetch."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from service.settings import Settings

    ids = api.task_with_data()
    a, b, gone = (api.train_adapter(ids) for _ in range(3))
    assert api.client.post(f"/v1/adapters/{gone}/archive", headers=api.h()).status_code == 200
    want = {
        x: api.client.post("/v1/predict", headers=api.h(), json={"adapter": x, "inputs": INPUTS}).json() for x in (a, b)
    }
    settings = Settings(data_dir=tmp_path, register_packaged_encoder=False, serving_prefetch=True)
    with TestClient(create_app(settings, registry=api.registry)) as other:
        rt = other.app.state.runtime
        for t in [t for t in threading.enumerate() if t.name == "prefetch"]:
            t.join(timeout=60)
        assert set(rt.host) == {a, b} and not rt.cache  # built, kept off the base until asked for
        for x in (a, b):
            got = other.post("/v1/predict", headers=api.h(), json={"adapter": x, "inputs": INPUTS}).json()
            assert got["outputs"] == want[x]["outputs"]
        stats = other.get("/serving/stats", headers=api.h()).json()
        assert stats["host_hits"] == 2 and stats["store_load_p50_ms"] is None
