"""Rows of every kind in one forward: adapters of any kind (bottleneck, Compacter, LoRA, AdaLoRA, (IA)³, BitFit,
diff), soft prompts, P-tuning prompts, prefixes and plain-base rows, each row through its own head.

Adapter rows route through the composition (`BatchSplit`) as they do alone. A prompt row changes what the
encoder sees, so the batch gets a per-row layout (`layout`):

- a shallow prompt of length L (PEFT's, inserted before the position embeddings) fills slots 0..L-1 of its row's
  input embeddings, its tokens follow at L; positions count from 0 over prompt and tokens, as alone;
- an AdapterHub prompt (inserted after the embeddings' LayerNorm) takes slots 0..L-1 too, but its tokens keep
  positions 0.. and the prompt overwrites its slots of the embedding output (`Scope.overwrite`);
- a prefix (deep prompt) of length P is its row's keys and values in front of every layer's attention: one
  cache of the longest prefix for the whole batch, a row's unused cache slots masked out; its tokens' positions
  start at P (PEFT) or 0 (AdapterHub, `positions="from_zero"`);
- an adapter or plain row keeps its tokens at 0 and masks every prompt or cache slot.

Masked slots add exactly nothing to a row's attention, so each row computes what it computes alone (up to
float32 reassociation in GEMMs of another shape). The hidden states come back aligned: each row's real tokens
from slot 0 (`Laid.aligned`), and slot 0 of the laid-out sequence (`Laid.first`, PEFT's first_token pooling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from composer.composition import BatchSplit, Single
from composer.errors import ConfigError
from composer.heads import pool
from composer.injection import FAMILIES
from composer.method import Models, Prediction

ROWS = ("rows", "")  # the serving group whose rows share this forward (`MethodKind.group`)
# execution plans (`predict_rows(plan=)`): every row in one forward, or one forward per layout (the rows of each
# shallow-prompt length apart from the rest, which then carry no prompt slots). They differ in speed only; the
# runtime measures them per shape (`composer.planner`): on the CPU a forward's fixed cost is small beside the
# cost of prompt slots on every row; on a GPU the reverse can hold.
ONE, BY_LAYOUT = "one", "by_layout"
PLANS = (ONE, BY_LAYOUT)


@dataclass
class Laid:
    """One batch laid out for its rows' prompts: the encoder's inputs, and where each row's tokens start."""

    inputs: dict[str, Any]  # inputs_embeds, attention_mask, position_ids (token_type_ids, cache)
    overwrite: list[tuple[torch.Tensor, torch.Tensor]]  # (rows, [L, H]): those rows' first L embedding-output slots
    starts: torch.Tensor  # [B]: the slot of each row's first real token
    width: int  # the tokens' padded width T

    def aligned(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, H]: each row's real tokens from slot 0 (a row without a shallow prompt is already so)."""
        if not bool(self.starts.any()):
            return hidden[:, : self.width]
        index = self.starts.unsqueeze(1) + torch.arange(self.width, device=hidden.device)  # [B, T]
        return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def layout(base: Any, batch: dict[str, torch.Tensor], prompts: Sequence[Any | None]) -> Laid:
    """`batch` (right-padded ids, mask, token types) with row i under `prompts[i]` (a `SoftPrompt`, or None).
    Whole-batch ops, and one per distinct prompt: nothing per row."""
    model, family = base.model, base.family
    ids, mask = batch["input_ids"], batch["attention_mask"]
    types = batch.get("token_type_ids")
    b, t = ids.shape
    dev = ids.device
    groups: dict[Any, list[int]] = {}  # each distinct prompt and its rows
    for i, prompt in enumerate(prompts):
        if prompt is not None:
            groups.setdefault(prompt, []).append(i)
    plan = [(g.cfg, g.value().detach(), torch.tensor(rows, device=dev)) for g, rows in groups.items()]
    shallow, deep, after = (torch.zeros(b, dtype=torch.long, device=dev) for _ in range(3))
    hub = torch.zeros(b, dtype=torch.bool, device=dev)  # rows whose prompt follows the embeddings' LayerNorm
    for cfg, _, rows in plan:
        (shallow if cfg.kind == "shallow" else deep)[rows] = cfg.length
        if cfg.kind == "shallow" and cfg.insertion != "input_embeds":
            hub[rows] = True
        if cfg.kind == "deep" and cfg.positions == "after_prefix":  # a prefix the tokens' positions follow
            after[rows] = cfg.length
    s, p = int(shallow.max()), int(deep.max())
    width = s + t
    words = model.get_input_embeddings()
    slots = torch.arange(width, device=dev).expand(b, -1)
    dest = shallow.unsqueeze(1) + torch.arange(t, device=dev)  # [B, T]: where each row's tokens go
    embeds = torch.zeros(b, width, words.embedding_dim, dtype=words.weight.dtype, device=dev)
    embeds.scatter_(1, dest.unsqueeze(-1).expand(-1, -1, words.embedding_dim), words(ids))
    seq_mask = (slots < shallow.unsqueeze(1)).to(mask.dtype).scatter_(1, dest, mask)
    overwrite: list[tuple[torch.Tensor, torch.Tensor]] = []
    for cfg, value, rows in plan:
        if cfg.kind == "shallow" and cfg.insertion == "input_embeds":
            embeds[rows, : cfg.length] = value.to(embeds.dtype)
        elif cfg.kind == "shallow":
            overwrite.append((rows, value))
    # positions: a hub prompt's tokens from 0 (its slots' positions are never read), a prefix's after it or from 0
    positions = torch.where(hub.unsqueeze(1), (slots - shallow.unsqueeze(1)).clamp(min=0), slots) + after.unsqueeze(1)
    spec = FAMILIES[family]
    first = model.config.pad_token_id + 1 if spec.positions_after_padding else 0
    limit = model.config.max_position_embeddings - 1  # past a row's end only padding, which is masked
    inputs: dict[str, Any] = {"inputs_embeds": embeds, "position_ids": (positions + first).clamp(max=limit)}
    if family != "distilbert":
        tt = torch.zeros(b, width, dtype=torch.long, device=dev)
        inputs["token_type_ids"] = tt.scatter_(1, dest, types) if types is not None else tt
    if p:
        inputs["cache"] = _cache(model, [(v, rows, cfg.length) for cfg, v, rows in plan if cfg.kind == "deep"], b, p)
        prefix_mask = (torch.arange(p, device=dev).expand(b, -1) < deep.unsqueeze(1)).to(mask.dtype)
        seq_mask = torch.cat([prefix_mask, seq_mask], dim=1)
    inputs["attention_mask"] = seq_mask
    return Laid(inputs, overwrite, shallow, t)


def _cache(model: Any, prefixes: list[tuple[torch.Tensor, torch.Tensor, int]], b: int, p: int) -> Any:
    """Every layer's prefix keys and values [B, heads, P, d]: each deep prompt's own on its rows (`prefixes`:
    value [layers, 2, L, H], rows, L), zeros (masked) elsewhere."""
    from transformers import DynamicCache

    cfg = model.config
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    layers = cfg.num_hidden_layers
    kv = prefixes[0][0].new_zeros(b, layers, 2, p, hidden)
    for value, rows, length in prefixes:
        kv[rows, :, :, :length] = value
    cache = DynamicCache()
    for layer in range(layers):
        per = kv[:, layer].reshape(b, 2, p, heads, hidden // heads).transpose(2, 3)  # [B, 2, heads, P, d]
        cache.update(per[:, 0], per[:, 1], layer)
    return cache


def rows_through_heads(
    names: Sequence[str], hidden: torch.Tensor, mask: torch.Tensor, heads: Any, first: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Each row's own head on its own hidden states (`hidden` aligned: real tokens from slot 0). The pooling runs
    once for all rows (per pooling kind the heads use); each distinct head then classifies its rows' pooled
    vectors. `first`: slot 0 of the laid-out sequence, which PEFT's first_token pooling reads (a shallow
    prompt's first vector); without prompts it is the first token."""

    def pooled(how: str) -> torch.Tensor:
        return first if how == "first_token" and first is not None else pool(hidden, mask, how)

    distinct = list(dict.fromkeys(names))
    if len(distinct) == 1:
        head = heads[distinct[0]]
        return list(head.classify(pooled(head.cfg.pooling)).float().cpu())
    by_pooling = {p: pooled(p) for p in {heads[n].cfg.pooling for n in distinct}}
    out: list[torch.Tensor | None] = [None] * len(names)
    for name in distinct:
        idx = [i for i, n in enumerate(names) if n == name]
        module = heads[name]
        rows = by_pooling[module.cfg.pooling].index_select(0, torch.tensor(idx, device=hidden.device))
        for i, logits in zip(idx, module.classify(rows).float().cpu(), strict=True):
            out[i] = logits
    return out  # type: ignore[return-value]


class _Heads:
    """Heads by module name across the adapter and prompt families (module ids are unique on a resident)."""

    def __init__(self, models: Models) -> None:
        self.encoder, self.prompts = models.encoder.heads, models.prompts.heads

    def __getitem__(self, name: str) -> Any:
        return self.prompts[name] if name in self.prompts else self.encoder[name]


def _layout_class(models: Models, name: str) -> int:
    """The slots a row under `name` adds in front of its tokens: a shallow prompt's length, else 0."""
    prompt = models.prompts.prompts[name] if name in models.prompts.prompts else None
    return prompt.cfg.length if prompt is not None and prompt.cfg.kind == "shallow" else 0  # type: ignore[union-attr]


def plan_key(models: Models, names: Sequence[str]) -> tuple[int, ...] | None:
    """What the plans' speeds depend on beyond the batch's shape (the layouts present), or None when the plans
    coincide (one layout)."""
    classes = sorted({_layout_class(models, n) for n in names})
    return tuple(classes) if len(classes) > 1 else None


def predict_rows(models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], plan: str = ONE) -> Prediction:
    """Row i under module names[i]: any adapter of the encoder, or any soft prompt or prefix of the prompt
    model, in one forward (`plan` ONE) or one per layout (BY_LAYOUT). The rows run ordered by module, so that
    each module's rows are one slice of the batch (`composer.runs`); the answers come back in the request's
    order."""
    if plan not in PLANS:
        raise ConfigError(f"unknown execution plan {plan!r}; known: {list(PLANS)}")
    if plan == BY_LAYOUT and plan_key(models, names) is not None:
        classes: dict[int, list[int]] = {}
        for i, n in enumerate(names):
            classes.setdefault(_layout_class(models, n), []).append(i)
        logits: list[torch.Tensor | None] = [None] * len(names)
        for idx in classes.values():
            index = torch.tensor(idx, device=batch["input_ids"].device)
            sub = {k: v.index_select(0, index) for k, v in batch.items()}
            width = max(1, int(sub["attention_mask"].sum(1).max()))  # cut to these rows' own longest input
            got = _ordered(models, [names[i] for i in idx], {k: v[:, :width] for k, v in sub.items()})
            for j, i in enumerate(idx):
                logits[i] = got.logits[j]
        return Prediction(logits)  # type: ignore[arg-type]
    return _ordered(models, names, batch)


def _ordered(models: Models, names: Sequence[str], batch: dict[str, torch.Tensor]) -> Prediction:
    first = {n: i for i, n in reversed(list(enumerate(names)))}
    order = sorted(range(len(names)), key=lambda i: first[names[i]])  # stable: by module, in order of appearance
    if order == list(range(len(names))):
        return _predict_rows(models, names, batch)
    index = torch.tensor(order, device=batch["input_ids"].device)
    got = _predict_rows(models, [names[i] for i in order], {k: v.index_select(0, index) for k, v in batch.items()})
    logits: list[torch.Tensor | None] = [None] * len(names)
    for j, i in enumerate(order):
        logits[i] = got.logits[j]
    return Prediction(logits)  # type: ignore[arg-type]


def _predict_rows(models: Models, names: Sequence[str], batch: dict[str, torch.Tensor]) -> Prediction:
    enc, prompts = models.encoder, models.prompts.prompts
    unknown = sorted({n for n in names if n not in prompts and n not in enc.adapters})
    if unknown:
        raise ConfigError(f"unknown modules {unknown}")
    adapters = tuple(None if n in prompts else n for n in names)
    if all(a is None for a in adapters):
        comp = None
    else:
        comp = Single(names[0]) if len(set(adapters)) == 1 else BatchSplit(adapters)
    dev = enc.device
    batch = {k: v.to(dev) for k, v in batch.items()}
    mask = batch["attention_mask"]
    if not any(n in prompts for n in names):
        hidden = enc(**batch, composition=comp).hidden
        return Prediction(rows_through_heads(names, hidden, mask, enc.heads))
    laid = layout(models.base, batch, [prompts[n] if n in prompts else None for n in names])
    hidden = enc.encode_laid(laid.inputs, laid.overwrite, enc.scope(comp))
    return Prediction(rows_through_heads(names, laid.aligned(hidden), mask, _Heads(models), first=hidden[:, 0]))


class InRows:
    """The serving face of the kinds whose rows share this forward (adapters of every method, the prompt family):
    their group, their plans, and their predict."""

    plans = PLANS

    def group(self, name: str) -> tuple[str, str]:
        return ROWS

    def plan_key(self, models: Models, names: Sequence[str]) -> Any:
        return plan_key(models, names)

    def predict(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], return_attention: bool = False
    ) -> Prediction:
        return predict_rows(models, names, batch)

    def predict_planned(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], plan: str
    ) -> Prediction:
        return predict_rows(models, names, batch, plan)
