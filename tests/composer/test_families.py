"""Injection works for every supported family: sites see the right (x, r) and change nothing when inert."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from composer.presets import preset

COMMON = dict(vocab_size=50, max_position_embeddings=40)
CONFIGS = {
    "bert": BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **COMMON),
    "roberta": RobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **COMMON
    ),
    "xlm-roberta": XLMRobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **COMMON
    ),
    "electra": ElectraConfig(
        embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **COMMON
    ),
    "distilbert": DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48, **COMMON),
}


@pytest.fixture(params=sorted(CONFIGS))
def family_dir(request, tmp_path):
    torch.manual_seed(0)
    AutoModel.from_config(CONFIGS[request.param]).save_pretrained(tmp_path)
    return request.param, tmp_path


def batch():
    ids = torch.tensor([[3, 7, 9, 11, 4, 2], [3, 8, 12, 2, 1, 1]])
    return {"input_ids": ids, "attention_mask": (ids != 1).long()}


def test_inert_sites_reproduce_the_plain_encoder(family_dir):
    family, d = family_dir
    plain = AutoModel.from_pretrained(d).eval()
    with torch.no_grad():
        expected = plain(**batch()).last_hidden_state
    model = AdaptedEncoder(load_base(d, with_tokenizer=False, device="cpu")).eval()
    assert model.base.family == family
    with torch.no_grad():
        assert torch.equal(model(**batch()).hidden, expected)  # no composition active
        # Houlsby at both placements with a zero up-projection is the identity, exactly when the
        # site sees the true sublayer output and residual.
        model.add_adapter("h", preset("double_seq_bn", reduction_factor=4, init_weights="mam_adapter"))
        torch.testing.assert_close(model(**batch(), composition=Single("h")).hidden, expected, atol=1e-6, rtol=0)
        for p in model.adapters["h"].parameters():
            p.normal_(0, 0.3)
        assert (model(**batch(), composition=Single("h")).hidden - expected).abs().max() > 1e-2
        assert torch.equal(model(**batch()).hidden, expected)  # and nothing stays behind on the layers


def test_gradients_reach_every_site(family_dir):
    _, d = family_dir
    model = AdaptedEncoder(load_base(d, with_tokenizer=False, device="cpu"))
    model.add_adapter("h", preset("double_seq_bn", reduction_factor=4))
    model(**batch(), composition=Single("h")).hidden.pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.adapters["h"].named_parameters()}
    assert len(grads) == 2 * 2 * 4  # 2 layers x 2 placements x (down, up) x (weight, bias)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in model.encoder.parameters())


def test_prompt_rows_share_the_adapters_forward_on_every_family(family_dir):
    """Rows under shallow prompts (before the position embeddings and after the embeddings' LayerNorm), prefixes
    of both position conventions, a LoRA and the plain base in one forward (composer.rows): each row equals its
    own single run, on every family's positions (RoBERTa's start after its padding index); and so under the
    plan that runs each layout apart."""
    from composer.heads import HeadConfig
    from composer.method import Models
    from composer.prompts.model import PromptModel
    from composer.prompts.prompt import PromptConfig
    from composer.rows import BY_LAYOUT, ONE, predict_rows

    family, d = family_dir
    base = load_base(d)
    enc, prompts = AdaptedEncoder(base).eval(), PromptModel(base).eval()
    enc.add_adapter("lora", preset("lora", r=2))
    enc.add_head("lora", HeadConfig(num_labels=3, pooling="mean"))
    enc.add_head("plain", HeadConfig(num_labels=2, pooling="cls"))
    cfgs = {
        "shallow": PromptConfig(length=3),
        "hub": PromptConfig(length=2, insertion="embedding_output"),
        "prefix": PromptConfig(length=4, kind="deep"),
        "zero": PromptConfig(length=2, kind="deep", positions="from_zero"),
    }
    if family == "distilbert":  # no key/value cache: no deep prompts on this family
        cfgs = {k: v for k, v in cfgs.items() if v.kind == "shallow"}
    for i, (name, cfg) in enumerate(cfgs.items()):
        pooling = ("first_token", "mean", "cls")[i % 3]
        prompts.add(name, cfg, HeadConfig(num_labels=2, pooling=pooling))
    with torch.no_grad():
        for p in (*enc.adapters.parameters(), *prompts.parameters()):
            p.add_(torch.randn_like(p) * 0.3)
    models = Models(base=base, encoder=enc, prompts=prompts)
    names = ["lora", *cfgs, "lora", *cfgs][: 2 + 2 * len(cfgs)]
    b = batch()
    ids = b["input_ids"][[i % 2 for i in range(len(names))]]
    rows = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    with torch.no_grad():
        one = predict_rows(models, names, rows, ONE).logits
        by_layout = predict_rows(models, names, rows, BY_LAYOUT).logits
    for i, name in enumerate(names):
        alone = {k: v[i : i + 1, : int(rows["attention_mask"][i].sum())] for k, v in rows.items()}
        with torch.no_grad():
            if name in cfgs:
                want = prompts.logits([name], alone)[0, 0]
            else:
                want = enc(**alone, head=name, composition=Single(name)).logits[0]
        torch.testing.assert_close(one[i], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(by_layout[i], want, atol=1e-5, rtol=0)
