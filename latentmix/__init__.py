"""latentmix: encode real data into a generative model's latent space, walk, decode."""

from latentmix.backends import LatentBackend, embedded_models, load_backend
from latentmix.data import load_dataset
from latentmix.grid import GridResult, decode_walk, interpolation_grid
from latentmix.interpolate import interpolate, interpolation_grid_2d, interpolation_path, lerp, sample_lambda, slerp
from latentmix.version import __version__

__all__ = [
    "GridResult",
    "LatentBackend",
    "__version__",
    "decode_walk",
    "embedded_models",
    "interpolate",
    "interpolation_grid",
    "interpolation_grid_2d",
    "interpolation_path",
    "lerp",
    "load_backend",
    "load_dataset",
    "sample_lambda",
    "slerp",
]
