"""The human-readable description of a dataset file (``privkd data info PATH``)."""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from privkd.data.h5format.spec import DatasetInfo, ModalityInfo

__all__ = ["describe"]


def _count_table(names: Sequence[str], counts: Sequence[int]) -> list[str]:
    width = max(len(n) for n in names)
    return [f"  {name:<{width}}  {count}" for name, count in zip(names, counts)]


def _labels_section(info: DatasetInfo, labels: np.ndarray) -> list[str]:
    if info.class_names is not None:
        counts = np.bincount(labels, minlength=len(info.class_names))
        names = [f"{i} {name}" for i, name in enumerate(info.class_names)]
        return [f"Classes ({len(names)}, samples per class):", *_count_table(names, counts.tolist())]
    columns = labels.reshape(len(labels), -1)
    names = info.target_names or [f"target_{j}" for j in range(columns.shape[1])]
    lines = [f"Targets ({len(names)}):"]
    for name, column in zip(names, columns.T):
        lines.append(f"  {name}: min {column.min():.4g}, mean {column.mean():.4g}, max {column.max():.4g}")
    return lines


def _modality_line(m: ModalityInfo) -> str:
    rate = "no sampling rate" if m.sampling_rate is None else f"{m.sampling_rate:g} Hz"
    text = f"  {m.name}: {m.kind}, per-sample shape {m.sample_shape}, {rate}"
    return f"{text}, channels {', '.join(m.channel_names)}" if m.channel_names else text


def describe(info: DatasetInfo) -> str:
    """Human-readable summary used by ``privkd data info PATH``.

    Reads the labels and subjects again from ``info.path`` for the counts.
    """
    with h5py.File(info.path, "r") as h5:
        labels = np.asarray(h5["labels"][()])
        subjects = np.asarray(h5["subjects"].asstr()[()], dtype=str)
    names, counts = np.unique(subjects, return_counts=True)
    lines = [f"Dataset: {info.path}"]
    lines += [f"{key}: {value}" for key, value in (("Description", info.description), ("Source", info.source)) if value]
    lines += [f"Task: {info.task}", f"Samples: {info.n_samples}", "Modalities:"]
    lines += [_modality_line(m) for m in info.modalities.values()]
    lines += _labels_section(info, labels)
    lines += [f"Subjects ({len(names)}, samples per subject):", *_count_table(names.tolist(), counts.tolist())]
    return "\n".join(lines)
