"""MixupClassifier is a scikit-learn estimator: it passes scikit-learn's own estimator checks."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from latentmix.train.estimator import MixupClassifier


@parametrize_with_checks([MixupClassifier(steps=100)])
def test_mixup_classifier_passes_the_scikit_learn_checks(estimator, check):
    check(estimator)
