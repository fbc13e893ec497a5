"""Quantised bases through the service: a LoRA job trains on a frozen int8 or NF4 base (`base_precision`), and an
API serving its bases at int8 (`serving_precision`) answers what a fresh int8 model answers, while the fp32 API
serves the same files as a fresh fp32 model does."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient

from api.app import create_app
from composer import adapter_artifact as artifacts
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from registry_db.repo import adapters
from service import artifact_store
from service.settings import Settings
from tests.api.conftest import ADMIN

TEXTS = ["good movie", "a really boring plot", "the food was fresh"]


def _fresh(api, ref: str, base_dir, precision: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with api.registry.tx() as s:
        row = adapters.get_adapter(s, ref)
    model = AdaptedEncoder(load_base(base_dir, precision=precision)).eval()
    artifacts.attach(model, artifact_store.fetch(api.registry, row), name="x")
    out = []
    for t in TEXTS:  # each text alone: a served row equals its own run
        with torch.no_grad():
            batch = dict(model.base.tokenizer([t], return_tensors="pt"))
            out.append(model(**batch, head="x", composition=Single("x")).logits[0].softmax(-1))
    return torch.stack(out)


def _probs(client: TestClient, ref: str) -> torch.Tensor:
    r = client.post(
        "/v1/predict",
        headers={"Authorization": f"Bearer {ADMIN}"},
        json={"adapter": ref, "inputs": [{"text": t} for t in TEXTS]},
    )
    assert r.status_code == 200, r.text
    return torch.tensor([[o["probabilities"]["neg"], o["probabilities"]["pos"]] for o in r.json()["outputs"]])


def test_a_lora_trained_on_int8_serves_on_both_precisions(api, tiny_bert_dir, tmp_path):
    ids = api.task_with_data()
    ref = api.train_adapter(ids, name="q", preset="lora", adapter={"r": 2}, base_precision="int8")
    row = api.client.get(f"/v1/adapters/{ref}", headers=api.h()).json()
    assert row["method_config"]["trained_on_precision"] == "int8", row
    torch.testing.assert_close(_probs(api.client, ref), _fresh(api, ref, tiny_bert_dir, "fp32"), atol=1e-5, rtol=0)
    settings = Settings(
        data_dir=tmp_path / "int8", bootstrap_key=ADMIN, register_packaged_encoder=False, serving_precision="int8"
    )
    with TestClient(create_app(settings, registry=api.registry, send=lambda *_: True)) as client:
        int8 = _probs(client, ref)
    torch.testing.assert_close(int8, _fresh(api, ref, tiny_bert_dir, "int8"), atol=1e-5, rtol=0)
    assert (int8 - _fresh(api, ref, tiny_bert_dir, "fp32")).abs().max() < 0.05  # within int8's tolerance


def test_a_lora_trained_on_nf4_records_it_and_serves_on_fp32(api, tiny_bert_dir):
    ids = api.task_with_data()
    ref = api.train_adapter(ids, name="n", preset="lora", adapter={"r": 2}, base_precision="nf4")
    row = api.client.get(f"/v1/adapters/{ref}", headers=api.h()).json()
    assert row["method_config"]["trained_on_precision"] == "nf4", row
    torch.testing.assert_close(_probs(api.client, ref), _fresh(api, ref, tiny_bert_dir, "fp32"), atol=1e-5, rtol=0)


def test_base_precision_is_validated_at_submit(api):
    ids = api.task_with_data()
    body = {
        "type": "adapter",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "preset": "lora",
        "base_precision": "int4",
    }
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 422 and "base_precision" in r.text, r.text
