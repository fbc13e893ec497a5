"""Inject adapter sites into a BERT-family encoder without copying its model code.

Every encoder layer ends each sublayer the same way: `LayerNorm(x + r)`, where `x` is
the sublayer output and `r` its residual input. A *site* intercepts exactly that call
and hands `(x, r, layer_norm)` to the `Router` of its encoder.

Nothing a forward needs is stored on the shared layers. The router reads the current
`Scope` (the site handler of one composition, the fusion-attention capture, a prompt to
prepend to the embedding output) from a context variable that `Router.scoped` sets for
the duration of one forward and always resets. Context variables are per thread (and
per asyncio task), so forwards on one resident base never see each other's scope; with
no scope, every site computes `LayerNorm(x + r)` and the encoder is the bare base.

One small map per family says where the sites are:
- BERT, RoBERTa, XLM-R, ELECTRA: the `attention.output` and `output` modules take
  `(hidden_states, input_tensor)` and own `dense`, `dropout`, `LayerNorm`. Their
  instance `forward` is replaced; no module is added, so the state_dict is unchanged.
- DistilBERT: the block calls `sa_layer_norm(attn + h)` and `output_layer_norm(ffn + a)`.
  Hooks capture `x` and `r` as they are computed, and the two LayerNorms' instance
  `forward` is replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from composer.errors import ConfigError

Placement = Literal["attention", "ffn"]
PLACEMENTS: tuple[Placement, ...] = ("attention", "ffn")


def site_key(layer: int, placement: Placement) -> str:
    """The name of one (layer, placement) site, as modules key their per-site parts."""
    return f"L{layer}_{placement}"


SiteHandler = Callable[
    [int, Placement, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor
]
# (layer, linear name inside the layer, input, the linear as a function of its input) -> the linear's output,
# or None: this linear is left as it is. A handler wraps the linear (LoRA adds to its output, (IA)³ scales its
# input or output, BitFit shifts its bias), so the handlers of several methods chain (`chain`).
LinearHandler = Callable[[int, str, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor | None]


def chain(handlers: list[LinearHandler]) -> LinearHandler | None:
    """One handler that runs `handlers` around each other, the first outermost. Each row of a batch belongs to
    at most one of them, and each is the identity on the rows of the others (a scale of 1, a shift of 0), so
    every row gets what its own method gives it alone."""
    if len(handlers) <= 1:
        return handlers[0] if handlers else None

    def handle(layer: int, name: str, x: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        def call(i: int, h: torch.Tensor) -> torch.Tensor:
            if i == len(handlers):
                return linear(h)
            out = handlers[i](layer, name, h, lambda y: call(i + 1, y))
            return call(i + 1, h) if out is None else out

        return call(0, x)

    return handle


@dataclass
class Scope:
    """What one forward asks of the shared layers. Built per forward, never stored on a module."""

    handler: SiteHandler | None = None
    capture: dict[str, torch.Tensor] | None = None  # fusion attention per site key, when asked for
    prefix: torch.Tensor | None = None  # [B, L, H] prepended to the embedding output (AdapterHub prompts)
    # (rows, [L, H]): the first L slots of those rows' embedding output (AdapterHub prompts in a mixed batch)
    overwrite: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    linear: LinearHandler | None = None  # what wraps the layers' linear projections (LoRA, (IA)³, BitFit)
    scratch: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # DistilBERT's x and r
    memo: dict[int, Any] = field(default_factory=dict)  # what sibling linears share in this forward (int8 q/k/v)


class Router:
    """Shared by all sites of one encoder; holds no per-request state, only the context variable."""

    def __init__(self) -> None:
        self._scope: ContextVar[Scope | None] = ContextVar(f"composer_scope_{id(self)}", default=None)

    @contextmanager
    def scoped(self, scope: Scope | None) -> Iterator[None]:
        token = self._scope.set(scope)
        try:
            yield
        finally:
            self._scope.reset(token)

    @property
    def scope(self) -> Scope | None:
        return self._scope.get()

    def run(self, layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: Callable) -> torch.Tensor:
        scope = self._scope.get()
        if scope is None or scope.handler is None:
            return ln(x + r)
        return scope.handler(layer, placement, x, r, ln)


@dataclass(frozen=True)
class FamilySpec:
    layers_path: str
    style: str  # "output_module" or "distilbert"
    attention_module: str = "attention.output"
    ffn_module: str = "output"
    # every linear projection inside one layer, by its name there (LoRA targets match these, as PEFT's
    # target_modules match a module name or its last components)
    linears: tuple[str, ...] = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    )
    default_lora_targets: tuple[str, ...] = ("query", "value")
    positions_after_padding: bool = False  # RoBERTa's positions start after its padding index

    @property
    def siblings(self) -> tuple[str, ...]:
        """The linears of a layer that read the same input: query, key and value (the first three)."""
        return self.linears[:3]

    @property
    def private_inputs(self) -> tuple[str, ...]:
        """The linears whose input nothing else reads (the attention's context, the FFN's activation): a
        forward without gradients may change that input in place."""
        return (self.linears[3], self.linears[5])


def linear_targets(family: str, wanted: tuple[str, ...], what: str = "target_modules") -> tuple[str, ...]:
    """The linear names inside one layer that `wanted` names, in the layer's order: a full name matches itself
    only, a short one every linear it ends (as PEFT's target_modules match). An unknown name is refused."""
    spec = FAMILIES[family]
    found: list[str] = []
    for t in wanted:
        hits = [t] if t in spec.linears else [n for n in spec.linears if n.endswith("." + t)]
        if not hits:
            short = sorted({n.rsplit(".", 1)[-1] for n in spec.linears} | set(spec.linears))
            raise ConfigError(f"{what}: a {family} layer has no linear module {t!r}; it has {short}")
        found += hits
    return tuple(n for n in spec.linears if n in found)


def site_name(layer: int, linear: str) -> str:
    """How a module keys its part at one (layer, linear) site."""
    return f"L{layer}_{linear.replace('.', '_')}"


def config_from_dict(cls: Any, data: dict[str, Any], what: str) -> Any:
    """A method config dataclass from its JSON fields (an artifact's `method` key aside); unknown fields refused."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known - {"method"}
    if unknown:
        raise ConfigError(f"unknown {what} config fields: {sorted(unknown)}; known: {sorted(known)}")
    return cls(**{k: v for k, v in data.items() if k in known})


class LinearTargets:
    """What the configs of methods on the base's linear projections share (LoRA, AdaLoRA, BitFit, diff): the
    `target_modules` and `layers` fields, normalised; the targets on a family (`default_targets` names the
    FamilySpec field used when none are given); the check against a base; the shapes to build on; JSON."""

    default_targets: ClassVar[str] = "linears"
    target_modules: tuple[str, ...] | None
    layers: tuple[int, ...] | None

    def normalise_targets(self) -> None:
        if self.target_modules is not None:
            if isinstance(self.target_modules, str) or not self.target_modules:
                raise ConfigError("target_modules must be a non-empty list of module names")
            object.__setattr__(self, "target_modules", tuple(str(t) for t in self.target_modules))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def targets(self, family: str) -> tuple[str, ...]:
        """The linear names inside one layer that this config adapts; unknown names are refused."""
        return linear_targets(family, self.target_modules or getattr(FAMILIES[family], self.default_targets))

    def check_base(self, family: str, num_layers: int, hidden_size: int | None = None) -> None:
        """Refuse, naming the field, what a base of this family and depth does not have."""
        self.targets(family)
        check_layers(self.layers, num_layers)

    def adapted_shapes(self, model: Any) -> dict[tuple[int, str], tuple[int, int]]:
        """(in, out) of each adapted linear of `model` (an AdaptedEncoder), by (layer, name)."""
        family = model.base.family
        return linear_shapes(model.encoder, family, self.targets(family), self.layers, model.base.num_layers)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A method config dataclass as JSON fields: its tuples (target modules, layers) as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def check_layers(layers: tuple[int, ...] | None, num_layers: int, what: str = "layers") -> None:
    """Refuse, naming the field, a layer the base does not have."""
    bad = [i for i in layers or () if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"{what}: the base has layers 0..{num_layers - 1}, got {bad}")


def linear_shapes(
    model: nn.Module, family: str, targets: tuple[str, ...], layers: tuple[int, ...] | None, num_layers: int
) -> dict[tuple[int, str], tuple[int, int]]:
    """(in, out) features of each targeted linear, by (layer, name); `layers` None: every layer. A layer the
    base does not have is refused, naming the field."""
    check_layers(layers, num_layers)
    blocks = model.get_submodule(FAMILIES[family].layers_path)
    shapes = {}
    for i in layers if layers is not None else range(num_layers):
        for name in targets:
            lin = blocks[i].get_submodule(name)
            shapes[(i, name)] = (lin.in_features, lin.out_features)
    return shapes


FAMILIES: dict[str, FamilySpec] = {
    "bert": FamilySpec("encoder.layer", "output_module"),
    "roberta": FamilySpec("encoder.layer", "output_module", positions_after_padding=True),
    "xlm-roberta": FamilySpec("encoder.layer", "output_module", positions_after_padding=True),
    "electra": FamilySpec("encoder.layer", "output_module"),
    "distilbert": FamilySpec(
        "transformer.layer",
        "distilbert",
        linears=("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"),
        default_lora_targets=("q_lin", "v_lin"),
    ),
}


# every family's linears whose input nothing else reads (names differ between families)
PRIVATE_INPUTS = frozenset(n for spec in FAMILIES.values() for n in spec.private_inputs)


def _layers(model: nn.Module, path: str) -> nn.ModuleList:
    mod: Any = model
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def _patch_output_module(module: nn.Module, layer: int, placement: Placement, router: Router) -> None:
    def forward(hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        x = module.dense(hidden_states)
        x = module.dropout(x) if module.training else x  # the identity in eval: not dispatched at every site
        return router.run(layer, placement, x, input_tensor, module.LayerNorm)

    module.forward = forward  # instance attribute: the class and the state_dict stay untouched


def _patch_distilbert_block(block: nn.Module, layer: int, router: Router) -> list[Any]:
    """DistilBERT adds its residuals inline; hooks put `x` and `r` into the forward's scope."""
    handles = []

    def keep(name: str, value: torch.Tensor) -> None:
        scope = router.scope
        if scope is not None and scope.handler is not None:
            scope.scratch[(layer, name)] = value

    def block_pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        keep("h", args[0] if args else kwargs.get("hidden_states", kwargs.get("x")))

    def attn_out(_m: nn.Module, _a: tuple, out: Any) -> None:
        keep("attn", out[0] if isinstance(out, tuple) else out)

    def ffn_pre(_m: nn.Module, args: tuple) -> None:
        keep("a", args[0])

    def ffn_out(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
        keep("ffn", out)

    handles.append(block.register_forward_pre_hook(block_pre, with_kwargs=True))
    handles.append(block.attention.register_forward_hook(attn_out))
    handles.append(block.ffn.register_forward_pre_hook(ffn_pre))
    handles.append(block.ffn.register_forward_hook(ffn_out))

    def make(ln: nn.LayerNorm, placement: Placement, x_key: str, r_key: str) -> Callable:
        def plain(t: torch.Tensor) -> torch.Tensor:
            return nn.LayerNorm.forward(ln, t)

        def forward(summed: torch.Tensor) -> torch.Tensor:
            scope = router.scope
            if scope is None or scope.handler is None:
                return plain(summed)
            x, r = scope.scratch.pop((layer, x_key)), scope.scratch.pop((layer, r_key))
            return router.run(layer, placement, x, r, plain)

        return forward

    block.sa_layer_norm.forward = make(block.sa_layer_norm, "attention", "attn", "h")
    block.output_layer_norm.forward = make(block.output_layer_norm, "ffn", "ffn", "a")
    return handles


def _patch_linears(block: nn.Module, layer: int, names: tuple[str, ...], router: Router) -> None:
    """Each linear projection runs through the scope's linear handler (as it is without one)."""
    for name in names:
        lin: nn.Linear = _layers(block, name)  # type: ignore[assignment]

        def forward(x: torch.Tensor, lin: nn.Linear = lin, name: str = name) -> torch.Tensor:
            quantised = lin.__dict__.get("quantised")  # an int8 or NF4 base's form of it (composer.quantize)

            scope = router.scope

            def plain(h: torch.Tensor) -> torch.Tensor:
                if quantised is not None:
                    return quantised(h, scope.memo if scope is not None else None)
                return nn.functional.linear(h, lin.weight, lin.bias)

            if scope is None or scope.linear is None:
                return plain(x)
            out = scope.linear(layer, name, x, plain)
            return plain(x) if out is None else out

        lin.forward = forward  # type: ignore[method-assign]


def _patch_embeddings(model: nn.Module, router: Router) -> None:
    """A prompt in the scope is prepended to the embedding output (after its LayerNorm), or overwrites a row's
    first slots of it (rows laid out for their prompts, `composer.rows`)."""

    def prepend(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor | None:
        scope = router.scope
        if scope is None or (scope.prefix is None and not scope.overwrite):
            return None
        if scope.overwrite:
            out = out.clone()
            for rows, value in scope.overwrite:
                out[rows, : value.shape[0]] = value.to(out.dtype)
        return out if scope.prefix is None else torch.cat([scope.prefix.to(out.dtype), out], dim=1)

    model.embeddings.register_forward_hook(prepend)


def inject(model: nn.Module, family: str) -> Router:
    """Install sites on every layer of `model` and return the router that drives them."""
    if getattr(model, "_composer_router", None) is not None:
        return model._composer_router  # type: ignore[return-value]
    spec = FAMILIES[family]
    router = Router()
    for i, block in enumerate(_layers(model, spec.layers_path)):
        if spec.style == "output_module":
            _patch_output_module(_layers(block, spec.attention_module), i, "attention", router)
            _patch_output_module(_layers(block, spec.ffn_module), i, "ffn", router)
        else:
            _patch_distilbert_block(block, i, router)
        _patch_linears(block, i, spec.linears, router)
    _patch_embeddings(model, router)
    object.__setattr__(model, "_composer_router", router)
    return router
