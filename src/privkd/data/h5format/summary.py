"""The human-readable description of a dataset file (``privkd data info PATH``).

Its length does not grow with the number of subjects or groups: a table of 250 people is
described by its subject count, the min / median / max samples per subject and a few ids
(naturally sorted: ``s2`` before ``s10``), never by one line per subject.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import h5py
import numpy as np

from privkd.data.h5format.spec import DatasetInfo, ModalityInfo

__all__ = ["describe", "natural_key"]

# Ids shown at the start and at the end of a naturally sorted id list that is cut short.
_IDS_HEAD, _IDS_TAIL = 6, 2
# Split names listed before "... (N more)".
_MAX_SPLITS = 8
_SHOWN_CHANNELS = 12


def natural_key(text: str) -> tuple[tuple[object, str], ...]:
    """Sort key comparing the runs of digits in ``text`` as numbers: ``s2 < s10``, ``02 < 10``.

    ``re.split`` with a capturing group alternates text and digit runs, so the parts at
    each position are always of the same type; ties (``2`` / ``02``, ``S1`` / ``s1``) fall
    back to the original text, so the order is total and deterministic.
    """
    parts = re.split(r"([0-9]+)", text)
    return tuple((int(part), part) if i % 2 else (part.casefold(), part) for i, part in enumerate(parts))


def _count_table(names: Sequence[str], counts: Sequence[int]) -> list[str]:
    width = max(len(n) for n in names)
    return [f"  {name:<{width}}  {count}" for name, count in zip(names, counts)]


def _labels_section(info: DatasetInfo, labels: np.ndarray) -> list[str]:
    if info.class_names is not None:
        counts = np.bincount(labels, minlength=len(info.class_names))
        names = [f"{i} {name}" for i, name in enumerate(info.class_names)]  # label order, never sorted
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
    if not m.channel_names:
        return text
    more = len(m.channel_names) - _SHOWN_CHANNELS  # a wide table's features modality names every column
    shown = ", ".join(m.channel_names[:_SHOWN_CHANNELS]) + (f", ... ({more} more)" if more > 0 else "")
    return f"{text}, channels {shown}"


def _id_list(ids: Sequence[str]) -> str:
    """All ids when there are few, else the first and last few around '...'."""
    if len(ids) <= _IDS_HEAD + _IDS_TAIL + 4:
        return ", ".join(ids)
    return ", ".join([*ids[:_IDS_HEAD], "...", *ids[-_IDS_TAIL:]])


def _id_summary(what: str, values: np.ndarray) -> list[str]:
    """'Subjects: 30, samples per subject min 1 (s7) / median 4 / max 9 (s2)', then a line of ids.

    Two lines whatever the number of ids; the ids with the fewest and the most samples are
    named (the first in natural order on a tie).
    """
    counts = Counter(values.tolist())
    ids = sorted(counts, key=natural_key)
    per_id = np.array([counts[i] for i in ids])
    low, high = ids[int(np.argmin(per_id))], ids[int(np.argmax(per_id))]
    heading = f"{what.capitalize()}s: {len(ids)}, "
    if per_id.min() == per_id.max():
        heading += f"{per_id.min()} sample{'s' if per_id.min() != 1 else ''} per {what}"
    else:
        heading += (f"samples per {what} min {per_id.min()} ({low}) / median {np.median(per_id):g} / "
                    f"max {per_id.max()} ({high})")
    return [heading, f"  ids: {_id_list(ids)}"]


def _splits_line(splits: np.ndarray) -> str:
    """'Splits: train 8, validation 4', in the order the splits first appear in the file."""
    counts = Counter(splits.tolist())  # insertion order = first appearance
    shown = [f"{name} {count}" for name, count in list(counts.items())[:_MAX_SPLITS]]
    rest = len(counts) - len(shown)
    return f"Splits ({len(counts)}): {', '.join(shown)}" + (f", ... ({rest} more)" if rest else "")


def _strings(h5: h5py.File, name: str) -> np.ndarray | None:
    obj = h5.get(name)
    return None if obj is None else np.asarray(obj.asstr()[()], dtype=object)


def describe(info: DatasetInfo) -> str:
    """Human-readable summary used by ``privkd data info PATH`` and by every import command.

    Reads the labels, subjects and (when present) groups and splits again from ``info.path``
    for the counts. Its number of lines depends on the modalities and classes only.
    """
    with h5py.File(info.path, "r") as h5:
        labels = np.asarray(h5["labels"][()])
        subjects = _strings(h5, "subjects")
        groups = _strings(h5, "groups")
        splits = _strings(h5, "splits")
    assert subjects is not None  # info comes from a validated file
    lines = [f"Dataset: {info.path}"]
    lines += [f"{key}: {value}" for key, value in (("Description", info.description), ("Source", info.source)) if value]
    lines += [f"Task: {info.task}", f"Samples: {info.n_samples}", "Modalities:"]
    lines += [_modality_line(m) for m in info.modalities.values()]
    lines += _labels_section(info, labels)
    lines += _id_summary(info.independence, subjects)
    if info.independence == "recording":
        lines.append("  (no subject ids: every recording is its own id, so results are recording-independent, "
                     "not subject-independent)")
    if groups is not None:
        lines += _id_summary("group", groups)[:1]
    if splits is not None:
        lines.append(_splits_line(splits))
    return "\n".join(lines)
