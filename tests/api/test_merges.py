"""POST /v1/merges: merged modules serve what a plain weighted merge of the members' downloaded weights
serves on a fresh model, carry their lineage, and bad merges are 4xx saying why."""

from __future__ import annotations

import io
import zipfile

import torch

from api.archives import make_zip
from composer import adapter_artifact as artifacts
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from tests.api.conftest import HP

TEXTS = ["good movie", "a really awful and boring plot", "the film", "love this food"]


def _files(api, adapter_id: str) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    z = api.client.get(f"/v1/adapters/{adapter_id}/download", headers=api.h())
    zf = zipfile.ZipFile(io.BytesIO(z.content))
    return {n: zf.read(n) for n in zf.namelist()}


def _art(api, adapter_id: str):  # type: ignore[no-untyped-def]
    f = _files(api, adapter_id)
    return artifacts.from_files(f[artifacts.CONFIG_NAME], f[artifacts.WEIGHTS_NAME])


def train(api, ids, name: str, lr: float, preset: str = "seq_bn", adapter: dict | None = None) -> str:  # type: ignore[no-untyped-def]
    body = {
        "type": "adapter",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "validation_dataset": ids["validation"],
        "preset": preset,
        "adapter": adapter if adapter is not None else {"reduction_factor": 4},
        "hyperparameters": {**HP, "learning_rate": lr},
        "name": name,
    }
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 202, r.text
    return api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()["result"]["adapter_id"]


def probs(api, adapter_id: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    body = {"adapter": adapter_id, "inputs": [{"text": t} for t in TEXTS]}
    r = api.client.post("/v1/predict", headers=api.h(), json=body)
    assert r.status_code == 200, r.text
    return torch.tensor([list(o["probabilities"].values()) for o in r.json()["outputs"]])


def test_a_linear_merge_serves_the_weighted_average_of_its_members(api, tiny_bert_dir):
    ids = api.task_with_data()
    a, b = train(api, ids, "a", 1e-2), train(api, ids, "b", 3e-2)  # one start (seed 0), two trainings
    r = api.client.post("/v1/merges", headers=api.h(), json={"members": [a, b], "weights": [0.7, 0.3], "head": b})
    assert r.status_code == 201, r.text
    merged = r.json()
    assert merged["kind"] == "st_a"
    lineage = api.client.get(f"/v1/adapters/{merged['id']}", headers=api.h()).json()["method_config"]["merge"]
    assert lineage == {
        "members": [a, b],
        "weights": [0.7, 0.3],
        "method": "linear",
        "density": 1.0,
        "seed": 0,
        "head_from": b,
    }
    # the oracle: the members' downloaded weights averaged by hand, the head of b, on a fresh model
    art_a, art_b = _art(api, a), _art(api, b)
    tensors = {k: 0.7 * art_a.tensors[k] + 0.3 * art_b.tensors[k] for k in art_a.tensors if k.startswith("adapter.")}
    tensors.update({k: v for k, v in art_b.tensors.items() if k.startswith("head.")})
    art_b.tensors = tensors
    model = AdaptedEncoder(load_base(tiny_bert_dir, device="cpu")).eval()
    artifacts.attach(model, art_b, name="m")
    want = []
    for t in TEXTS:
        batch = dict(model.base.tokenizer([t], return_tensors="pt"))
        with torch.no_grad():
            want.append(model(**batch, head="m", composition=Single("m")).logits[0].softmax(-1))
    got = probs(api, merged["id"])
    torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=0)
    assert (got - probs(api, b)).abs().max() > 1e-4  # the merge is neither member


def test_lora_merges_serve_and_bad_merges_say_why(api):
    ids = api.task_with_data()
    la, lb = (train(api, ids, n, lr, "lora", {"r": 2}) for n, lr in (("la", 1e-2), ("lb", 3e-2)))
    r = api.client.post(
        "/v1/merges", headers=api.h(), json={"members": [la, lb], "method": "dare_ties", "density": 0.5, "seed": 3}
    )
    assert r.status_code == 201 and r.json()["kind"] == "lora", r.text
    assert probs(api, r.json()["id"]).shape == (4, 2)
    a, b = train(api, ids, "a", 1e-2), train(api, ids, "b", 3e-2)
    imported = api.client.post(
        "/v1/adapters/import",
        headers=api.h(),
        data={"task": "sentiment", "base_model": api.base_id, "name": "copy"},
        files={"file": ("a.zip", make_zip(_files(api, a)))},
    ).json()["id"]
    bad = [
        ({"members": [a, la]}, 422, "one kind"),
        ({"members": [a, b], "weights": [1.0]}, 422, "1 weights for 2 members"),
        ({"members": [a, b], "weights": [1.0, -1.0]}, 422, "sum to 0"),
        ({"members": [a, b], "method": "cat"}, 422, "merge by"),
        ({"members": [a, b], "head": la}, 422, "not one of the members"),
        ({"members": [a, a]}, 422, "twice"),
        ({"members": [a, "ad_nope"]}, 404, "not found"),
        ({"members": [a, imported]}, 422, "initialisation"),
        ({"members": [a, b], "method": "average"}, 422, "method"),
    ]
    for body, status, words in bad:
        r = api.client.post("/v1/merges", headers=api.h(), json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
    r = api.client.post("/v1/merges", headers=api.h(), json={"members": [a, imported], "force": True})
    assert r.status_code == 201, r.text  # forced: the caller knows they share a start (it is a's copy)
    torch.testing.assert_close(probs(api, r.json()["id"]), probs(api, a), atol=1e-5, rtol=0)
