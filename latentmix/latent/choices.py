"""The options the latent maths takes, named once (standard library only).

The functions of this package check their arguments against these tuples, and the settings layer
(:mod:`latentmix.configs`) offers the same tuples as command-line choices without importing torch.
"""

METHODS = ("lerp", "slerp")  # latent interpolators (latentmix.latent.interpolate)
KEYFRAME_METHODS = ("spline", "slerp", "lerp")  # walks through keyframes (latentmix.latent.keyframes)
SPACINGS = ("uniform", "even")  # frame timing of walks (latentmix.latent.spacing)
#: pairing strategies (latentmix.latent.pairing): four blend two examples; ``augment`` makes variants of one
#: (DA-Fusion), ``translate`` moves one example toward another class's prompt (Diff-Mix)
STRATEGIES = ("random", "intra-class", "inter-class", "knn", "augment", "translate")
BLEND_STRATEGIES = STRATEGIES[:4]
NOISE_KINDS = ("inversion", "random")  # where a synthetic sample's noise comes from (latentmix.jobs.sources)
