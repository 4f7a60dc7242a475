"""Settings of ``latentmix fit lora`` and ``latentmix fit textual-inversion``: adapting a pretrained diffusion
backend to the user's few labelled images (one learned token per class, LoRA on the UNet's attention)."""

from __future__ import annotations

from dataclasses import dataclass

from latentmix.configs.choices import MIXED_PRECISION
from latentmix.configs.common import Settings
from latentmix.configs.options import POSITIVE_INT, POSITIVE_NUMBER, SEED, number_in, one_of, option

#: what ``{token}`` in a prompt template becomes for class ``c``
TOKEN_PATTERN = "<{slug}>"


@dataclass
class TextualInversionFitConfig(Settings):
    """Settings of ``latentmix fit textual-inversion``: one learned token per class, nothing else changes."""

    backend: str = option(
        "digits-ldm",
        "the text-conditioned diffusion backend to adapt: embedded name, latentmix save or diffusers pipeline folder",
        path=True,
    )
    data: str = option("digits", "'digits', 'shapes' or a labelled image folder (its train split)", path=True)
    labels_per_class: int | None = option(
        None, "adapt to K labelled images per class (the few-shot draw of `latentmix train`; default: all)",
        check=POSITIVE_INT,
    )  # fmt: skip
    subset_seed: int = option(0, "which K per class: the same draw as `latentmix train --seed`", check=SEED)
    prompt_template: str = option(
        "a photo of a {token}",
        "the training caption of an image: {token} is its class's learned token, {class} its class name",
    )
    token_lr: float = option(5e-3, "AdamW learning rate of the token embeddings", check=POSITIVE_NUMBER)
    steps: int = option(300, "optimisation steps", check=POSITIVE_INT)
    batch_size: int = option(16, "global batch, split across processes", check=POSITIVE_INT)
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")
    seed: int = option(0, "seeds the new parameters and every draw", check=SEED)
    mixed_precision: str = option("no", "accelerate mixed precision", check=one_of(MIXED_PRECISION))
    cpu: bool = option(False, "force the CPU even where a GPU is present")
    checkpoint_every: int = option(
        100, "steps between checkpoints in OUT.train/ (the same command again resumes from the last)",
        check=POSITIVE_INT, identity=False,
    )  # fmt: skip

    @property
    def learns_tokens(self) -> bool:
        """Whether the run learns one token per class (textual inversion always does)."""
        return True

    def validate(self) -> None:
        super().validate()
        if self.learns_tokens and "{token}" not in self.prompt_template:
            hint = " (or pass --no-tokens)" if isinstance(self, LoRAFitConfig) else ""
            raise ValueError(f"prompt_template must name {{token}}{hint}, got {self.prompt_template!r}")
        if not self.learns_tokens and "{token}" in self.prompt_template:
            raise ValueError("prompt_template names {token} but --no-tokens learns none; use {class}")


@dataclass
class LoRAFitConfig(TextualInversionFitConfig):
    """Settings of ``latentmix fit lora``: LoRA on the UNet's attention (and optionally the text encoder's) with
    one learned token per class (DreamBooth-LoRA + textual inversion, as Diff-Mix adapts its model)."""

    rank: int = option(4, "LoRA rank of every adapted projection", check=POSITIVE_INT)
    alpha: int | None = option(None, "LoRA alpha (the update is scaled by alpha / rank; default: the rank)",
                               check=POSITIVE_INT)  # fmt: skip
    lr: float = option(1e-3, "AdamW learning rate of the LoRA weights", check=POSITIVE_NUMBER)
    text_encoder_lora: bool = option(False, "also adapt the text encoder's attention projections with LoRA")
    tokens: bool = option(True, "learn one token per class beside the LoRA (off: prompts name the class itself)")
    dropout: float = option(0.0, "LoRA dropout", check=number_in(0.0, 1.0, exclusive_maximum=True))

    @property
    def learns_tokens(self) -> bool:
        return self.tokens
