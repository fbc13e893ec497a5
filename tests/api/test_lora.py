"""LoRA over HTTP: a `"preset": "lora"` job trains and serves, alone and in the same requests as bottleneck
adapters; PEFT LoRA imports serve PEFT's numbers; bad LoRA uploads are refused, naming the field, and
nothing is registered."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from api.archives import make_zip
from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from service.catalog import register_base_model
from tests.conftest import FIXTURES, write_tokenizer

PEFT = FIXTURES / "parity" / "lora" / "peft_qv"
TEXTS = ["good movie", "a bad and boring plot", "fine", "great acting but awful ending"]


def _download(api, adapter_id: str):  # type: ignore[no-untyped-def]
    z = api.client.get(f"/v1/adapters/{adapter_id}/download", headers=api.h())
    assert z.status_code == 200
    files = {
        n: zipfile.ZipFile(io.BytesIO(z.content)).read(n) for n in zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    }
    face, _ = kinds.detect(files)
    return face.import_files(files, None)


def _oracle(base_dir, art, texts: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Probabilities from a freshly loaded base that has only this module."""
    model = AdaptedEncoder(load_base(base_dir)).eval()
    name = artifacts.attach(model, art)
    out = []
    for t in texts:
        batch = dict(model.base.tokenizer([t], return_tensors="pt"))
        with torch.no_grad():
            out.append(model(**batch, head=name, composition=Single(name)).logits[0].softmax(-1))
    return torch.stack(out)


def _probs(api, adapter_id: str, texts: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    r = api.client.post(
        "/v1/predict", headers=api.h(), json={"adapter": adapter_id, "inputs": [{"text": t} for t in texts]}
    )
    assert r.status_code == 200, r.text
    return torch.tensor([list(o["probabilities"].values()) for o in r.json()["outputs"]])


def test_lora_job_serves_alone_and_beside_bottleneck_adapters(api, tiny_bert_dir):
    ids = api.task_with_data()
    bottleneck = api.train_adapter(ids)
    lora = api.train_adapter(ids, name="lo", preset="lora", adapter={"r": 4, "alpha": 8})
    info = api.client.get(f"/v1/adapters/{lora}", headers=api.h()).json()
    assert info["kind"] == "lora" and info["method_config"]["method"] == "lora"
    assert info["method_config"]["config"]["r"] == 4 and info["param_count"] == 2 * 2 * (4 * 32 + 32 * 4)
    oracles = {a: _oracle(tiny_bert_dir, _download(api, a), TEXTS) for a in (bottleneck, lora)}
    assert (oracles[lora] - oracles[bottleneck]).abs().max() > 1e-4
    # concurrent requests on both kinds: the micro-batcher may put them in one forward
    jobs = [(a, TEXTS[i % 4 :] + TEXTS[: i % 4]) for i, a in enumerate([lora, bottleneck] * 4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: _probs(api, *j), jobs))
    for (a, texts), got in zip(jobs, results, strict=True):
        order = [TEXTS.index(t) for t in texts]
        torch.testing.assert_close(got, oracles[a][order], atol=2e-6, rtol=0)
    # a LoRA is not fusable
    r = api.client.post(
        "/v1/fusions",
        headers=api.h(),
        json={"task": "sentiment", "adapters": [bottleneck, lora], "train_dataset": ids["train"]},
    )
    assert r.status_code == 422 and "lora" in r.json()["detail"]


def test_peft_lora_import_serves_and_bad_uploads_register_nothing(api, tmp_path):
    # the PEFT fixture's base (BERT with a pooler), with a tokenizer so that it serves text
    base_dir = tmp_path / "peft-base"
    shutil.copytree(FIXTURES / "parity" / "prompts" / "peft_base", base_dir)
    write_tokenizer(base_dir)
    base_row, _ = register_base_model(api.registry, base_dir, name="peft-base")
    for name, labels in (("two", ["a", "b"]), ("three", ["a", "b", "c"])):
        r = api.client.post(
            "/v1/tasks", headers=api.h(), json={"name": name, "kind": "classification", "labels": labels}
        )
        assert r.status_code == 201
    files = {p.name: p.read_bytes() for p in PEFT.iterdir()}

    def upload(files: dict[str, bytes], base: str = base_row.id, task: str = "two"):  # type: ignore[no-untyped-def]
        return api.client.post(
            "/v1/adapters/import",
            headers=api.h(),
            data={"task": task, "base_model": base},
            files={"file": ("peft.zip", make_zip(files))},
        )

    r = upload(files)
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["format"]) == ("lora", "peft")
    art = kinds.get("lora").import_files(files, str(base_dir))
    torch.testing.assert_close(_probs(api, r.json()["id"], TEXTS), _oracle(base_dir, art, TEXTS), atol=2e-6, rtol=0)

    before = len(api.client.get("/v1/adapters", headers=api.h()).json()["items"])
    config = json.loads(files["adapter_config.json"])
    weights = load_safetensors(files["adapter_model.safetensors"])
    other_arch = {k.replace(".bert.", ".electra."): v for k, v in weights.items()}
    wider = {k: torch.zeros(v.shape[0], 64) if "lora_A" in k else v for k, v in weights.items()}
    bad = [
        ({"adapter_config.json": json.dumps({**config, "r": 0}).encode()}, "r"),
        ({"adapter_config.json": json.dumps({**config, "r": -1}).encode()}, "r"),
        ({"adapter_config.json": json.dumps({**config, "target_modules": "q.*"}).encode()}, "target_modules"),
        ({"adapter_config.json": json.dumps({**config, "use_dora": True}).encode()}, "use_dora"),
        ({"adapter_model.safetensors": save_safetensors(other_arch)}, "electra"),
        ({"adapter_model.safetensors": save_safetensors(wider)}, "hidden size"),
        ({"adapter_model.bin": b"\x80\x04K\x01."}, "pickle"),
    ]
    for change, word in bad:
        r = upload({**files, **change})
        assert r.status_code == 422, (word, r.text)
        assert word in r.json()["detail"], (word, r.json())
    r = upload(files, task="three")
    assert r.status_code == 422 and "2 classes" in r.json()["detail"]
    # made for the other base (no pooler: the SEQ_CLS classifier cannot be reproduced there)
    r = upload(files, base=api.base_id)
    assert r.status_code == 422 and "pooler" in r.json()["detail"]
    assert len(api.client.get("/v1/adapters", headers=api.h()).json()["items"]) == before
