"""The prompt family's kinds through the service: P-tuning and prefix prompts trained by `prompts` jobs register
as their kinds and serve beside soft prompts and adapters, each row against a freshly built model; AdapterHub's
pickled prefix imports over HTTP (weights_only) and serves its numbers; a prompt longer than the base's positions
allow is a 422 at submit."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch

from api.archives import make_zip
from composer.base import load_base
from composer.prompts.model import PromptModel
from registry_db.repo import adapters
from service import artifact_store
from service.catalog import register_base_model
from tests.api.conftest import HP
from tests.conftest import FIXTURES, write_tokenizer

INPUTS = [{"text": "good movie"}, {"text": "a really boring plot"}, {"text": "the food was fresh"}]
PRESETS = {  # preset: (registry kind, prompt fields)
    "prompt_tuning": ("soft_prompt", {"length": 3}),
    "p_tuning": ("p_tuning", {"length": 3, "encoder_hidden": 8}),
    "p_tuning_lstm": ("p_tuning", {"length": 2, "encoder_hidden": 8}),
    "prefix": ("prefix", {"length": 3, "reparam_hidden": 8}),
    "p_tuning_v2": ("prefix", {"length": 2, "positions": "from_zero"}),
}


def _submit(api, ids, preset: str, prompt: dict, hp: dict | None = None):  # type: ignore[no-untyped-def]
    body = {
        "type": "prompts",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "validation_dataset": ids["validation"],
        "k": 1,
        "preset": preset,
        "prompt": prompt,
        "hyperparameters": hp or HP,
    }
    return api.client.post("/v1/jobs", json=body, headers=api.h())


def _fresh_probs(api, ref: str, base_dir) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with api.registry.tx() as s:
        row = adapters.get_adapter(s, ref)
    model = PromptModel(load_base(base_dir)).eval()
    name = model.attach(artifact_store.fetch(api.registry, row))
    out = []
    for i in INPUTS:  # each text alone: what a row of a mixed batch must equal
        batch = dict(model.base.tokenizer([i["text"]], return_tensors="pt"))
        with torch.no_grad():
            out.append(model.logits([name], batch)[0, 0].softmax(-1))
    return torch.stack(out)


def test_prompt_presets_train_register_as_their_kinds_and_serve_together(api, tiny_bert_dir):
    ids = api.task_with_data()
    refs = {}
    for preset, (_, prompt) in PRESETS.items():
        r = _submit(api, ids, preset, prompt)
        assert r.status_code == 202, r.text
        job = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()
        assert job["status"] == "succeeded", job
        refs[preset] = job["result"]["adapter_ids"][0]
    lora = api.train_adapter(ids, name="lora", preset="lora", adapter={"r": 2})
    for preset, ref in refs.items():
        row = api.client.get(f"/v1/adapters/{ref}", headers=api.h()).json()
        assert row["kind"] == PRESETS[preset][0], row
        assert row["method_config"]["config"]["collapsed"] == (preset not in ("prompt_tuning", "p_tuning_v2")), row
    out: dict[str, dict] = {}

    def call(key: str, ref: str) -> None:
        r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": ref, "inputs": INPUTS})
        out[key] = r.json() if r.status_code == 200 else {"error": r.text}

    threads = [threading.Thread(target=call, args=kv) for kv in [*refs.items(), ("lora", lora)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "outputs" in out["lora"], out["lora"]
    for preset, ref in refs.items():
        assert "outputs" in out[preset], out[preset]
        got = torch.tensor([[o["probabilities"]["neg"], o["probabilities"]["pos"]] for o in out[preset]["outputs"]])
        torch.testing.assert_close(got, _fresh_probs(api, ref, tiny_bert_dir), atol=1e-5, rtol=0)


def test_job_options_list_the_prompt_presets(api):
    presets = api.client.get("/v1/jobs/options", headers=api.h()).json()["job_types"]["prompts"]["presets"]
    assert set(presets) == set(PRESETS)
    assert presets["prefix"]["prompt"]["kind"] == "deep" and presets["p_tuning"]["prompt"]["encoder"] == "mlp"


@pytest.mark.parametrize(
    "preset, prompt, hp, word",
    [
        ("prefix", {"length": 60}, {}, "prompt.length"),  # the tiny base has 64 positions
        ("prompt_tuning", {"length": 57}, {}, "prompt.length"),
        ("p_tuning", {"encoder": "gru"}, {}, "encoder"),
        ("prefix", {"positions": "sideways"}, {}, "positions"),
    ],
)
def test_bad_prompt_fields_are_a_422_at_submit_naming_the_field(api, preset, prompt, hp, word):
    ids = api.task_with_data()
    r = _submit(api, ids, preset, prompt, {**HP, **hp})
    assert r.status_code == 422 and word in r.text, r.text
    assert api.client.get("/v1/jobs", headers=api.h()).json()["items"] == []


def test_adapterhubs_pickled_prefix_imports_and_serves_its_numbers(api, tmp_path):
    base_dir = tmp_path / "parity-base"
    shutil.copytree(FIXTURES / "parity" / "base", base_dir)
    write_tokenizer(base_dir)
    base_row, _ = register_base_model(api.registry, base_dir, name="parity-base")
    body = {"name": "tone", "kind": "classification", "labels": ["LABEL_0", "LABEL_1", "LABEL_2"]}
    assert api.client.post("/v1/tasks", headers=api.h(), json=body).status_code == 201
    folder = FIXTURES / "parity" / "methods" / "prefix_hub"
    files = {p.name: p.read_bytes() for p in folder.iterdir()}

    def upload(files: dict[str, bytes]):  # type: ignore[no-untyped-def]
        return api.client.post(
            "/v1/adapters/import",
            headers=api.h(),
            data={"task": "tone", "base_model": base_row.id},
            files={"file": ("prefix.zip", make_zip(files))},
        )

    r = upload(files)
    assert r.status_code == 201, r.text
    ref = r.json()["id"]
    assert api.client.get(f"/v1/adapters/{ref}", headers=api.h()).json()["kind"] == "prefix"
    r = api.client.post(
        "/v1/predict", headers=api.h(), json={"adapter": ref, "inputs": [{"text": "good movie"}, {"text": "bad"}]}
    )
    assert r.status_code == 200, r.text
    model = PromptModel(load_base(base_dir)).eval()
    with api.registry.tx() as s:
        name = model.attach(artifact_store.fetch(api.registry, adapters.get_adapter(s, ref)))
    for text, o in zip(["good movie", "bad"], r.json()["outputs"], strict=True):
        with torch.no_grad():
            want = model.logits([name], dict(model.base.tokenizer([text], return_tensors="pt")))[0, 0].softmax(-1)
        torch.testing.assert_close(torch.tensor(list(o["probabilities"].values())), want, atol=1e-5, rtol=0)
    # a pickle beside a bottleneck adapter, and a prefix pickle that is not plain tensors: 422, nothing registered
    before = len(api.client.get("/v1/adapters", headers=api.h()).json()["items"])
    seq = {p.name: p.read_bytes() for p in (FIXTURES / "parity" / "adapters" / "seq_bn").iterdir()}
    r = upload({**seq, "pytorch_adapter.bin": files["pytorch_adapter.bin"]})
    assert r.status_code == 422 and "pickle" in r.text, r.text
    r = upload({**files, "pytorch_adapter.bin": b"\x80\x04cos\nsystem\n(S'true'\ntR."})
    assert r.status_code == 422 and "adapter.safetensors" in r.text, r.text
    assert len(api.client.get("/v1/adapters", headers=api.h()).json()["items"]) == before
