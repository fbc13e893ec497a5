"""Prompt tuning equals AdapterHub `adapters` 1.3.0, and an imported PEFT prompt gives PEFT's logits."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from composer.base import load_base
from composer.prompts.artifacts import from_files, import_adapterhub_prompt, import_peft_prompt, to_files
from composer.prompts.model import PromptModel
from composer.prompts.prompt import encode_prompted
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"


def test_adapterhub_prompt_tuning_hidden_states():
    ref, x = load_file(PARITY / "expected.safetensors"), load_file(PARITY / "inputs.safetensors")
    art = import_adapterhub_prompt(PARITY / "prompts" / "adapterhub")
    assert art.config.insertion == "embedding_output" and art.prompt.shape == (5, 32)
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    b = x["input_ids"].shape[0]
    with torch.no_grad():
        hidden = encode_prompted(
            base,
            x["input_ids"],
            x["attention_mask"],
            x["token_type_ids"],
            art.prompt.expand(b, -1, -1),
            art.config.insertion,
        )
    assert hidden.shape == ref["prompt/adapterhub"].shape == (3, 15, 32)
    # Row 0 has no padding: identical to the reference's batch output.
    torch.testing.assert_close(hidden[0], ref["prompt/adapterhub"][0], atol=1e-5, rtol=0)
    # Padded rows: adapters 1.3.0 lets padding leak into a prompted row (its prefix attention mask is
    # wrong under sdpa), so its batch output differs from the same row alone. Ours does not: every
    # row equals the reference run on that row alone, unpadded.
    for i in range(b):
        n = 5 + int(x["attention_mask"][i].sum())
        alone = ref[f"prompt/adapterhub_row{i}"]
        torch.testing.assert_close(hidden[i, :n], alone, atol=1e-5, rtol=0)
    assert (ref["prompt/adapterhub"][2, :9] - ref["prompt/adapterhub_row2"]).abs().max() > 1e-2  # the bug is real


def test_peft_prompt_import_gives_peft_logits():
    ref, x = load_file(PARITY / "expected.safetensors"), load_file(PARITY / "inputs.safetensors")
    art = import_peft_prompt(PARITY / "prompts" / "peft", base_dir=PARITY / "prompts" / "peft_base")
    assert art.config.insertion == "input_embeds" and art.head is not None
    model = PromptModel(load_base(PARITY / "prompts" / "peft_base", with_tokenizer=False, device="cpu")).eval()
    name = model.attach(art)
    with torch.no_grad():
        logits = model.logits([name], x)[:, 0]
    assert (ref["prompt/peft_logits"]).abs().max() > 1e-2
    torch.testing.assert_close(logits, ref["prompt/peft_logits"], atol=1e-5, rtol=0)
    # and our own format round-trips it exactly
    art2 = from_files(*to_files(art))
    model2 = PromptModel(load_base(PARITY / "prompts" / "peft_base", with_tokenizer=False, device="cpu")).eval()
    with torch.no_grad():
        assert torch.equal(model2.logits([model2.attach(art2)], x)[:, 0], logits)
