"""The survey methods' kinds through the service: trained by jobs, registered with their sizes, served in one
mixed batch of every adapter kind (each row against a freshly built model), exported, and refused at submit
with the field named."""

from __future__ import annotations

import threading

import pytest
import torch

from composer import adapter_artifact as artifacts
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from registry_db.repo import adapters
from service import artifact_store
from tests.api.conftest import HP

INPUTS = [{"text": "good movie"}, {"text": "a really boring plot"}, {"text": "the food was fresh"}]
KINDS = {  # preset: (registry kind, adapter fields)
    "ia3": ("ia3", {}),
    "bitfit": ("bitfit", {}),
    "compacter++": ("compacter", {"reduction_factor": 4}),
    "compacter": ("compacter", {"reduction_factor": 4}),
    "lora": ("lora", {"r": 2}),
    "adalora": ("adalora", {"init_r": 4, "target_r": 2}),
    "diff": ("diff", {"density": 0.01}),
    "seq_bn": ("st_a", {"reduction_factor": 4}),
}


def fresh_probs(api, ref: str, base_dir) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with api.registry.tx() as s:
        row = adapters.get_adapter(s, ref)
    model = AdaptedEncoder(load_base(base_dir)).eval()
    artifacts.attach(model, artifact_store.fetch(api.registry, row), name="x")
    batch = model.base.tokenizer([i["text"] for i in INPUTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch, head="x", composition=Single("x")).logits.softmax(-1)


def test_every_adapter_kind_trains_registers_and_serves_in_one_mixed_batch(api, tiny_bert_dir):
    ids = api.task_with_data()
    refs = {p: api.train_adapter(ids, name=p.replace("+", "p"), preset=p, adapter=f) for p, (_, f) in KINDS.items()}
    for p, ref in refs.items():
        row = api.client.get(f"/v1/adapters/{ref}", headers=api.h()).json()
        assert row["kind"] == KINDS[p][0], row
        assert row["param_count"] > 0 and row["method_config"]["preset"] == p, row
    sizes = {p: api.client.get(f"/v1/adapters/{r}", headers=api.h()).json()["param_count"] for p, r in refs.items()}
    assert sizes["bitfit"] < sizes["seq_bn"] and sizes["ia3"] < sizes["bitfit"]  # vectors are small
    for p, r in refs.items():  # the stored bytes are the weights and config blobs the registry holds
        row = api.client.get(f"/v1/adapters/{r}", headers=api.h()).json()
        with api.registry.tx() as s:
            db = adapters.get_adapter(s, r)
            blobs = len(api.registry.blobs.get(db.blob_sha256)) + len(api.registry.blobs.get(db.config_sha256))
        assert row["stored_bytes"] == blobs >= 4 * row["param_count"], (p, row)  # fp32: 4 bytes a parameter
    # every kind at once, from threads: the batcher runs them as one mixed forward; each row as its own model
    out: dict[str, dict] = {}

    def call(p: str) -> None:
        r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": refs[p], "inputs": INPUTS})
        out[p] = r.json() if r.status_code == 200 else {"error": r.text}

    threads = [threading.Thread(target=call, args=(p,)) for p in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p, ref in refs.items():
        assert "outputs" in out[p], out[p]
        got = torch.tensor([[o["probabilities"]["neg"], o["probabilities"]["pos"]] for o in out[p]["outputs"]])
        torch.testing.assert_close(got, fresh_probs(api, ref, tiny_bert_dir), atol=2e-6, rtol=0)


def test_compacters_fuse_through_a_fusion_job(api):
    ids = api.task_with_data()
    members = [
        api.train_adapter(ids, name=f"c{i}", preset="compacter++", adapter={"reduction_factor": 4}) for i in (0, 1)
    ]
    body = {
        "type": "fusion",
        "task": "sentiment",
        "base_model": api.base_id,
        "members": members,
        "train_dataset": ids["train"],
        "validation_dataset": ids["validation"],
        "hyperparameters": HP,
    }
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 202, r.text
    job = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()
    assert job["status"] == "succeeded", job
    fused = job["result"]["adapter_id"]
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": fused, "inputs": INPUTS})
    assert r.status_code == 200 and r.json()["kind"] == "fusion", r.text


@pytest.mark.parametrize(
    "preset, fields, word",
    [
        ("compacter", {"reduction_factor": 4, "phm_dim": 3}, "phm_dim"),
        ("ia3", {"target_modules": ["gate_proj"]}, "target_modules"),
        ("bitfit", {"layers": [9]}, "layers"),
        ("adalora", {"init_r": 2, "target_r": 4}, "target_r"),
        ("diff", {"density": 2}, "density"),
        ("seq_bn", {"reduction_factor": 64}, "reduction_factor"),
    ],
)
def test_bad_method_fields_are_a_422_at_submit_naming_the_field(api, preset, fields, word):
    ids = api.task_with_data()
    body = {
        "type": "adapter",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "preset": preset,
        "adapter": fields,
        "hyperparameters": HP,
    }
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 422 and word in r.text, r.text
    assert api.client.get("/v1/jobs", headers=api.h()).json()["items"] == []


def test_a_diff_round_trips_and_a_tampered_one_is_a_422(api):
    """A diff downloads in our format and imports back to the same answers; one whose indices point outside its
    linears (checksum made to match), or whose shapes are another model's, is refused naming what is wrong."""
    import hashlib
    import io
    import json
    import zipfile

    from api.archives import make_zip
    from composer.safetensors_io import tensors_from_bytes, tensors_to_bytes

    ids = api.task_with_data()
    ref = api.train_adapter(ids, name="d", preset="diff", adapter={"density": 0.01})
    z = zipfile.ZipFile(io.BytesIO(api.client.get(f"/v1/adapters/{ref}/download", headers=api.h()).content))
    files = {n.rpartition("/")[2]: z.read(n) for n in z.namelist()}
    config_name = next(n for n in files if n.endswith(".json"))
    weights_name = next(n for n in files if n.endswith(".safetensors"))

    def upload(fs: dict[str, bytes]):  # type: ignore[no-untyped-def]
        return api.client.post(
            "/v1/adapters/import",
            headers=api.h(),
            data={"task": "sentiment", "base_model": api.base_id, "name": "again"},
            files={"file": ("diff.zip", make_zip(fs))},
        )

    r = upload(files)
    assert r.status_code == 201, r.text
    want = api.client.post("/v1/predict", headers=api.h(), json={"adapter": ref, "inputs": INPUTS}).json()
    got = api.client.post("/v1/predict", headers=api.h(), json={"adapter": r.json()["id"], "inputs": INPUTS}).json()
    assert got["outputs"] == want["outputs"]
    before = len(api.client.get("/v1/adapters", headers=api.h()).json()["items"])

    def tampered(edit) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
        meta, tensors = json.loads(files[config_name]), tensors_from_bytes(files[weights_name])
        edit(meta, tensors)
        blob = tensors_to_bytes(tensors)
        meta["sha256"] = hashlib.sha256(blob).hexdigest()
        return {**files, config_name: json.dumps(meta).encode(), weights_name: blob}

    def out_of_range(meta, tensors) -> None:  # type: ignore[no-untyped-def]
        site, (out, inp) = next(iter(meta["config"]["shapes"].items()))
        key = f"adapter.sites.{site}.w_index"
        tensors[key] = tensors[key].clone()
        tensors[key][0] = out * inp

    def other_model(meta, tensors) -> None:  # type: ignore[no-untyped-def]
        site, (out, inp) = next(iter(meta["config"]["shapes"].items()))
        meta["config"]["shapes"][site] = [out + 8, inp]  # its indices still fit; the base's linear does not

    for edit, word in ((out_of_range, "out of range"), (other_model, "shapes")):
        r = upload(tampered(edit))
        assert r.status_code == 422 and word in r.text, r.text
    assert len(api.client.get("/v1/adapters", headers=api.h()).json()["items"]) == before
