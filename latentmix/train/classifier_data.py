"""What the classifier trainer trains and judges on: the labelled / validation / test splits and a synthetic set.

* ``digits`` (its fixed train/test split), an image folder with ``train/`` and ``test/``, or a feature
  file (``.npz`` with ``X_train``, ``y_train``, ``X_test``, ``y_test``) for an MLP;
* low-data runs: ``labels_per_class`` K examples per class drawn with ``seed`` (long-tailed with
  ``imbalance_ratio``)
  (:func:`latentmix.data.labelled_subset`) and a **disjoint** validation set of the same size drawn from
  the rest of the train split (:func:`low_data_split`), for early stopping and temperature fitting — the
  test split is used only for the final numbers;
* a synthetic set (``latentmix synthesize`` output): images and soft labels, optionally re-sharpened
  Diff-Mix style, and for cross-modal training the blended text embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentmix.configs import TrainConfig
from latentmix.data import SyntheticDataset, labelled_subset, load_train_test
from latentmix.latent.blend import soft_labels

VALIDATION_SEED_OFFSET = 10_000  # the validation draw of seed s uses seed s + 10,000


@dataclass
class Split:
    x: Tensor
    y: Tensor  # class indices, or soft labels (N, K) for synthetic sets
    t: Tensor | None = None  # text embeddings (cross-modal training)
    texts: list[str] | None = None
    factors: list[dict[str, str]] | None = None  # per row, the label and factor names (data with factors)


@dataclass
class TrainData:
    train: Split
    val: Split
    test: Split
    num_classes: int
    is_image: bool
    class_names: list[str]
    factor_values: dict[str, list[str]] | None = None  # the data's factors (shapes), for synchronized augmentation


def low_data_split(
    labels: np.ndarray, labels_per_class: int, seed: int, imbalance_ratio: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, validation) indices of a low-data run: K per class each, disjoint, drawn with ``seed``.

    With ``imbalance_ratio`` both are long-tailed the same way (a user with long-tailed labels has no balanced
    validation set either); the test split stays as it is.
    """
    labelled = labelled_subset(labels, labels_per_class, seed, imbalance_ratio=imbalance_ratio)
    val = labelled_subset(
        labels, labels_per_class, seed + VALIDATION_SEED_OFFSET, exclude=labelled, imbalance_ratio=imbalance_ratio
    )
    return labelled, val


def _feature_arrays(config: TrainConfig, arrays: dict | None) -> tuple[Any, Tensor, Split, None, None, None]:
    path = Path(config.data)
    if arrays is None and not path.is_file():
        raise ValueError(f"feature file {path} does not exist")
    arrays = arrays if arrays is not None else dict(np.load(path, allow_pickle=False))
    missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"feature file {path} lacks {', '.join(missing)}")
    for x_key, y_key in (("X_train", "y_train"), ("X_test", "y_test")):
        x, y = np.asarray(arrays[x_key]), np.asarray(arrays[y_key])
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"feature file {path}: {x_key} {x.shape} and {y_key} {y.shape} must have one row per label"
            )
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise ValueError(f"feature file {path}: {x_key} holds non-finite or non-numeric values")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"feature file {path}: {y_key} must hold integer class labels, got {y.dtype}")
    xtr = torch.as_tensor(arrays["X_train"], dtype=torch.float32)
    ytr = torch.as_tensor(arrays["y_train"], dtype=torch.long)
    test = Split(
        torch.as_tensor(arrays["X_test"], dtype=torch.float32), torch.as_tensor(arrays["y_test"], dtype=torch.long)
    )
    return xtr, ytr, test, None, None, None


def _image_splits(config: TrainConfig) -> tuple[LazyImages, Tensor, Split, list[str], list[str], Any]:
    """The train split undecoded (its rows are decoded when a split takes them: a low-data run decodes only its
    labelled and validation examples), and the test split."""
    train_ds, test_ds = load_train_test(config.data, image_size=config.image_size, channels=config.channels)
    if test_ds.class_names != train_ds.class_names:
        raise ValueError(f"data {config.data}: the test split's classes differ from the train split's")
    test = Split(test_ds.images(range(len(test_ds))), test_ds.labels, texts=list(test_ds.texts))
    return LazyImages(train_ds), train_ds.labels, test, list(train_ds.texts), train_ds.class_names, train_ds


def load_data(config: TrainConfig, arrays: dict | None = None) -> TrainData:
    """The labelled, validation and test splits of ``config.data`` (or of in-memory ``arrays``)."""
    is_image = arrays is None and Path(config.data).suffix != ".npz"
    xtr, ytr, test, texts_tr, names, source = _image_splits(config) if is_image else _feature_arrays(config, arrays)
    if len(xtr) == 0 or len(test.x) == 0:
        raise ValueError("the train and test data must not be empty")
    num_classes = int(max(ytr.max(), test.y.max())) + 1
    if int(ytr.min()) < 0 or int(test.y.min()) < 0:
        raise ValueError("labels must be >= 0 for training")
    if config.labels_per_class is not None:
        labelled, val = low_data_split(ytr.numpy(), config.labels_per_class, config.seed, config.imbalance_ratio)
    else:
        order = np.random.default_rng(config.seed).permutation(len(ytr))
        n_val = max(num_classes, len(ytr) // 10)
        val, labelled = np.sort(order[:n_val]), np.sort(order[n_val:])

    factor_values = None if source is None else source.factor_values

    def split(idx: np.ndarray) -> Split:  # image data: only these train rows are decoded (LazyImages)
        t = torch.from_numpy(idx)
        factors = None if factor_values is None or source is None else [source.factors(int(i)) for i in idx]
        return Split(xtr[t], ytr[t], texts=None if texts_tr is None else [texts_tr[i] for i in idx], factors=factors)

    class_names = list(names) if names else [str(i) for i in range(num_classes)]
    return TrainData(split(labelled), split(val), test, num_classes, is_image, class_names, factor_values)


class LazyImages:
    """The images of a dataset, decoded when indexed: ``x[indices]`` → (len, C, H, W); ``len(x)`` and ``x.shape``
    as for a tensor. A synthetic set in training is one (never all decoded at once)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.dataset), self.dataset.channels, self.dataset.image_size, self.dataset.image_size)

    def __getitem__(self, indices: Any) -> Tensor:
        if isinstance(indices, slice):
            indices = range(*indices.indices(len(self)))
        elif isinstance(indices, Tensor):
            indices = indices.reshape(-1).tolist()
        return self.dataset.images(list(indices))


def load_synthetic(config: TrainConfig, classes: int | list[str], sample_shape: tuple) -> Split | None:
    """The synthetic set of ``config.synthetic`` as a split with soft labels (None without one), its images
    (:class:`LazyImages`, decoded per batch) converted to the data's ``sample_shape`` (channels, then size: a
    64 px set trains on 32 px data). ``classes``: the data's class names (they must match the set's, in order), or
    only their number."""
    if config.synthetic is None:
        return None
    syn = SyntheticDataset(config.synthetic)
    if len(syn) == 0:
        import warnings

        warnings.warn(f"synthetic set {config.synthetic} holds no samples (its filter kept none); training on the "
                      "real data only", stacklevel=2)  # fmt: skip
        return None
    num_classes = classes if isinstance(classes, int) else len(classes)
    if len(syn.class_names) != num_classes:
        raise ValueError(
            f"synthetic set {config.synthetic} has {len(syn.class_names)} classes, the data has {num_classes}"
        )
    if not isinstance(classes, int) and list(syn.class_names) != list(classes):
        differ = next(i for i, (a, b) in enumerate(zip(syn.class_names, classes, strict=True)) if a != b)
        raise ValueError(f"synthetic set {config.synthetic} names class {differ} {syn.class_names[differ]!r}, the data "
                         f"{classes[differ]!r}: it was made from other data")  # fmt: skip
    if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
        raise ValueError(f"synthetic images are {syn.channels} x {syn.image_size} px, the data has {sample_shape}")
    if (syn.channels, syn.image_size) != (sample_shape[0], sample_shape[1]):
        syn = SyntheticDataset(config.synthetic, image_size=int(sample_shape[1]), channels=int(sample_shape[0]))
    x: Any = LazyImages(syn)
    y = syn.soft_labels
    if config.gamma is not None:
        if bool((syn.label_a < 0).any()):
            raise ValueError("gamma needs the source labels (label_a / label_b) in the synthetic set's metadata.jsonl")

        def onehot(labels: Tensor) -> Tensor:
            return nn.functional.one_hot(labels, num_classes).float()

        y = soft_labels(onehot(syn.label_a), onehot(syn.label_b), syn.lam, config.gamma)
    t = syn.text_embeddings() if config.reads != "image" else None
    return Split(x, y, t)
