"""Known-answer datasets: the synthetic tasks of Lopez-Paz et al. where privileged information provably helps.

Lopez-Paz, Bottou, Schölkopf and Vapnik, "Unifying distillation and privileged information"
(ICLR 2016), Sec. 4.1, draw small training sets on which a student that sees the privileged
features ``x*`` only through a teacher must beat one trained on ``x`` alone, and one negative
case where it must not. A distillation method that fails on them cannot be trusted where the
answer is unknown, so privkd ships them as datasets: ``data.path: synthetic:<setup>``.

Setups (``a`` a weight vector drawn once per seed, ``x`` the prevalent features, ``d`` of them):

- ``clean_labels``: ``x ~ N(0, I_d)``, ``x* = <a, x>`` (one feature), ``y = 1[x* + e > 0]``,
  ``e ~ N(0, 1)``: the privileged feature is the noise-free score behind the label.
- ``relevant_features``: ``x ~ N(0, I_d)``, ``x* = x_J`` for a random subset ``J`` of 3
  features, ``y = 1[<a_J, x*> > 0]``: the privileged features say which inputs matter.
- ``clean_features`` (the negative control): ``x* ~ N(0, I_d)``, ``x = x* + e``,
  ``e ~ N(0, I_d)``, ``y = 1[<a, x*> > 0]``: the paper's case where distillation should not
  help much, so every student should stay near the baseline.

Samples come in subjects of ``per_subject`` samples and three official splits (``train``,
``validation``, ``test``): run them with ``evaluation.protocol: splits``. A path may set the
sizes and the data seed, ``synthetic:relevant_features?d=50&n_train=200&seed=3``; without
``seed`` the data is drawn with the run's seed, so a study's seeds draw new datasets, as the
paper's repetitions do. The file is built once into privkd's cache directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from privkd.data.embedded import default_cache_dir
from privkd.data.h5format import FORMAT_VERSION, read_info, write_dataset
from privkd.errors import ConfigError, DatasetError

__all__ = ["PREFIX", "SETUPS", "SyntheticSpec", "parse_synthetic", "synthetic_arrays", "synthetic_dataset_path"]

PREFIX = "synthetic:"
SETUPS = ("clean_labels", "relevant_features", "clean_features")
RELEVANT = 3  # |J| of relevant_features, as in the paper
_BUILD_VERSION = 2  # bump when the drawing changes: the cache file name carries it
_SOURCE = ("Lopez-Paz, Bottou, Schölkopf and Vapnik (2016), Unifying distillation and privileged information, "
           "ICLR, Sec. 4.1 (synthetic experiments)")


@dataclass(frozen=True)
class SyntheticSpec:
    """One known-answer dataset: its setup, sizes and data seed (``None``: the run's seed)."""

    setup: str
    d: int = 50
    n_train: int = 200
    n_val: int = 50
    n_test: int = 10_000
    per_subject: int = 5
    seed: int | None = None

    def file_name(self, seed: int) -> str:
        sizes = f"d{self.d}-tr{self.n_train}-va{self.n_val}-te{self.n_test}-ps{self.per_subject}"
        return f"synthetic-{self.setup}-{sizes}-s{seed}-b{_BUILD_VERSION}-f{FORMAT_VERSION}.h5"


def parse_synthetic(path: str) -> SyntheticSpec:
    """The spec of a ``synthetic:<setup>[?key=value&...]`` data path; a :class:`ConfigError` on
    ``data.path`` names what is wrong."""
    setup, _, query = path.removeprefix(PREFIX).partition("?")
    if setup not in SETUPS:
        raise ConfigError("data.path", f"unknown synthetic setup {setup!r}", f"use one of {[PREFIX + s for s in SETUPS]}")
    known = {f.name for f in dataclasses.fields(SyntheticSpec)} - {"setup"}
    values: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []:
        if key not in known:
            raise ConfigError("data.path", f"unknown synthetic setting {key!r} in {path!r}", f"use some of {sorted(known)}")
        try:
            values[key] = int(value)
        except ValueError:
            raise ConfigError("data.path", f"{key}={value!r} in {path!r} is not a whole number",
                              f"write e.g. {key}=3") from None
    spec = SyntheticSpec(setup, **values)
    small = {key: getattr(spec, key) for key in ("d", "n_train", "n_val", "n_test", "per_subject")
             if getattr(spec, key) < 1}
    if small:
        raise ConfigError("data.path", f"synthetic sizes must be at least 1, got {small}", "raise them")
    if spec.per_subject > min(spec.n_train, spec.n_val, spec.n_test):
        raise ConfigError("data.path", f"per_subject={spec.per_subject} exceeds a split's size",
                          "lower per_subject below n_train, n_val and n_test")
    return spec


def synthetic_arrays(spec: SyntheticSpec, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, x_star, y)`` of ``n_train + n_val + n_test`` samples drawn with ``seed`` (float32, int64).

    The task's parameters (``a``, ``J``), the features and the noise come from three streams
    of their own, each filled sample by sample, so the training and validation samples are the
    same whatever ``n_test`` is."""
    setup = SETUPS.index(spec.setup)
    params, features, noise = (np.random.default_rng([seed, setup, stream]) for stream in range(3))
    n, d = spec.n_train + spec.n_val + spec.n_test, spec.d
    a = params.standard_normal(d)
    relevant = params.choice(d, size=min(RELEVANT, d), replace=False)
    if spec.setup == "clean_labels":
        x = features.standard_normal((n, d))
        x_star = (x @ a)[:, None]
        y = x_star[:, 0] + noise.standard_normal(n) > 0
    elif spec.setup == "relevant_features":
        x = features.standard_normal((n, d))
        x_star = x[:, relevant]
        y = x_star @ a[relevant] > 0
    else:  # clean_features
        x_star = features.standard_normal((n, d))
        x = x_star + noise.standard_normal((n, d))
        y = x_star @ a > 0
    return x.astype(np.float32), x_star.astype(np.float32), y.astype(np.int64)


def _subjects_and_splits(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """Subject ids (``per_subject`` consecutive samples each, never crossing splits) and split names."""
    subjects, splits = [], []
    for name, size in (("train", spec.n_train), ("validation", spec.n_val), ("test", spec.n_test)):
        subjects += [f"{name}{i // spec.per_subject:05d}" for i in range(size)]
        splits += [name] * size
    return np.array(subjects), np.array(splits)


def build_synthetic_dataset(spec: SyntheticSpec, seed: int, path: str | Path) -> Path:
    """Write the dataset of ``spec`` drawn with ``seed`` at ``path``."""
    x, x_star, y = synthetic_arrays(spec, seed)
    subjects, splits = _subjects_and_splits(spec)
    return write_dataset(
        path, modalities={"x": x, "x_star": x_star}, labels=y, subjects=subjects, splits=splits,
        task="classification", class_names=["negative", "positive"],
        modality_kinds={"x": "features", "x_star": "features"},
        description=(f"Known-answer task '{spec.setup}' (d={spec.d}, {spec.n_train} train / {spec.n_val} validation / "
                     f"{spec.n_test} test samples, data seed {seed}): prevalent x, privileged x_star."),
        source=_SOURCE,
    )


def synthetic_dataset_path(path: str, run_seed: int, cache_dir: str | Path | None = None) -> Path:
    """The cached file of the ``synthetic:`` data path ``path`` (built on first use), drawn with
    the path's ``seed`` or else ``run_seed``."""
    spec = parse_synthetic(path)
    seed = run_seed if spec.seed is None else spec.seed
    file = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / spec.file_name(seed)
    if file.is_file():
        try:
            read_info(file)
            return file
        except DatasetError:
            pass
    return build_synthetic_dataset(spec, seed, file)
