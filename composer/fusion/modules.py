"""AdapterFusion (Pfeiffer et al., 2021): attention over the outputs of N frozen adapters.

Per site: query = the adapter input `h` (the sublayer output after the original LayerNorm,
as AdapterHub's `query_before_ln=False`), keys and values = the N adapters' bottleneck
outputs `u_n`, p = softmax(Q(h)·K(u_n) / T), context = Σ p_n V(u_n), plus the residual.

Efficient and exact:
- the N down-projections run as one GEMM (`StackedSite`), and the N up-projections are
  folded into two more GEMMs without ever building the [tokens, N, H] adapter outputs;
- Q(h)·K(u) = (W_Kᵀ Q(h))·u + Q(h)·b_K, and the last term is the same for every adapter,
  so it cancels in the softmax: K costs one H×H product per token instead of N; at
  inference W_Qᵀ W_K is precomposed into one matrix;
- Σ p_n W_V u_n = W_V Σ p_n u_n: V is applied once, after mixing.

Differences from AdapterHub `adapters` 1.3.0, on purpose: the temperature is a fixed value
saved with the weights (the reference anneals it on every forward, inference included, and
never saves it); the regulariser λ‖I − W_V‖²_F is part of the loss (`regularization()`),
not a trainer callback; fusions are identified by name/id, never by comma-joined names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from composer.bottleneck.modules import BottleneckAdapter
from composer.bottleneck.routing import Handler, LayerNorm
from composer.bottleneck.stacked import StackedSite
from composer.errors import ConfigError
from composer.injection import PLACEMENTS, Placement, site_key

Step = Callable[[torch.Tensor, torch.Tensor, LayerNorm], tuple[torch.Tensor, torch.Tensor, Any]]

PLACEMENT_FIELDS = (
    "mh_adapter",
    "output_adapter",
    "original_ln_before",
    "original_ln_after",
    "residual_before_ln",
    "is_parallel",
    "leave_out",
)
WARM_MARGIN = 12.0  # a warm start's prior on its member: the others get e^-12 of the attention at step 0


@dataclass(frozen=True)
class FusionConfig:
    value: bool = True  # False: static fusion (no V)
    temperature: float = 1.0  # fixed and saved; never annealed
    shared: bool = False  # one fusion module for every site (far fewer parameters)
    regularization: float = 0.01  # λ in λ·Σ‖I − W_V‖²_F, added to the training loss
    dropout: float = 0.1  # on the attention scores, training only

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.regularization < 0:
            raise ConfigError("regularization must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown fusion config fields: {unknown}")
        return cls(**d)

    def build(self, members: list[str], adapters: list[nn.Module]) -> Fusion:
        """A fusion of these attached adapters (`AdaptedEncoder.add_fusion`): bottleneck adapters of one layout."""
        other = [m for m, a in zip(members, adapters, strict=True) if not isinstance(a, BottleneckAdapter)]
        if other:
            raise ConfigError(
                f"LoRA and other non-bottleneck adapters cannot be fused (AdapterFusion fuses bottleneck adapters): {other}"
            )
        check_fusable(adapters)  # type: ignore[arg-type]
        return Fusion(self, members, adapters[0])  # type: ignore[arg-type]


class FusionLayer(nn.Module):
    def __init__(self, hidden_size: int, cfg: FusionConfig, members: int):
        super().__init__()
        self.cfg = cfg
        # A learned score per member, added before the softmax. Zero (AdapterHub's fusion) unless a warm
        # start puts the attention on the target task's own adapter (`warm_start`).
        self.prior = nn.Parameter(torch.zeros(members))
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size, bias=False) if cfg.value else None
        self.dropout = nn.Dropout(cfg.dropout)
        with torch.no_grad():
            for lin in (self.query, self.key):
                lin.weight.normal_(0.0, 0.02)
                lin.bias.zero_()
            if self.value is not None:
                self.value.weight.copy_(torch.eye(hidden_size))
        self._qk: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    def _composed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_Qᵀ W_K, b_Q W_K), recomputed only when the weights change."""
        params = (self.query.weight, self.query.bias, self.key.weight)
        stamp = tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)
        if self._qk is None or self._qk[0] != stamp:
            with torch.no_grad():
                self._qk = (stamp, self.query.weight.t() @ self.key.weight, self.query.bias @ self.key.weight)
        return self._qk[1], self._qk[2]

    def query_key(self, query: torch.Tensor) -> torch.Tensor:
        """W_Kᵀ Q(query), the key-side query: Q(h)·K(u) = qk·u + (a term that is the same for every adapter)."""
        if torch.is_grad_enabled() and self.query.weight.requires_grad:
            return self.query(query) @ self.key.weight
        a, c = self._composed()
        return torch.addmm(c, query, a)

    def attend(self, stack: StackedSite, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [M, H] (query and adapter input) -> (context [M, H], probabilities [M, N]).

        Never materialises the N adapter outputs u_n = D_n W_n + b_n ([M, N, H]); with D the
        stacked bottleneck activations [M, N·r]:
          scores_n = qk·u_n = Σ_r D_n ⊙ (qk W_nᵀ) + qk·b_n     (one GEMM for all n)
          Σ_n p_n u_n = (p ⊙ D) W_cat + p b                    (one GEMM for all n)
        """
        m, n, r = h.shape[0], stack.n, stack.r
        if not (self.training or (torch.is_grad_enabled() and self.query.weight.requires_grad)):
            return self._attend_inference(stack, h)
        d = stack.down(h)  # [M, N*r]
        qk = self.query_key(h)  # [M, H]
        scores = (d * (qk @ stack.w_up_t)).view(m, n, r).sum(-1) + qk @ stack.b_up.t()
        probs = torch.softmax(self.dropout(scores) / self.cfg.temperature + self.prior, dim=-1)
        mixed = torch.addmm(probs @ stack.b_up, (d.view(m, n, r) * probs.unsqueeze(-1)).view(m, n * r), stack.w_up)
        return (self.value(mixed) if self.value is not None else mixed), probs

    def _stamp(self) -> tuple[int, ...]:
        params = [self.query.weight, self.query.bias, self.key.weight]
        if self.value is not None:
            params.append(self.value.weight)
        return tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)

    def _attend_inference(self, stack: StackedSite, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same function as `attend`, with everything linear in h folded into one GEMM
        ([W_down | A·W_upᵀ/T | A·b_upᵀ/T]) and V folded into the output GEMM."""
        m, n, r = h.shape[0], stack.n, stack.r
        w_in, b_in, w_out = inference_weights(stack, self)
        z = torch.addmm(b_in, h, w_in)  # [M, N*r | N*r | N]
        d = stack.act(z[:, : n * r])
        scores = (d * z[:, n * r : 2 * n * r]).view(m, n, r).sum(-1) + z[:, 2 * n * r :]
        probs = torch.softmax(scores + self.prior, dim=-1)
        mixed_in = torch.cat([(d.view(m, n, r) * probs.unsqueeze(-1)).view(m, n * r), probs], dim=1)
        return mixed_in @ w_out, probs

    def regularization(self) -> torch.Tensor:
        if self.value is None:
            return self.query.weight.new_zeros(())
        eye = torch.eye(self.value.weight.shape[0], device=self.value.weight.device)
        return (eye - self.value.weight).pow(2).sum()


def inference_weights(stack: StackedSite, layer: FusionLayer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite matrices for `FusionLayer._attend_inference`, cached until the fusion weights change."""
    stamp = layer._stamp()
    if stack._cache is None or stack._cache[0] != stamp:
        with torch.no_grad():
            a, c = layer._composed()
            t = layer.cfg.temperature
            w_in = torch.cat([stack.w_down.t(), a @ stack.w_up_t / t, a @ stack.b_up.t() / t], dim=1).contiguous()
            b_in = torch.cat([stack.b_down, c @ stack.w_up_t / t, c @ stack.b_up.t() / t])
            w_out = torch.cat([stack.w_up, stack.b_up], dim=0)
            if layer.value is not None:
                w_out = w_out @ layer.value.weight.t()
            stack._cache = (stamp, w_in, b_in, w_out.contiguous())
    return stack._cache[1], stack._cache[2], stack._cache[3]


def check_fusable(adapters: list[BottleneckAdapter]) -> None:
    if len(adapters) < 2:
        raise ConfigError("a fusion needs at least 2 adapters")
    sigs = {tuple(getattr(a.cfg, f) for f in PLACEMENT_FIELDS) for a in adapters}
    if len(sigs) != 1:
        raise ConfigError("adapters with different placements or residual layouts cannot be fused")


class Fusion(nn.Module):
    """The fusion modules of one fusion: one per site, or one shared by every site."""

    def __init__(self, cfg: FusionConfig, members: list[str], template: BottleneckAdapter):
        super().__init__()
        self.cfg, self.members = cfg, list(members)
        hidden = template.hidden_size
        keys = [site_key(i, p) for i in range(template.num_layers) for p in PLACEMENTS if template.site(i, p)]
        if cfg.shared:
            self.shared = FusionLayer(hidden, cfg, len(members))
            self.sites = nn.ModuleDict()
        else:
            self.shared = None
            self.sites = nn.ModuleDict({k: FusionLayer(hidden, cfg, len(members)) for k in keys})
        self.site_keys = keys

    def layers(self) -> list[FusionLayer]:
        return [self.shared] if self.shared is not None else list(self.sites.values())  # type: ignore[list-item]

    def warm_start(self, member: int, margin: float = WARM_MARGIN) -> None:
        """Put the attention on one member (the target task's own adapter): its prior is `margin` above the
        others at every site, so with V = I the first forward is that adapter's to within e^-margin.
        The priors stay trainable; training gives them a learning rate that can cross the margin in an
        epoch (`prior_learning_rate`), else Adam's steps of about the fusion's rate would never move them."""
        with torch.no_grad():
            for lay in self.layers():
                lay.prior.zero_()
                lay.prior[member] = margin

    @staticmethod
    def prior_learning_rate(steps_per_epoch: int, margin: float = WARM_MARGIN) -> float:
        """Adam moves a parameter by about its learning rate per step whatever the gradient's size: at this
        rate a consistent push takes the target's prior down to the others' within one epoch."""
        return margin / max(1, steps_per_epoch)

    def plan(self, adapters: list[BottleneckAdapter]) -> FusePlan:
        """Its members stacked per site, for its forwards (kept by the encoder while the fusion is loaded)."""
        return FusePlan(self, adapters)

    def layer(self, key: str) -> FusionLayer:
        return self.shared if self.shared is not None else self.sites[key]  # type: ignore[return-value]

    def regularization(self) -> torch.Tensor:
        layers = [self.shared] if self.shared is not None else list(self.sites.values())
        return self.cfg.regularization * torch.stack([lay.regularization() for lay in layers]).sum()  # type: ignore[union-attr]


def _stamp(adapters: list[BottleneckAdapter]) -> tuple[int, ...]:
    return tuple(v for a in adapters for p in a.parameters() for v in (p._version, p.data_ptr()))


class FusePlan:
    """A fusion's member adapters stacked per site (one down GEMM, one up GEMM), built once and kept
    while the fusion is loaded. The fusion's own precomposed inference matrices live on each
    `StackedSite` and follow the fusion's weights. If a member's weights change, the plan rebuilds."""

    def __init__(self, fusion: Fusion, adapters: list[BottleneckAdapter]):
        self.fusion, self.adapters = fusion, adapters
        self._build()

    def _build(self) -> None:
        self.stamp = _stamp(self.adapters)
        self.stacks = {key: StackedSite([a.sites[key] for a in self.adapters]) for key in self.fusion.site_keys}  # type: ignore[misc]

    def warm(self) -> None:
        """Precompose each site's inference matrices now (serving does this at load, not per request)."""
        for key, stack in self.stacks.items():
            inference_weights(stack, self.fusion.layer(key))

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.stacks.values())

    def fresh(self) -> FusePlan:
        """The plan, rebuilt first if a member's weights changed since it was built."""
        if _stamp(self.adapters) != self.stamp:
            self._build()
        return self

    def step(self, layer: int, placement: Placement, capture: dict[str, torch.Tensor] | None = None) -> Step | None:
        """The fusion at one site, before the site's `post`: (hidden, adapter residual) -> (output, adapter
        residual, the member layer that ran last); None where the members have no layer. A Stack runs it
        on the previous member's output (adapters 1.3.0's `compose_fuse`)."""
        key = site_key(layer, placement)
        stack = self.stacks.get(key)
        if stack is None:
            return None
        attend = self.fusion.layer(key).attend

        def run(hidden: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> tuple[torch.Tensor, torch.Tensor, Any]:
            h, res = stack.last.pre(hidden, r, ln)
            context, probs = attend(stack, h.reshape(-1, h.shape[-1]))
            if capture is not None:
                capture[key] = probs.view(*h.shape[:-1], -1).detach()
            return context.view_as(h) + res, res, stack.last

        return run

    def handler(self, capture: dict[str, torch.Tensor] | None = None) -> Handler:
        """A site handler for one forward; with `capture`, each site's attention [B, T, N] is stored in it."""
        plan = self.fresh()

        def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
            step = plan.step(layer, placement, capture)
            if step is None:
                return ln(x + r)
            out, _, last = step(x, r, ln)
            return last.post(out, x, r, ln)

        return handle
