"""Which two examples each synthetic sample blends, and with what λ — a pure function of (seed, index).

Randomness here is counter-based: every draw for sample ``i`` is a hash of ``(seed, i, stream)``
(SplitMix64), not the next value of a shared generator. So sample ``i`` is the same whatever the
batch size, the number of processes or the point a run resumed from, and any range of indices
can be computed on its own.

Strategies:

* ``random``: two examples drawn uniformly (distinct when possible);
* ``intra-class``: two different examples of the same class (new examples of that class);
* ``inter-class``: examples of two different classes — any two, or one of the given
  ``class_pairs``;
* ``knn``: an anchor and one of its ``k`` nearest neighbours in latent space;
* ``augment``: one example and itself (variants of one image, DA-Fusion): sample ``i`` is example
  ``i mod N`` — the first N samples are one variant of every example, the next N a second, and so on;
* ``translate``: an example of class a and an example of another class b (Diff-Mix: the first is moved
  toward the second's class); any two classes, or one of the given ``class_pairs``.

Class balancing (``quota``, from :func:`balance_quota`): intra-class pairs whose class is fixed by the
sample index — the first ``quota[0]`` indices blend class 0, the next ``quota[1]`` class 1, and so on — so
every class gets exactly its quota, whatever the shard or process that makes a sample.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import betaincinv
from torch import Tensor

from latentmix.latent.choices import STRATEGIES

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_STREAMS = {"a": 1, "b": 2, "lambda": 3, "class": 4, "strength": 5, "noise": 6, "prompt": 7}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def _bits(seed: int, indices: np.ndarray, stream: str) -> np.ndarray:
    """64 random bits per index, a hash of (seed, index, stream)."""
    idx = np.asarray(indices, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x100000001B3) + np.uint64(_STREAMS[stream]))
        return _splitmix64(_splitmix64(idx ^ key) + key)


def uniform(seed: int, indices: np.ndarray, stream: str) -> np.ndarray:
    """Uniform floats in [0, 1), one per index, from a hash of (seed, index, stream)."""
    return (_bits(seed, indices, stream) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _choose(u: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.minimum((u * sizes).astype(np.int64), sizes - 1)


def choose(seed: int, indices: np.ndarray, stream: str, count: int) -> np.ndarray:
    """One of ``count`` options per index (uniform), drawn from (seed, index, stream)."""
    return _choose(uniform(seed, indices, stream), np.int64(count))


def noise_seeds(seed: int, indices: np.ndarray) -> list[int]:
    """A 63-bit generator seed per sample index, from (seed, index): the seed of that sample's own noise."""
    return [int(b) for b in _bits(seed, indices, "noise") >> np.uint64(1)]


def sample_noise(seed: int, indices: np.ndarray, shape: tuple[int, ...]) -> Tensor:
    """(len(indices), *shape) standard normal noise, each row from its sample's own generator (:func:`noise_seeds`):
    row ``i`` is the same whatever batch, shard or process draws it."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in noise_seeds(seed, indices)]
    return torch.stack(rows) if rows else torch.empty((0, *shape))


def sample_lambdas(seed: int, indices: np.ndarray, alpha: float) -> np.ndarray:
    """λ ~ Beta(alpha, alpha) per index, by the inverse CDF of the counter-based uniform."""
    return betaincinv(alpha, alpha, uniform(seed, indices, "lambda"))


def balance_quota(labels: np.ndarray, target: int) -> np.ndarray:
    """Synthetic samples each class needs to reach ``target`` examples (0: the largest class's count).

    Raises ValueError when ``target`` is below the largest class's count (balancing adds, it never removes)
    or when every class already has ``target``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels[labels >= 0])
    if not len(counts):
        raise ValueError("balance needs labelled source examples")
    largest = int(counts.max())
    goal = largest if target == 0 else int(target)
    if goal < largest:
        raise ValueError(
            f"balance target {goal} is below the largest class's count ({largest}, class {int(counts.argmax())}); "
            f"ask for at least {largest}, or 'max'"
        )
    quota = np.maximum(0, goal - counts)
    if not quota.any():
        raise ValueError(f"every class already has {goal} examples: nothing to balance")
    return quota


class Pairing:
    """Draws the pair ``(a, b)`` of source examples for any synthetic sample index.

    Args:
        strategy: one of ``random``, ``intra-class``, ``inter-class``, ``knn``.
        labels: (N,) class index of each source example (>= 0).
        seed: the run's seed.
        class_pairs: for ``inter-class``: the allowed (class_a, class_b) pairs; default all.
        latents: for ``knn``: (N, D) source latents to find neighbours in.
        k: for ``knn``: neighbours to choose from.
        quota: for ``intra-class``: samples per class (:func:`balance_quota`); sample ``i`` blends the class
            whose cumulative quota first exceeds ``i``. Default: classes drawn uniformly.
    """

    def __init__(
        self, strategy: str, labels: np.ndarray, seed: int, *, class_pairs=None, latents=None, k: int = 5, quota=None
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1 or len(labels) < 2:
            raise ValueError(f"need at least 2 source examples to pair, got {len(labels)}")
        self.strategy, self.labels, self.seed = strategy, labels, int(seed)
        self.n = len(labels)
        classes = np.unique(labels[labels >= 0])
        self.members = {int(c): np.flatnonzero(labels == c) for c in classes}
        # members as a padded (classes, max members) table, for vectorised picks
        size = int(classes.max()) + 1 if len(classes) else 0
        self.count = np.zeros(size, dtype=np.int64)
        self.table = np.full((size, max((len(m) for m in self.members.values()), default=0)), -1, dtype=np.int64)
        for c, m in self.members.items():
            self.count[c] = len(m)
            self.table[c, : len(m)] = m
        if strategy in ("intra-class", "inter-class", "translate") and (labels < 0).any():
            raise ValueError(f"strategy {strategy} needs a label for every source example")
        if strategy == "intra-class":
            self.classes = np.array([c for c, m in self.members.items() if len(m) >= 2])
            if not len(self.classes):
                raise ValueError("strategy intra-class needs a class with at least 2 examples")
        self.quota_end = None
        if quota is not None:
            if strategy != "intra-class":
                raise ValueError(f"quota applies to strategy intra-class, not {strategy}")
            quota = np.asarray(quota, dtype=np.int64)
            for short in np.flatnonzero(quota):
                have = int(self.count[short]) if short < len(self.count) else 0
                if have < 2:
                    raise ValueError(
                        f"class {int(short)} has {have} example(s); balancing by intra-class blends needs 2"
                    )
            self.quota_end = np.cumsum(quota)
        if strategy in ("inter-class", "translate"):
            if len(self.members) < 2:
                raise ValueError(f"strategy {strategy} needs at least 2 classes, the data has {len(self.members)}")
            if class_pairs is None:
                class_pairs = [(a, b) for a in self.members for b in self.members if a != b]
            pairs = []
            for ca, cb in class_pairs:
                ca, cb = int(ca), int(cb)
                if ca == cb:
                    raise ValueError(f"class_pairs: ({ca}, {cb}) is not a pair of two different classes")
                for c in (ca, cb):
                    if c not in self.members:
                        raise ValueError(f"class_pairs: class {c} has no examples in the source data")
                pairs.append((ca, cb))
            if not pairs:
                raise ValueError("class_pairs is empty")
            self.class_pairs = np.array(pairs, dtype=np.int64)
        if strategy == "knn":
            if latents is None:
                raise ValueError("strategy knn needs the source latents")
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            self.neighbours = _nearest_neighbours(np.asarray(latents, dtype=np.float32), min(k, self.n - 1))

    def pairs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source indices ``(a, b)`` for the synthetic sample indices given."""
        indices = np.asarray(indices, dtype=np.int64)
        ua, ub = uniform(self.seed, indices, "a"), uniform(self.seed, indices, "b")
        if self.strategy == "random":
            a = _choose(ua, np.int64(self.n))
            b = _choose(ub, np.int64(self.n - 1))
            return a, b + (b >= a)  # skip a: distinct examples
        if self.strategy == "augment":
            a = indices % self.n
            return a, a
        if self.strategy == "knn":
            a = _choose(ua, np.int64(self.n))
            return a, self.neighbours[a, _choose(ub, np.int64(self.neighbours.shape[1]))]
        uc = uniform(self.seed, indices, "class")
        if self.strategy == "intra-class":
            if self.quota_end is not None:
                if len(indices) and (indices.min() < 0 or indices.max() >= self.quota_end[-1]):
                    raise ValueError(f"sample indices must be in [0, {int(self.quota_end[-1])}) for this quota")
                cls = np.searchsorted(self.quota_end, indices, side="right")
            else:
                cls = self.classes[_choose(uc, np.int64(len(self.classes)))]
            pos_a = _choose(ua, self.count[cls])
            pos_b = _choose(ub, self.count[cls] - 1)
            pos_b = pos_b + (pos_b >= pos_a)  # a different example of the same class
            return self.table[cls, pos_a], self.table[cls, pos_b]
        ca, cb = self.class_pairs[_choose(uc, np.int64(len(self.class_pairs)))].T
        return self.table[ca, _choose(ua, self.count[ca])], self.table[cb, _choose(ub, self.count[cb])]


def _nearest_neighbours(latents: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows (Euclidean), computed in chunks."""
    flat = latents.reshape(len(latents), -1)
    sq = (flat**2).sum(1)
    out = np.empty((len(flat), k), dtype=np.int64)
    for start in range(0, len(flat), chunk):
        block = flat[start : start + chunk]
        d = sq[start : start + chunk, None] - 2 * block @ flat.T + sq[None, :]
        d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not itself
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1, kind="stable")
        out[start : start + chunk] = np.take_along_axis(part, order, 1)
    return out
