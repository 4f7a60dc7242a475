"""Settings of ``latentmix fit``: the backends (VAE, GAN, latent diffusion), the reference classifier and the
image-text alignment model."""

from __future__ import annotations

from dataclasses import dataclass

from latentmix.configs.choices import BETA_SCHEDULES, DEFAULT_TEXT_ENCODER, MIXED_PRECISION
from latentmix.configs.common import DEVICE, GUIDANCE, Settings
from latentmix.configs.options import (
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_INTS,
    POSITIVE_NUMBER,
    SEED,
    int_at_least,
    number_in,
    one_of,
    option,
)


@dataclass
class VAEFitConfig(Settings):
    """Settings of ``latentmix fit vae`` (defaults fit the embedded digits model)."""

    data: str = option("digits", "'digits', 'shapes' (their train split) or an image folder", path=True)
    image_size: int | None = option(None, "image side (default: the data's own, 8 for digits)", check=POSITIVE_INT)
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    latent_channels: int | None = option(
        None,
        "channels of a spatial latent map at 1/4 of the side (default: 4 for images larger than 16 px, "
        "else 0 = a flat latent_dim vector)",
        check=NON_NEGATIVE_INT,
    )
    latent_dim: int = option(16, "size of the flat Gaussian latent (when latent_channels is 0)", check=POSITIVE_INT)
    block_channels: tuple[int, ...] | None = option(
        None, "channels per resolution (default: 32 64 up to 16 px, 32 64 128 above)", check=POSITIVE_INTS
    )
    layers_per_block: int | None = option(
        None, "3x3 convs per resolution (default: 2 up to 16 px, 1 above)", check=POSITIVE_INT
    )
    epochs: int | None = option(
        None,
        "passes over the training set (default: about 100,000 image passes at 32x32, in [20, 300]; 300 for digits)",
        check=POSITIVE_INT,
    )
    batch_size: int = option(128, "images per step", check=POSITIVE_INT)
    lr: float = option(2e-3, "AdamW learning rate, cosine decay to 0", check=POSITIVE_NUMBER)
    weight_decay: float = option(0.05, "AdamW weight decay", check=NON_NEGATIVE_NUMBER)
    kl_weight: float = option(0.5, "β on the KL term (summed over latent dims, per image)", check=NON_NEGATIVE_NUMBER)
    kl_warmup_epochs: int | None = option(
        None, "β ramps up linearly over these epochs (default: a fifteenth of the run, 1 to 20)", check=NON_NEGATIVE_INT
    )
    pixel_sigma: float = option(0.2, "Gaussian decoder std on the [-1, 1] scale", check=POSITIVE_NUMBER)
    augment_shift: int = option(1, "random translations of up to this many pixels", check=NON_NEGATIVE_INT)
    seed: int = option(0, "seeds the weights, the shuffling and the noise", check=SEED)
    mixed_precision: str = option("no", "accelerate mixed precision", check=one_of(MIXED_PRECISION))
    cpu: bool = option(False, "force the CPU even where a GPU is present")


@dataclass
class GANFitConfig(Settings):
    """Settings of ``latentmix fit gan`` (defaults fit the embedded digits model)."""

    data: str = option("digits", "'digits', 'shapes' (their train split) or an image folder", path=True)
    image_size: int | None = option(
        None, "image side, a power of two (default: the data's own, 8 for digits)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    latent_dim: int = option(32, "size of the Gaussian latent", check=POSITIVE_INT)
    width: int = option(64, "generator channels at 4x4", check=POSITIVE_INT)
    epochs: int = option(300, "epochs of the GAN phase", check=POSITIVE_INT)
    encoder_epochs: int = option(150, "epochs of the inversion-encoder phase", check=POSITIVE_INT)
    batch_size: int = option(64, "global batch (split across processes)", check=POSITIVE_INT)
    lr: float = option(
        2e-4, "Adam learning rate of G and D", check=number_in(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True)
    )
    ema_decay: float = option(
        0.999, "largest EMA decay of the saved generator", check=number_in(0.0, 1.0, exclusive_maximum=True)
    )
    ema_warmup: bool = option(True, "warm the EMA decay up from 0 (diffusers' EMAModel schedule)")
    pixel_weight: float = option(1.0, "encoder phase: weight of |G(E(x)) - x|²", check=NON_NEGATIVE_NUMBER)
    feature_weight: float = option(
        0.1, "encoder phase: weight of the discriminator-feature loss", check=NON_NEGATIVE_NUMBER
    )
    augment_shift: int = option(1, "random translations of real images (pixels)", check=NON_NEGATIVE_INT)
    checkpoint_every: int = option(25, "epochs between checkpoints and sample grids", check=POSITIVE_INT)
    seed: int = option(0, "seeds the weights and every draw", check=SEED)
    cpu: bool = option(False, "force the CPU even where a GPU is present")


@dataclass
class LDMFitConfig(Settings):
    """Settings of ``latentmix fit ldm`` (defaults fit the embedded digits model)."""

    data: str = option("digits", "'digits', 'shapes' (their train split, captioned) or an image folder", path=True)
    autoencoder: str | None = option(
        None,
        "an autoencoder fitted on the data: a VAE, AutoencoderKL, AutoencoderTiny or VQModel (embedded name or "
        "directory; default: digits-vae for digits, shapes-vae for shapes)",
        path=True,
    )
    text_encoder: str = option(DEFAULT_TEXT_ENCODER, "any transformers text encoder (MiniLM, CLIP, ...)", path=True)
    latent_channels: int = option(
        4,
        "a flat autoencoder latent is reshaped to (channels, s, s) (a spatial one is used as it is)",
        check=POSITIVE_INT,
    )
    block_channels: tuple[int, ...] | None = option(
        None,
        "UNet channels per resolution, multiples of 8 (default: 64 for latent maps up to 4 x 4, else 32 64)",
        check=POSITIVE_INTS,
    )
    layers_per_block: int = option(1, "UNet layers per block", check=POSITIVE_INT)
    cross_attention_dim: int = option(64, "text hidden states are projected to this size", check=POSITIVE_INT)
    attention_head_dim: int = option(8, "channels per attention head", check=POSITIVE_INT)
    text_max_length: int = option(16, "tokens per caption (padded / truncated)", check=POSITIVE_INT)
    steps: int | None = option(
        None, "optimisation steps (default: 8000 for latent maps up to 4 x 4, else 1500)", check=POSITIVE_INT
    )
    batch_size: int | None = option(
        None,
        "global batch, split across processes (default: 256 for latent maps up to 4 x 4, else 128)",
        check=POSITIVE_INT,
    )
    lr: float = option(
        1e-3,
        "AdamW learning rate: 200 warm-up steps, then cosine decay to 0",
        check=number_in(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True),
    )
    weight_decay: float = option(0.01, "AdamW weight decay", check=NON_NEGATIVE_NUMBER)
    ema_decay: float = option(
        0.999, "largest EMA decay of the saved UNet", check=number_in(0.0, 1.0, exclusive_maximum=True)
    )
    ema_warmup: bool = option(True, "warm the EMA decay up from 0 (diffusers' EMAModel schedule)")
    cond_dropout: float = option(
        0.1,
        "fraction of captions replaced by '' (classifier-free guidance)",
        check=number_in(0.0, 1.0, exclusive_maximum=True),
    )
    beta_schedule: str = option(
        "scaled_linear", "DDIM noise schedule (Stable Diffusion's)", check=one_of(BETA_SCHEDULES)
    )
    num_inference_steps: int = option(50, "the saved backend's default DDIM steps", check=POSITIVE_INT)
    guidance_scale: float = option(1.0, "the saved backend's default guidance (>= 1; 1 is off)", check=GUIDANCE)
    checkpoint_every: int = option(1000, "steps between checkpoints", check=POSITIVE_INT)
    evaluate: bool = option(True, "digits: measure the round trip and text-conditional consistency after training")
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")
    seed: int = option(0, "seeds the weights and every draw", check=SEED)
    mixed_precision: str = option("no", "accelerate mixed precision", check=one_of(MIXED_PRECISION))
    cpu: bool = option(False, "force the CPU even where a GPU is present")

    def validate(self) -> None:
        super().validate()
        if self.block_channels is not None and any(c < 8 or c % 8 for c in self.block_channels):
            raise ValueError(f"block_channels must be multiples of 8, got {self.block_channels!r}")


@dataclass
class ReferenceFitConfig(Settings):
    """Settings of ``latentmix fit reference-classifier``."""

    data: str = option("digits", "'digits', 'shapes' or a labelled data set with train/ and test/", path=True)
    image_size: int | None = option(
        None, "image side (default: the data's own; needed for images of several sizes)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    epochs: int | None = option(
        None,
        "passes over the training set (default: about 86,000 image passes, in [15, 60]; 60 for digits)",
        check=POSITIVE_INT,
    )
    width: int = option(64, "channels of the convolutions", check=POSITIVE_INT)
    seed: int = option(0, "seeds the weights and the shuffling", check=SEED)


@dataclass
class AlignFitConfig(Settings):
    """Settings of ``latentmix fit align``: a CLIP-style dual encoder that scores image-caption pairs."""

    data: str = option(
        "shapes", "'shapes' or a captioned image folder (metadata.jsonl with 'text'; its train split)", path=True
    )
    image_size: int | None = option(
        None, "image side (default: the data's own; needed for images of several sizes)", check=POSITIVE_INT
    )
    channels: int | None = option(
        None, "1 or 3 (default: the data's own: 3 if any image has colour)", check=one_of((1, 3)), parse=int
    )
    text_encoder: str = option(
        DEFAULT_TEXT_ENCODER, "frozen sentence encoder under the learned text projection (hub id or directory)"
    )
    embed_dim: int = option(128, "size of the shared image-text space", check=POSITIVE_INT)
    width: int = option(64, "channels of the image tower's convolutions", check=POSITIVE_INT)
    epochs: int | None = option(
        None,
        "passes over the training pairs (default: about 300,000 pair passes, in [10, 200])",
        check=POSITIVE_INT,
    )
    batch_size: int = option(256, "pairs per InfoNCE batch (the negatives of each pair)", check=int_at_least(2))
    lr: float = option(2e-3, "AdamW learning rate, one-cycle schedule", check=POSITIVE_NUMBER)
    seed: int = option(0, "seeds the weights, the shuffling and the shifts", check=SEED)
    device: str = option(
        "auto",
        "where the model trains and the sentence encoder runs: auto (CUDA, then MPS, then CPU), cpu, cuda[:N]",
        check=DEVICE,
    )
