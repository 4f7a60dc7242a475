"""A scikit-learn-style estimator: an MLP trained with mixup, calibrated by temperature scaling."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from latentmix.configs import DEFAULT_TEMPERATURE_PRIOR, TrainConfig
from latentmix.train.classifier import train_classifier


class MixupClassifier(ClassifierMixin, BaseEstimator):
    """MLP on feature vectors with input or manifold mixup; ``predict_proba`` is temperature-scaled.

    Parameters are stored as given (scikit-learn convention) and validated in ``fit``.

    Args:
        mixup: ``"none"``, ``"input"`` or ``"manifold"``.
        alpha: Beta(alpha, alpha) for λ (default 0.4 input, 2.0 manifold).
        steps, batch_size, lr: optimisation.
        width: the trainer's width; the MLP's hidden layers have ``8 * width`` units, as in ``latentmix train``.
        random_state: seed for the validation split, weights and mixing.
        temperature_prior: σ of the log-normal prior on the fitted temperature (``None``: plain NLL fit).
    """

    def __init__(
        self,
        mixup: str = "input",
        alpha: float | None = None,
        steps: int = 1000,
        batch_size: int = 64,
        lr: float = 2e-3,
        width: int = 32,
        random_state: int = 0,
        temperature_prior: float | None = DEFAULT_TEMPERATURE_PRIOR,
    ):
        self.mixup, self.alpha, self.steps, self.batch_size = mixup, alpha, steps, batch_size
        self.lr, self.width, self.random_state, self.temperature_prior = lr, width, random_state, temperature_prior

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes, got {len(classes)} class")
        if self.mixup == "cutmix":
            raise ValueError("mixup cutmix needs images; use input or manifold for feature vectors")
        self.classes_ = classes
        config = TrainConfig(
            mixup=self.mixup,
            alpha=self.alpha,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            width=self.width,
            seed=self.random_state,
            eval_every=max(1, self.steps // 10),
            temperature_prior=self.temperature_prior,
        )
        arrays = {"X_train": X, "y_train": encoded, "X_test": X[:2], "y_test": encoded[:2]}
        report = train_classifier(config, quiet=True, arrays=arrays)
        # predicted in float64: float32 kernels round a row differently with the batch size (blocking), and
        # scikit-learn requires a row's prediction not to depend on the rows beside it
        self.model_ = report.model.cpu().double().eval()
        self.temperature_ = report.temperature
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.inference_mode():
            logits = self.model_(torch.from_numpy(X))
        return (logits / self.temperature_).softmax(1).numpy()

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.classes_[self.predict_proba(X).argmax(1)]
