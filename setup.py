"""The one packaging rule pyproject.toml cannot state: every package under latentmix/ is found (no hand-written
list to forget a new folder in), and the embedded checkpoints in models/ install as ``latentmix.embedded``.
Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["latentmix", "latentmix.*"]), "latentmix.embedded"],
    package_dir={"latentmix.embedded": "models"},
)
