"""Import guards: the settings layer and the top-level package load no heavy library.

``latentmix --help`` and every subcommand's flags are built from the settings dataclasses, so importing them
must not pull in torch (seconds on a cold start); ``import latentmix`` resolves its public names on first use.
Each check runs in a fresh interpreter, so what other tests imported cannot hide a regression.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "diffusers", "transformers", "accelerate", "PIL", "safetensors", "tqdm", "sklearn")


def _loaded_after(statement: str) -> list[str]:
    """Top-level names of the heavy libraries loaded by ``statement`` in a fresh interpreter."""
    code = (
        f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.parametrize(
    "statement",
    [
        "import latentmix.configs",
        "from latentmix.configs import GridConfig, SynthesisConfig, TrainConfig, EvalConfig",
        "import latentmix",
        "import latentmix.cli; latentmix.cli.build_parser()",
    ],
)
def test_the_settings_layer_and_the_package_load_no_heavy_library(statement):
    assert _loaded_after(statement) == []


def test_public_names_resolve_on_first_use():
    code = "import sys, latentmix; assert 'torch' not in sys.modules; latentmix.slerp; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_train_package_exports_every_trainer_lazily():
    code = (
        "import sys, latentmix.train as t; assert 'diffusers' not in sys.modules; "
        "assert {'fit_vae', 'fit_gan', 'fit_ldm', 'fit_reference_classifier', 'fit_align', 'train_classifier', "
        "'MixupClassifier'} <= set(t.__all__); [getattr(t, name) for name in t.__all__]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
