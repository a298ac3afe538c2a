"""The embedded default dataset: smartwatch inertial signals of shoulder exercises.

The ``seglearn`` wheel ships ``seglearn/data/watch_dataset.npy``: 140
recordings (10 subjects x 14) of 7 shoulder-physiotherapy exercises (20
recordings each) from a smartwatch's accelerometer and gyroscope at 50 Hz
(Burns et al. 2018, arXiv:1802.01489). It needs no download, so every privkd
command has real multi-subject, two-modality data to run on out of the box:
e.g. distil a gyroscope+accelerometer teacher into an accelerometer student.

Each recording is cut into 2 s windows with 50 % overlap; windows are not
normalised (training normalises per fold, on training subjects only).
"""

from __future__ import annotations

import codecs
import importlib
import importlib.util
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from privkd.data.h5format import FORMAT_VERSION, read_info, write_dataset
from privkd.errors import DatasetError, PrivkdError

__all__ = [
    "HOP",
    "OVERLAP",
    "SAMPLING_RATE",
    "WINDOW",
    "WINDOW_SECONDS",
    "build_watch_dataset",
    "embedded_dataset_path",
    "load_watch_recordings",
    "restricted_loads",
    "watch_recordings_path",
]

WINDOW_SECONDS = 2.0
OVERLAP = 0.5
SAMPLING_RATE = 50.0
WINDOW = round(WINDOW_SECONDS * SAMPLING_RATE)  # 100 samples
HOP = round(WINDOW * (1 - OVERLAP))  # 50 samples
# Bump when the windowing or content of the built file changes: the cache
# file name carries it, so an old cache is never reused for new code.
_BUILD_VERSION = 1
_CACHE_NAME = f"watch-b{_BUILD_VERSION}-f{FORMAT_VERSION}-w{WINDOW}-h{HOP}.h5"
_CHANNELS = {"accelerometer": ("ax", "ay", "az"), "gyroscope": ("wx", "wy", "wz")}
_SOURCE = ("Burns et al. (2018), Shoulder physiotherapy exercise recognition: machine learning the inertial "
           "signals from a smartwatch, arXiv:1802.01489; file seglearn/data/watch_dataset.npy of the seglearn package.")
_DESCRIPTION = (f"Smartwatch recordings of 7 shoulder-physiotherapy exercises by 10 subjects (140 recordings), "
                f"accelerometer and gyroscope at {SAMPLING_RATE:g} Hz, cut into {WINDOW_SECONDS:g} s windows "
                f"with {OVERLAP:.0%} overlap; groups are recording ids. Not normalised.")


def _numpy_reconstruct() -> Any:
    """numpy's array-unpickling function under its numpy 2 or numpy 1 module path."""
    try:
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray")._reconstruct


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_reconstruct()
    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles encode bytes this way
    }


_ALLOWED_GLOBALS = _allowed_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dtypes and plain containers, nothing else.

    A pickle can name any importable callable (``os.system``, ``eval``) and
    have it called on load; refusing every global outside a short allow-list
    makes loading a shipped data file unable to run code, which is the
    project's "load safely" rule.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only numpy arrays and plain containers are allowed"
            )
        return _ALLOWED_GLOBALS[(module, name)]


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` allowing only numpy arrays/dtypes and builtin containers."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def watch_recordings_path() -> Path:
    """Location of ``watch_dataset.npy`` inside the installed seglearn package.

    Found with ``find_spec`` instead of importing seglearn, whose import needs
    pandas and scikit-learn that privkd does not depend on.
    """
    spec = importlib.util.find_spec("seglearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "data" / "watch_dataset.npy"
        if candidate.is_file():
            return candidate
    raise PrivkdError("the embedded dataset's source file seglearn/data/watch_dataset.npy was not found",
                      "install the 'seglearn' package (a privkd dependency): pip install seglearn")


def load_watch_recordings(path: str | Path | None = None) -> dict[str, Any]:
    """Load the raw recordings dict (keys X, y, y_labels, subject, side, X_labels) safely.

    The ``.npy`` holds a pickled object array; rather than
    ``np.load(allow_pickle=True)``, which would execute whatever the pickle
    names, the header is parsed with numpy and the payload goes through
    :func:`restricted_loads`.
    """
    path = Path(path) if path is not None else watch_recordings_path()
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype != np.dtype(object) or shape != ():
            raise PrivkdError(f"{path}: expected a pickled dict (0-d object array), found {dtype} {shape}",
                              "reinstall seglearn; the file is not the one privkd was written for")
        recordings = restricted_loads(f.read()).item()
    return recordings


def _windows(recording: np.ndarray) -> np.ndarray:
    """All full windows of a (time, channels) recording as (n_windows, channels, WINDOW)."""
    view = np.lib.stride_tricks.sliding_window_view(recording, WINDOW, axis=0)  # (time-WINDOW+1, channels, WINDOW)
    return view[::HOP]


def _windowed_arrays(recordings: dict[str, Any]) -> dict[str, np.ndarray]:
    """Window every recording; per-window columns keep their recording's label, subject and id."""
    channel_index = {name: i for i, name in enumerate(recordings["X_labels"])}
    windows, labels, subjects, groups = [], [], [], []
    for r, (signal, label, subject) in enumerate(zip(recordings["X"], recordings["y"], recordings["subject"])):
        w = _windows(np.asarray(signal, dtype=np.float64))
        windows.append(w)
        labels.append(np.full(len(w), int(label), dtype=np.int64))
        subjects += [f"{int(subject):02d}"] * len(w)
        groups += [f"rec{r:03d}"] * len(w)
    stacked = np.concatenate(windows)
    arrays = {name: stacked[:, [channel_index[c] for c in channels]] for name, channels in _CHANNELS.items()}
    return {**arrays, "labels": np.concatenate(labels), "subjects": np.asarray(subjects),
            "groups": np.asarray(groups)}


def _write_watch(path: str | Path, arrays: dict[str, np.ndarray], **task: Any) -> Path:
    return write_dataset(
        path,
        modalities={name: arrays[name] for name in _CHANNELS},
        subjects=arrays["subjects"],
        groups=arrays["groups"],
        modality_kinds={name: "signal" for name in _CHANNELS},
        sampling_rates={name: SAMPLING_RATE for name in _CHANNELS},
        channel_names={name: list(channels) for name, channels in _CHANNELS.items()},
        description=_DESCRIPTION,
        source=_SOURCE,
        **task,
    )


def build_watch_dataset(path: str | Path) -> Path:
    """Build the windowed smartwatch dataset (7-class exercise recognition) at ``path``."""
    recordings = load_watch_recordings()
    arrays = _windowed_arrays(recordings)
    return _write_watch(
        path, arrays, labels=arrays["labels"], task="classification", class_names=[str(c) for c in recordings["y_labels"]]
    )


REGRESSION_TARGETS = ("angular_speed", "acceleration_variability")


def movement_targets(accelerometer: np.ndarray, gyroscope: np.ndarray) -> np.ndarray:
    """Two continuous per-window targets, (n, 2), in the spirit of valence/arousal.

    ``angular_speed``: log of the mean gyroscope magnitude |ω| over the window; mostly
    visible to the privileged sensor. ``acceleration_variability``: log of the standard
    deviation of the accelerometer magnitude |a| over the window; visible to the
    prevalent one. Logs keep the heavy-tailed intensities on a scale where CCC is meaningful.
    """
    angular = np.log(np.linalg.norm(gyroscope, axis=1).mean(axis=-1) + 1e-3)
    variability = np.log(np.linalg.norm(accelerometer, axis=1).std(axis=-1) + 1e-3)
    return np.stack([angular, variability], axis=1).astype(np.float32)


def build_watch_regression_dataset(path: str | Path) -> Path:
    """The same windows with :func:`movement_targets` as regression targets, at ``path``."""
    arrays = _windowed_arrays(load_watch_recordings())
    targets = movement_targets(arrays["accelerometer"], arrays["gyroscope"])
    return _write_watch(path, arrays, labels=targets, task="regression", target_names=list(REGRESSION_TARGETS))


EMBEDDED_VARIANTS = {"classification": build_watch_dataset, "regression": build_watch_regression_dataset}


def default_cache_dir() -> Path:
    """Where privkd keeps files it builds once (embedded data, cached backbone features)."""
    if os.environ.get("PRIVKD_CACHE"):
        return Path(os.environ["PRIVKD_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "privkd"
    return Path.home() / ".cache" / "privkd"


def embedded_dataset_path(cache_dir: str | Path | None = None, variant: str = "classification") -> Path:
    """Path of the embedded dataset file, built on first use and cached.

    ``variant``: ``classification`` (exercise recognition) or ``regression``
    (:func:`movement_targets`).

    The cache directory defaults to ``$PRIVKD_CACHE``, else
    ``$XDG_CACHE_HOME/privkd``, else ``~/.cache/privkd``. Concurrent first
    uses are safe: each process writes its own temporary file and renames it
    atomically, so readers only ever see a complete file. A damaged cache
    file is rebuilt.
    """
    if variant not in EMBEDDED_VARIANTS:
        raise ValueError(f"unknown embedded dataset {variant!r}; available: {sorted(EMBEDDED_VARIANTS)}")
    name = _CACHE_NAME if variant == "classification" else _CACHE_NAME.replace("watch-", f"watch-{variant}-")
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / name
    if path.is_file():
        try:
            read_info(path)
            return path
        except DatasetError:
            pass
    return EMBEDDED_VARIANTS[variant](path)
