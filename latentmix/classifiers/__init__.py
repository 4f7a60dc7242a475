"""Classifiers: the networks latentmix trains (``networks``), the reference judges of ``evaluate``
(``reference``), the image-text alignment model and its scoring (``align``), calibration and accuracy metrics
(``metrics``) and robust accuracy (``robustness``). The code that fits them lives in :mod:`latentmix.train`.
"""
