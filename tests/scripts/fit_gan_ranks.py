"""Run by tests/backends/test_gan.py under torchrun: fit a tiny GAN; each process writes what it trained to
``rank<i>.json`` beside the output (two processes printing to one pipe can interleave their lines)."""

import hashlib
import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from latentmix.configs import GANFitConfig
from latentmix.train.fit_gan import fit_gan

result = fit_gan(
    GANFitConfig(latent_dim=8, width=16, epochs=1, encoder_epochs=1, batch_size=64, checkpoint_every=1), sys.argv[1],
    quiet=True,
)  # fmt: skip
weights = torch.cat([p.detach().flatten() for p in result.backend.generator.parameters()]).numpy().tobytes()
rank = PartialState().process_index
report = {"rank": rank, "digest": hashlib.sha256(weights).hexdigest(), **result.metrics}
(Path(sys.argv[1]).parent / f"rank{rank}.json").write_text(json.dumps(report))
