"""Tensor maths on latents, no models: interpolation (``interpolate``), keyframe paths (``keyframes``), frame
spacing (``spacing``), counter-based pairs and λ (``pairing``) and one-λ blends of latent, text and label
(``blend``). ``choices`` names the options these functions take (standard library only, read by the settings
layer for the command line).
"""
