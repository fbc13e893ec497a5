"""Each seam between two paths, gone the whole way and checked against an oracle: a model freshly built
from the module's own downloaded files on a freshly loaded base (no state shared with the server).

- train -> register -> predict, for ST-A, LoRA and soft prompts;
- fuse -> predict;
- export (native download) -> re-import -> predict, for every importable kind;
- archive -> restore -> predict."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from api.archives import make_zip
from composer import kinds
from composer.base import load_base
from composer.data import Example
from composer.encoder import AdaptedEncoder
from composer.prompts.model import PromptModel
from composer.serving import Resident, Runtime
from tests.api.conftest import HP

TEXTS = ["good movie", "a really awful and boring plot", "the film", "love this food"]


def _files(api, adapter_id: str) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    z = api.client.get(f"/v1/adapters/{adapter_id}/download", headers=api.h())
    assert z.status_code == 200, z.text
    zf = zipfile.ZipFile(io.BytesIO(z.content))
    return {n: zf.read(n) for n in zf.namelist()}


def oracle(api, adapter_id: str, base_dir) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The module (and a fusion's members) from its downloaded files, on a fresh base: its probabilities."""
    info = api.client.get(f"/v1/adapters/{adapter_id}", headers=api.h()).json()
    base = load_base(base_dir, device="cpu")
    res = Resident(base, AdaptedEncoder(base).eval(), PromptModel(base).eval())
    members = []
    for m in info.get("members") or []:
        face = kinds.get(api.client.get(f"/v1/adapters/{m}", headers=api.h()).json()["kind"])
        face.attach(res, kinds.load_files(_files(api, m)), m)
        members.append(m)
    face = kinds.get(info["kind"])
    files = _files(api, adapter_id)
    art = face.from_files(files[face.file_names[0]], files[face.file_names[1]])
    face.attach(res, art, "oracle", members)
    out = []
    for t in TEXTS:  # one row at a time: no padding in the oracle
        batch = Runtime.tokenize(res, [Example(t)], [face.max_length(art, res.token_limit)])
        with torch.no_grad():
            out.append(face.predict(res, ["oracle"], batch).logits[0].softmax(-1))
    return torch.stack(out)


def served(api, ref: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": ref, "inputs": [{"text": t} for t in TEXTS]})
    assert r.status_code == 200, r.text
    return torch.tensor([list(o["probabilities"].values()) for o in r.json()["outputs"]])


def _job(api, body: dict) -> dict:  # type: ignore[no-untyped-def]
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 202, r.text
    job = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()
    assert job["status"] == "succeeded", job
    return job["result"]


@pytest.fixture()
def trained(api):  # type: ignore[no-untyped-def]
    """One trained module of every trainable kind, and a fusion over two ST-As."""
    ids = api.task_with_data()
    out = {"st_a": api.train_adapter(ids), "lora": api.train_adapter(ids, name="lo", preset="lora", adapter={"r": 2})}
    common = {"task": "sentiment", "base_model": api.base_id, "train_dataset": ids["train"]}
    prompts = _job(api, {**common, "type": "prompts", "k": 2, "prompt": {"length": 4}, "hyperparameters": HP})
    ens = api.client.get(f"/v1/ensembles/{prompts['ensemble_id']}", headers=api.h()).json()
    out["soft_prompt"] = ens["prompts"][0]
    second = api.train_adapter(ids, name="second")
    r = api.client.post(
        "/v1/fusions",
        headers=api.h(),
        json={
            "task": "sentiment",
            "adapters": [out["st_a"], second],
            "train_dataset": ids["train"],
            "hyperparameters": HP,
        },
    )
    assert r.status_code == 202, r.text
    out["fusion"] = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()["result"]["adapter_id"]
    return out


def test_train_and_fuse_then_predict_equal_a_freshly_built_model(api, trained, tiny_bert_dir):  # type: ignore[no-untyped-def]
    for kind, adapter_id in trained.items():
        want = oracle(api, adapter_id, tiny_bert_dir)
        assert (want - want.mean(0)).abs().max() > 1e-4, kind  # the rows differ: a mixup fails
        torch.testing.assert_close(served(api, adapter_id), want, atol=1e-5, rtol=0, msg=kind)


def test_export_then_reimport_then_predict_gives_the_same_answers(api, trained, tiny_bert_dir):  # type: ignore[no-untyped-def]
    for kind in ("st_a", "lora", "soft_prompt"):
        r = api.client.post(
            "/v1/adapters/import",
            headers=api.h(),
            data={"task": "sentiment", "base_model": api.base_id, "name": f"copy-{kind}"},
            files={"file": ("m.zip", make_zip(_files(api, trained[kind])))},
        )
        assert r.status_code == 201, (kind, r.text)
        assert r.json()["kind"] == kind
        torch.testing.assert_close(
            served(api, r.json()["id"]), oracle(api, trained[kind], tiny_bert_dir), atol=1e-5, rtol=0, msg=kind
        )


def test_archive_then_restore_then_predict_serves_what_it_served(api, trained):  # type: ignore[no-untyped-def]
    for kind in ("st_a", "fusion"):
        adapter_id = trained[kind]
        before = served(api, adapter_id)
        assert api.client.post(f"/v1/adapters/{adapter_id}/archive", headers=api.h()).status_code == 200
        r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": adapter_id, "inputs": [{"text": "x"}]})
        assert r.status_code == 404 and r.json()["type"].endswith("archived"), r.text
        r = api.client.post(f"/v1/adapters/{adapter_id}/restore", headers=api.h())
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        torch.testing.assert_close(served(api, adapter_id), before, atol=1e-6, rtol=0, msg=kind)
        assert adapter_id in {m["id"] for m in api.client.get("/v1/adapters/loaded", headers=api.h()).json()}
        r = api.client.post(f"/v1/adapters/{adapter_id}/restore", headers=api.h())
        assert r.status_code == 409, r.text  # not archived: nothing to restore
