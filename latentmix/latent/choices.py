"""The options the latent maths takes, named once (standard library only).

The functions of this package check their arguments against these tuples, and the settings layer
(:mod:`latentmix.configs`) offers the same tuples as command-line choices without importing torch.
"""

METHODS = ("lerp", "slerp")  # latent interpolators (latentmix.latent.interpolate)
KEYFRAME_METHODS = ("spline", "slerp", "lerp")  # walks through keyframes (latentmix.latent.keyframes)
SPACINGS = ("uniform", "even")  # frame timing of walks (latentmix.latent.spacing)
STRATEGIES = ("random", "intra-class", "inter-class", "knn")  # pairing strategies (latentmix.latent.pairing)
