"""The adapter presets by name (AdapterHub's bottleneck presets, and `lora`) and the adapter config classes by
the `method` an artifact records. Like `composer.kinds`, this is where the methods come together: the
engine and each method package never import another method."""

from __future__ import annotations

from typing import Any, TypeAlias

from composer.adalora.modules import AdaLoraConfig
from composer.bitfit.modules import BitFitConfig
from composer.bottleneck.modules import PRESETS as BOTTLENECK_PRESETS
from composer.bottleneck.modules import BottleneckConfig
from composer.compacter.modules import PRESETS as COMPACTER_PRESETS
from composer.compacter.modules import CompacterConfig
from composer.diff.modules import DiffConfig
from composer.errors import ConfigError
from composer.ia3.modules import IA3Config
from composer.lora.modules import LoraConfig

AdapterConfig: TypeAlias = (
    BottleneckConfig | LoraConfig | IA3Config | BitFitConfig | CompacterConfig | AdaLoraConfig | DiffConfig
)
CONFIGS: dict[str, Any] = {
    c.method: c
    for c in (BottleneckConfig, LoraConfig, IA3Config, BitFitConfig, CompacterConfig, AdaLoraConfig, DiffConfig)
}
PRESETS: dict[str, dict[str, Any]] = {
    **BOTTLENECK_PRESETS,
    "lora": {"method": "lora"},  # the query and value projections (Hu et al. 2021), PEFT's default for BERT
    "ia3": {"method": "ia3"},  # keys, values and the FFN's inner activation (Liu et al. 2022)
    # SVD-form LoRA whose rank budget falls from init_r to target_r per linear (Zhang et al. 2023): PEFT's budget
    # schedule, with the update scaled 48 / init_r (PEFT's alpha of 8 gives 0.67) and a lighter orthogonality
    # penalty, chosen on validation (bench/quality_tune.py: mean 0.864 against PEFT's defaults' 0.826)
    "adalora": {"method": "adalora", "alpha": 48.0, "orth_reg_weight": 0.1},
    # a sparse delta on every linear's weight and bias, L0-gated, projected to 0.5% (Guo et al. 2021)
    "diff": {"method": "diff"},
    "bitfit": {"method": "bitfit"},  # the biases of every linear projection (Ben Zaken et al. 2022)
    # PHM projections (Karimi Mahabadi et al. 2021): AdapterHub's CompacterConfig and CompacterPlusPlusConfig
    **{name: {"method": "compacter", **fields} for name, fields in COMPACTER_PRESETS.items()},
}

# What each preset trains with when a job gives no hyperparameters: the learning rates chosen on validation
# (bench/quality_methods.py --sweep; docs/benchmarks.md lists what was tried). Presets not named here take the
# job's defaults (composer.training.TrainConfig).
TRAINING: dict[str, dict[str, Any]] = {
    "ia3": {"learning_rate": 1e-2},
    "bitfit": {"learning_rate": 3e-3},
    "adalora": {"learning_rate": 1e-2},  # bench/quality_tune.py: 0.815 against 0.779 at 3e-3 on 500 rows
    "diff": {"learning_rate": 3e-4},
    "compacter": {"learning_rate": 3e-3},  # bench/quality_tune.py: 0.864 against 0.845 at the 1e-3 default
    "compacter++": {"learning_rate": 1e-2},  # bench/quality_tune.py: 0.871 against 0.842 at the 1e-3 default
}


# The prompt family's presets (a `prompts` job's `preset`): PromptConfig fields, and the hyperparameters they train
# with. Prompt tuning keeps its high rate (Lester et al.; PEFT's example uses 0.3 too) and vocabulary/label-word
# initialisation (PEFT's benchmark: 5.7% with random init against 34.3% from the vocabulary). The encoders and
# MLPs train at Adam's usual rates for reparameterised prompts (P-tuning v2's 5e-3 to 1e-2 on BERT).
PROMPT_PRESETS: dict[str, dict[str, Any]] = {
    "prompt_tuning": {"length": 20},  # Lester et al. 2021
    "p_tuning": {"length": 20, "encoder": "mlp", "encoder_hidden": 128},  # Liu et al. 2021, PEFT's MLP encoder
    "p_tuning_lstm": {"length": 20, "encoder": "lstm", "encoder_hidden": 128},  # the paper's LSTM + MLP
    "prefix": {"length": 20, "kind": "deep", "reparam_hidden": 256},  # Li & Liang 2021, through the MLP
    "p_tuning_v2": {"length": 20, "kind": "deep"},  # Liu et al. 2022: flat prefixes on every layer
}
PROMPT_TRAINING: dict[str, dict[str, Any]] = {
    "prompt_tuning": {"learning_rate": 0.3, "epochs": 10, "patience": 3},
    "p_tuning": {"learning_rate": 1e-2, "epochs": 10, "patience": 3},
    "p_tuning_lstm": {"learning_rate": 1e-2, "epochs": 10, "patience": 3},
    "prefix": {"learning_rate": 5e-3, "epochs": 10, "patience": 3},
    # bench/quality_tune.py: 0.860 against 0.846 at 1e-2, best on each task
    "p_tuning_v2": {"learning_rate": 3e-2, "epochs": 10, "patience": 3},
}


def prompt_preset(name: str, **overrides: Any) -> Any:
    """A PromptConfig from a prompt preset, with field overrides validated like any config."""
    from composer.prompts.prompt import PromptConfig

    if name not in PROMPT_PRESETS:
        raise ConfigError(f"unknown prompt preset {name!r}; known presets: {sorted(PROMPT_PRESETS)}")
    return PromptConfig.from_dict({**PROMPT_PRESETS[name], **overrides})


def training_defaults(name: str) -> dict[str, Any]:
    """The hyperparameters a job of this preset starts from (a request's own override them)."""
    return dict(TRAINING.get(name, {}))


def preset(name: str, **overrides: Any) -> AdapterConfig:
    """Build a config from a preset name, with field overrides validated like any config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown adapter preset {name!r}; known presets: {sorted(PRESETS)}")
    fields = {**PRESETS[name], **overrides}
    return config_from(fields.pop("method", "bottleneck"), fields)


def config_from(method: str, data: dict[str, Any]) -> AdapterConfig:
    if method not in CONFIGS:
        raise ConfigError(f"unsupported adapter method {method!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[method].from_dict(data)
