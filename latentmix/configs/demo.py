"""Settings of ``latentmix demo``: the main jobs on the embedded models."""

from __future__ import annotations

from dataclasses import dataclass

from latentmix.configs.choices import DEFAULT_BACKEND
from latentmix.configs.common import Settings
from latentmix.configs.options import SEED, option


@dataclass
class DemoConfig(Settings):
    """Settings of ``latentmix demo``."""

    out: str = option("latentmix-demo", "output directory", identity=False)
    seed: int = option(0, "seeds every choice of the demo", check=SEED)
    backend: str = option(
        DEFAULT_BACKEND, "the backend of the digits grids, the paired set and the comparison", cli=False
    )
