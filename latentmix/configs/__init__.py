"""Every job's settings, and the choices the jobs share — the one source of the CLI's flags and defaults.

Each dataclass is what one ``latentmix`` command runs on; its fields are :func:`~latentmix.configs.options.option`
declarations (default, help text, check). ``latentmix --help`` and every subcommand's flags are generated from
them (:mod:`latentmix.cli`), and ``config.validate()`` checks them before any work starts. Only the standard
library is imported here, so ``latentmix --help`` does not load torch.

* :mod:`~latentmix.configs.options`: ``option()`` fields, the flags built from them, a run's identity;
* :mod:`~latentmix.configs.choices`: the choices and defaults several jobs share;
* :mod:`~latentmix.configs.common`: field groups declared once (the backend and its call options, the data);
* one module per job family: :mod:`~latentmix.configs.walks` (grid, walk, explore, edit),
  :mod:`~latentmix.configs.synthesis` (synthesize, export, augment), :mod:`~latentmix.configs.evaluation`
  (evaluate, evaluate-pairs), :mod:`~latentmix.configs.training` (train, compare and its recipes),
  :mod:`~latentmix.configs.fitting` (fit vae / gan / ldm / reference-classifier / align), and
  :mod:`~latentmix.configs.demo`.
"""

from latentmix.configs.adapters import LoRAFitConfig, TextualInversionFitConfig
from latentmix.configs.choices import (
    AUGMENT_MODES,
    AUGMENT_TRANSFORMS,
    BETA_SCHEDULES,
    CAPTION_RULES,
    DEFAULT_ALIGN_MODELS,
    DEFAULT_BACKEND,
    DEFAULT_BACKENDS,
    DEFAULT_SYNTHESIS_BACKENDS,
    DEFAULT_TEXT_ENCODER,
    INVERSIONS,
    KEYFRAME_METHODS,
    METHODS,
    MIXED_PRECISION,
    SAMPLERS,
    SPACING_FEATURES,
    SPACINGS,
    SPLITS,
    STRATEGIES,
    VIDEO_FORMATS,
    backend_for,
)
from latentmix.configs.common import (
    BackendSettings,
    DataColumns,
    DataSettings,
    Settings,
    SplitSettings,
    override,
)
from latentmix.configs.demo import DemoConfig
from latentmix.configs.evaluation import EvalConfig, PairEvalConfig
from latentmix.configs.fitting import AlignFitConfig, GANFitConfig, LDMFitConfig, ReferenceFitConfig, VAEFitConfig
from latentmix.configs.synthesis import AugmentConfig, ExportConfig, SynthesisConfig
from latentmix.configs.training import (
    CLASS_WEIGHTS,
    COMPARE_TRAIN_DEFAULTS,
    DEFAULT_ALPHA,
    DEFAULT_RECIPES,
    DEFAULT_TEMPERATURE_PRIOR,
    DEPTH_CURRICULA,
    FUSION_MIXUPS,
    GRANULARITIES,
    MIXUP_MODES,
    MODALITIES,
    RECIPES,
    TEXT_MIXUPS,
    CompareConfig,
    ReportOutputs,
    TrainConfig,
)
from latentmix.configs.walks import EDIT_NEIGHBOURS, EditConfig, ExploreConfig, GridConfig, WalkConfig

__all__ = [
    "AUGMENT_MODES",
    "AUGMENT_TRANSFORMS",
    "BETA_SCHEDULES",
    "CAPTION_RULES",
    "CLASS_WEIGHTS",
    "COMPARE_TRAIN_DEFAULTS",
    "DEFAULT_ALIGN_MODELS",
    "DEFAULT_ALPHA",
    "DEFAULT_BACKEND",
    "DEFAULT_BACKENDS",
    "DEFAULT_RECIPES",
    "DEFAULT_SYNTHESIS_BACKENDS",
    "DEFAULT_TEMPERATURE_PRIOR",
    "DEFAULT_TEXT_ENCODER",
    "DEPTH_CURRICULA",
    "EDIT_NEIGHBOURS",
    "FUSION_MIXUPS",
    "GRANULARITIES",
    "INVERSIONS",
    "KEYFRAME_METHODS",
    "METHODS",
    "MIXED_PRECISION",
    "MIXUP_MODES",
    "MODALITIES",
    "RECIPES",
    "SAMPLERS",
    "SPACINGS",
    "SPACING_FEATURES",
    "SPLITS",
    "STRATEGIES",
    "TEXT_MIXUPS",
    "VIDEO_FORMATS",
    "AlignFitConfig",
    "AugmentConfig",
    "BackendSettings",
    "CompareConfig",
    "DataColumns",
    "DataSettings",
    "DemoConfig",
    "EditConfig",
    "EvalConfig",
    "ExploreConfig",
    "ExportConfig",
    "GANFitConfig",
    "GridConfig",
    "LDMFitConfig",
    "LoRAFitConfig",
    "PairEvalConfig",
    "ReferenceFitConfig",
    "ReportOutputs",
    "Settings",
    "SplitSettings",
    "SynthesisConfig",
    "TextualInversionFitConfig",
    "TrainConfig",
    "VAEFitConfig",
    "WalkConfig",
    "backend_for",
    "override",
]
