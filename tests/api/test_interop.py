"""Interop over HTTP: an AdapterHub fusion archive (members + fusion) imports with lineage and serves
AdapterHub's numbers; unclear archives are refused listing what they hold; downloads in AdapterHub and
PEFT layouts import back to the same answers, and what a layout cannot hold is a 422."""

from __future__ import annotations

import io
import shutil
import zipfile

import torch

from api.archives import make_zip
from composer import kinds
from composer.base import load_base
from composer.composition import Fuse
from composer.encoder import AdaptedEncoder
from composer.method import Models
from composer.prompts.model import PromptModel
from service.catalog import register_base_model
from tests.api.conftest import ADMIN
from tests.conftest import FIXTURES, write_tokenizer

ARCHIVE = FIXTURES / "parity" / "fusions" / "with_head"
TEXTS = ["good movie", "a bad and boring plot", "fine", "great acting but awful ending"]


def _unzip(data: bytes) -> dict[str, bytes]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    return {n: zf.read(n) for n in zf.namelist()}


def _archive(prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(ARCHIVE).as_posix(): p.read_bytes() for p in ARCHIVE.rglob("*") if p.is_file()}


def _oracle(base_dir, files: dict[str, bytes]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """AdapterHub's fusion (parity-tested in tests/composer) on a fresh model, per text."""
    plan = kinds.plan_archive(files)
    base = load_base(base_dir)
    models = Models(base, AdaptedEncoder(base).eval(), PromptModel(base))
    for folder, fs in plan.members.items():
        face, _ = kinds.detect(fs)
        face.attach(models, face.import_files(fs, None), folder)
    kinds.get("fusion").attach(models, kinds.get("fusion").import_files(plan.fusion, None), "f", list(plan.members))
    out = []
    for t in TEXTS:
        with torch.no_grad():
            batch = dict(base.tokenizer([t], return_tensors="pt"))
            out.append(models.encoder(**batch, head="f", composition=Fuse("f")).logits[0].softmax(-1))
    return torch.stack(out)


def _probs(api, adapter_id: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    r = api.client.post(
        "/v1/predict", headers=api.h(), json={"adapter": adapter_id, "inputs": [{"text": t} for t in TEXTS]}
    )
    assert r.status_code == 200, r.text
    return torch.tensor([list(o["probabilities"].values()) for o in r.json()["outputs"]])


def test_adapterhub_fusion_archive_imports_with_members_and_round_trips(api, tmp_path):
    base_dir = tmp_path / "parity-base"
    shutil.copytree(FIXTURES / "parity" / "base", base_dir)
    write_tokenizer(base_dir)
    base_row, _ = register_base_model(api.registry, base_dir, name="parity-base")
    r = api.client.post(
        "/v1/tasks", headers=api.h(), json={"name": "tone", "kind": "classification", "labels": ["neg", "neu", "pos"]}
    )
    assert r.status_code == 201

    def upload(files: dict[str, bytes]):  # type: ignore[no-untyped-def]
        return api.client.post(
            "/v1/adapters/import",
            headers=api.h(),
            data={"task": "tone", "base_model": base_row.id},
            files={"file": ("fusion.zip", make_zip(files))},
        )

    before = len(api.client.get("/v1/adapters", headers=api.h()).json()["items"])
    two = {k: v for k, v in _archive().items() if k.startswith(("sentiment/", "topic/"))}
    r = upload(two)
    assert r.status_code == 422 and "sentiment/: st_a (adapterhub)" in r.json()["detail"], r.text
    assert len(api.client.get("/v1/adapters", headers=api.h()).json()["items"]) == before

    files = _archive("my-fusion/")
    r = upload(files)
    assert r.status_code == 201, r.text
    fusion = r.json()
    assert fusion["kind"] == "fusion" and len(fusion["members"]) == 3
    assert [m["name"] for m in fusion["imported_members"]] == ["sentiment", "topic", "nli"]
    info = api.client.get(f"/v1/adapters/{fusion['id']}", headers=api.h()).json()
    assert info["members"] == fusion["members"]
    want = _oracle(base_dir, files)
    torch.testing.assert_close(_probs(api, fusion["id"]), want, atol=2e-6, rtol=0)

    # download in AdapterHub's layout (members beside the fusion) and import it again: same answers
    z = api.client.get(f"/v1/adapters/{fusion['id']}/download?format=adapterhub", headers=api.h())
    assert z.status_code == 200, z.text
    exported = _unzip(z.content)
    assert {p.split("/")[0] for p in exported} == {"sentiment", "topic", "nli", "fusion"}
    r = upload(exported)
    assert r.status_code == 201, r.text
    torch.testing.assert_close(_probs(api, r.json()["id"]), want, atol=2e-6, rtol=0)
    # a fusion has no PEFT layout
    r = api.client.get(f"/v1/adapters/{fusion['id']}/download?format=peft", headers=api.h())
    assert r.status_code == 422 and "format" in r.json()["detail"]


def test_trained_modules_download_in_reference_layouts(api):
    ids = api.task_with_data()
    lora = api.train_adapter(ids, name="lo", preset="lora", adapter={"r": 2})
    st_a = api.train_adapter(ids)
    # trained heads pool the mean of the tokens, which neither reference has: refused, naming the field ...
    r = api.client.get(f"/v1/adapters/{lora}/download?format=peft", headers=api.h())
    assert r.status_code == 422 and "with_head" in r.json()["detail"]
    # ... unless the caller takes the module without its head
    r = api.client.get(f"/v1/adapters/{lora}/download?format=peft&with_head=false", headers=api.h())
    assert r.status_code == 200
    files = _unzip(r.content)
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors"}
    face, source = kinds.detect(files)
    art = face.import_files(files, None)
    assert (face.name, source, art.head, art.config.r) == ("lora", "peft", None, 2)
    r = api.client.get(f"/v1/adapters/{st_a}/download?format=adapterhub&with_head=false", headers=api.h())
    assert r.status_code == 200 and "adapter_config.json" in _unzip(r.content)
    r = api.client.get(f"/v1/adapters/{st_a}/download?format=peft", headers=api.h())
    assert r.status_code == 422
    r = api.client.get(f"/v1/adapters/{st_a}/download?format=onnx", headers=api.h())
    assert r.status_code == 422


def test_adapterctl_downloads_in_a_chosen_layout(api, adapterctl, tmp_path, capsys):
    client_cli = adapterctl
    ids = api.task_with_data()
    lora = api.train_adapter(ids, name="lo", preset="lora", adapter={"r": 2})
    out = tmp_path / "lora-peft.zip"
    argv = ["--key", ADMIN, "adapters", "download", lora, "--out", str(out), "--format", "peft", "--without-head"]
    assert client_cli.main(argv) == 0
    files = _unzip(out.read_bytes())
    assert kinds.detect(files)[1] == "peft" and "adapter_model.safetensors" in files
