"""An AdapterHub fusion saved with its members (a folder per member, one for the fusion and its head)
imports as members + fusion and gives AdapterHub's probabilities; unclear archives are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import kinds
from composer.base import load_base
from composer.composition import Fuse
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError
from composer.method import Models
from composer.prompts.model import PromptModel
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"
ARCHIVE = PARITY / "fusions" / "with_head"


def archive_files(root=ARCHIVE, prefix: str = "") -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("prefix", ["", "my_fusion/"])
def test_fusion_archive_gives_adapterhub_probabilities(prefix):
    plan = kinds.plan_archive(archive_files(prefix=prefix))
    assert plan.single is None and list(plan.members) == [f"{prefix}sentiment", f"{prefix}topic", f"{prefix}nli"]
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    models = Models(base, AdaptedEncoder(base).eval(), PromptModel(base))
    names = []
    for folder, files in plan.members.items():
        face, source = kinds.detect(files)
        assert (face.name, source) == ("st_a", "adapterhub")
        face.attach(models, face.import_files(files, None), folder)
        names.append(folder)
    fusion = kinds.get("fusion")
    art = fusion.import_files(plan.fusion, None)
    assert art.labels == ["neg", "neu", "pos"] and art.head is not None
    fusion.attach(models, art, "f", names)
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        probs = models.encoder(**x, head="f", composition=Fuse("f")).logits.softmax(-1)
    ref = load_file(PARITY / "expected.safetensors")["fusion/with_head_probs"]
    assert (ref - ref.mean(0)).abs().max() > 1e-3
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=0)


def test_unclear_archives_are_refused_listing_what_they_hold():
    files = archive_files()
    two = {k: v for k, v in files.items() if k.startswith(("sentiment/", "topic/"))}
    with pytest.raises(ArtifactError, match=r"sentiment/: st_a \(adapterhub\).*topic/: st_a"):
        kinds.plan_archive(two)
    short = {k: v for k, v in files.items() if not k.startswith("nli/")}
    with pytest.raises(ArtifactError, match="missing: \\['nli'\\]"):
        kinds.plan_archive(short)
    one = {k: v for k, v in files.items() if k.startswith("topic/")}
    assert kinds.plan_archive(one).single is not None
