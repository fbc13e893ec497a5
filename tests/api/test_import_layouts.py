"""The layouts AdapterHub 1.3.0 and PEFT 0.21.2 really write (built by scripts/parity/make_fixtures.py and
make_layouts.py in the parity venv, checked in), each imported over HTTP: it serves the reference's
probabilities to 1e-5, or is refused with a 422 that names what is missing, leaving nothing registered
and no blob behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file

from api.archives import make_zip
from service.catalog import register_base_model
from tests.conftest import FIXTURES, write_tokenizer

PARITY = FIXTURES / "parity"
INPUTS = json.loads((PARITY / "layouts_inputs.json").read_text())
EXPECTED = load_file(PARITY / "layouts" / "expected.safetensors")
HUB_LABELS = ["LABEL_0", "LABEL_1", "LABEL_2"]  # add_classification_head's default id2label
TONE = ["neg", "neu", "pos"]
PEFT_LABELS = ["no", "yes"]  # the PEFT fixtures' classifier has BertConfig's default two classes


def folder(rel: str, prefix: str = "") -> dict[str, bytes]:
    root = PARITY / rel
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def without(files: dict[str, bytes], path: str) -> dict[str, bytes]:
    assert path in files, sorted(files)
    return {k: v for k, v in files.items() if k != path}


@dataclass
class Layout:
    files: Callable[[], dict[str, bytes]]
    labels: list[str]
    base: str = "base"  # the parity base (AdapterHub) or "peft_base" (PEFT SEQ_CLS, with a pooler)
    want: str | None = None  # the reference's probabilities (text/<layout>), or None: refused
    refused: list[str] = field(default_factory=list)  # words the 422's detail must hold
    kind: str | None = None


LAYOUTS = {
    "st_a adapterhub, head saved with it": Layout(
        lambda: folder("adapters/with_head"), HUB_LABELS, want="adapters/with_head", kind="st_a"
    ),
    "lora adapterhub, head saved with it": Layout(
        lambda: folder("lora/adapterhub"), HUB_LABELS, want="lora/adapterhub", kind="lora"
    ),
    "lora peft SEQ_CLS (q, v)": Layout(
        lambda: folder("lora/peft_qv"), PEFT_LABELS, "peft_base", want="lora/peft_qv", kind="lora"
    ),
    "lora peft SEQ_CLS (rslora, all linears, one layer)": Layout(
        lambda: folder("lora/peft_wide"), PEFT_LABELS, "peft_base", want="lora/peft_wide", kind="lora"
    ),
    "prompt tuning peft SEQ_CLS": Layout(
        lambda: folder("prompts/peft"), PEFT_LABELS, "peft_base", want="prompts/peft", kind="soft_prompt"
    ),
    "fusion, head in the fusion folder": Layout(
        lambda: folder("fusions/with_head", "shipped/"), TONE, want="fusions/with_head", kind="fusion"
    ),
    "fusion, head with the target member": Layout(
        lambda: folder("layouts/head_in_member"), TONE, want="layouts/head_in_member", kind="fusion"
    ),
    "fusion, heads in the fusion folder and a member": Layout(
        lambda: folder("layouts/head_in_both"), TONE, want="layouts/head_in_both", kind="fusion"
    ),
    "fusion, no head anywhere": Layout(lambda: folder("fusions/seq_bn"), TONE, refused=["no head", "with_head=True"]),
    "fusion, two members with heads": Layout(
        lambda: folder("layouts/two_member_heads"), TONE, refused=["sentiment/", "topic/", "not clear"]
    ),
    "fusion, a member folder without its weights": Layout(
        lambda: without(folder("layouts/head_in_member"), "topic/adapter.safetensors"),
        TONE,
        refused=["member topic/", "adapter.safetensors"],
    ),
    "st_a adapterhub without a head": Layout(lambda: folder("adapters/seq_bn"), TONE, refused=["no head"]),
    "prompt tuning adapterhub without a head": Layout(lambda: folder("prompts/adapterhub"), TONE, refused=["no head"]),
    "st_a whose head has 3 classes, for a 2-label task": Layout(
        lambda: folder("adapters/with_head"), ["LABEL_0", "LABEL_1"], refused=["!= task labels"]
    ),
}


@pytest.fixture()
def bases(api, tmp_path):  # type: ignore[no-untyped-def]
    """The two parity bases, with the tests' tokenizer, registered with the API's registry."""
    out = {}
    for name, rel in (("base", "base"), ("peft_base", "prompts/peft_base")):
        d = tmp_path / name
        shutil.copytree(PARITY / rel, d)
        write_tokenizer(d)
        out[name] = register_base_model(api.registry, d, name=f"parity-{name}")[0].id
    return out


def _state(api, tmp_path):  # type: ignore[no-untyped-def]
    items = api.client.get("/v1/adapters", headers=api.h()).json()["items"]
    return sorted(a["id"] for a in items), sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file())


def _probs(api, adapter_id: str, labels: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    body = {"adapter": adapter_id, "inputs": [{"text": t} for t in INPUTS["texts"]]}
    r = api.client.post("/v1/predict", headers=api.h(), json=body)
    assert r.status_code == 200, r.text
    return torch.tensor([[o["probabilities"][label] for label in labels] for o in r.json()["outputs"]])


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_a_layout_imports_and_serves_the_reference_or_is_refused_naming_what_is_missing(api, bases, tmp_path, case):  # type: ignore[no-untyped-def]
    layout = LAYOUTS[case]
    task = {"name": "t", "kind": "classification", "labels": layout.labels}
    assert api.client.post("/v1/tasks", headers=api.h(), json=task).status_code == 201
    before = _state(api, tmp_path)
    r = api.client.post(
        "/v1/adapters/import",
        headers=api.h(),
        data={"task": "t", "base_model": bases[layout.base]},
        files={"file": ("layout.zip", make_zip(layout.files()))},
    )
    if layout.want is None:
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        for word in layout.refused:
            assert word in r.json()["detail"], (word, r.json()["detail"])
        assert _state(api, tmp_path) == before  # nothing registered, no blob left behind
        return
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == layout.kind
    want = EXPECTED[f"text/{layout.want}"]
    assert (want - want.mean(0)).abs().max() > 5e-5  # the rows differ by 5x the tolerance: a mixup fails
    torch.testing.assert_close(_probs(api, r.json()["id"], layout.labels), want, atol=1e-5, rtol=0)


def test_the_tests_tokenizer_still_writes_the_ids_the_references_ran_on(tmp_path):
    from transformers import AutoTokenizer

    write_tokenizer(tmp_path)
    enc = AutoTokenizer.from_pretrained(tmp_path)(INPUTS["texts"], padding=True)
    assert [enc[k] for k in ("input_ids", "attention_mask")] == [INPUTS["input_ids"], INPUTS["attention_mask"]]


def test_a_fusions_member_keeps_the_head_it_lends_and_a_headless_member_says_so(api, bases):  # type: ignore[no-untyped-def]
    task = {"name": "t", "kind": "classification", "labels": TONE}
    assert api.client.post("/v1/tasks", headers=api.h(), json=task).status_code == 201
    r = api.client.post(
        "/v1/adapters/import",
        headers=api.h(),
        data={"task": "t", "base_model": bases["base"]},
        files={"file": ("f.zip", make_zip(folder("layouts/head_in_member")))},
    )
    assert r.status_code == 201, r.text
    assert r.json()["head_from"] == "sentiment/"
    members = {m["name"]: m["id"] for m in r.json()["imported_members"]}
    body = {"adapter": members["sentiment"], "inputs": [{"text": "good movie"}]}
    out = api.client.post("/v1/predict", headers=api.h(), json=body)
    assert out.status_code == 200 and set(out.json()["outputs"][0]["probabilities"]) == set(TONE), out.text
    body["adapter"] = members["topic"]
    out = api.client.post("/v1/predict", headers=api.h(), json=body)
    assert out.status_code == 422 and "no head" in out.json()["detail"], out.text
