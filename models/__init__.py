"""Embedded pretrained backends, installed as the ``latentmix.embedded`` package.

Each subdirectory is a saved backend (config.json + safetensors + MODEL_CARD.md) produced by
latentmix's own ``fit`` commands; its MODEL_CARD.md records the exact command.
"""
