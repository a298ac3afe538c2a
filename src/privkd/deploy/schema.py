"""The schema of ``student.json``, checked before anything is built, allocated or loaded.

A student directory may come from anyone, so its description is read as untrusted input:

* the file is read only up to :data:`MAX_JSON_BYTES`, parsed as strict JSON (no ``NaN`` /
  ``Infinity``, no key given twice) and refused when nested deeper than :data:`MAX_DEPTH`;
* every field has its type checked, unknown keys are refused, and every size that decides
  how much memory the network takes (``embed_dim``, ``fusion_dim``, the T-Net's widths,
  ``tokens``, ``attention_heads``, the number of inputs and outputs, each input's sample
  shape) has an upper bound (:data:`LIMITS`);
* the ``weights`` record must name ``weights.pt`` and give its sha256, so no shape of the
  JSON skips the checksum.

Every problem is one :class:`~privkd.errors.PrivkdError` line naming the file and the field.
The loader (:func:`privkd.deploy.student.load_student`) then builds the network on PyTorch's
``meta`` device (no memory), compares its size with the weights file and verifies the
checksum before the real network and its weights are allocated.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privkd.config import RunConfig
from privkd.config.parse import build_config
from privkd.data.h5format import INDEPENDENCE, MODALITY_KINDS, TASKS
from privkd.errors import ConfigError, PrivkdError
from privkd.models.build import DEPLOYABLE_ROLES

__all__ = ["LIMITS", "MAX_DEPTH", "MAX_JSON_BYTES", "check_card", "check_config", "read_card_json"]

MAX_JSON_BYTES = 64 << 20
"""Largest student.json read (64 MiB; a million feature names take about 20 MiB)."""
MAX_DEPTH = 16
"""Deepest nesting of JSON lists / objects (a student's own description nests 5 deep)."""

LIMITS: dict[str, int] = {
    "inputs": 64,  # prevalent modalities
    "privileged": 64,
    "outputs": 100_000,  # classes or regression targets
    "names": 1_000_000,  # channel / feature names of one modality, training subjects
    "text": 1_000_000,  # characters of one string (a description)
    "name": 1_000,  # characters of a modality, row, method or metric name
    "sample_dims": 4,  # video samples are (3, T, H, W)
    "sample_size": 1 << 28,  # values in one sample
    "embed_dim": 16_384,
    "fusion_dim": 16_384,
    "tnet_hidden": 16_384,
    "tnet_bottleneck": 16_384,
    "tokens": 4_096,
    "attention_heads": 1_024,
}
"""Upper bounds on the sizes a student.json may ask for; far above any trained student."""

MODEL_SIZES = ("embed_dim", "fusion_dim", "tnet_hidden", "tnet_bottleneck", "tokens", "attention_heads")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIX = "the file is damaged or was edited; use the student directory save_student wrote, or save the student again"


def _short(value: Any) -> str:
    """``repr`` of a value, cut to one short line (a field may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class _Checker:
    """Field checks that raise one PrivkdError naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str, fix: str = _FIX) -> PrivkdError:
        return PrivkdError(f"{self.path}: field '{field}': {problem}", fix)

    def mapping(self, field: str, value: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected an object, found {_type(value)} ({_short(value)})")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.fail(field, f"missing key {missing[0]!r}")
        unknown = [k for k in value if k not in required and k not in optional]
        if unknown:
            raise self.fail(field, f"unknown key {_short(unknown[0])} (allowed: {', '.join((*required, *optional))})")
        return value

    def integer(self, field: str, value: Any, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(field, f"expected an integer, found {_type(value)} ({_short(value)})")
        if not low <= value <= high:
            raise self.fail(field, f"{value} is outside [{low}, {high}]")
        return value

    def number(self, field: str, value: Any, *, nullable: bool = True, positive: bool = False) -> float | None:
        if value is None and nullable:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise self.fail(field, f"expected a finite number{' or null' if nullable else ''}, found {_type(value)} "
                            f"({_short(value)})")
        if positive and value <= 0:
            raise self.fail(field, f"expected a positive number, found {_short(value)}")
        return float(value)

    def string(self, field: str, value: Any, *, limit: int = LIMITS["text"], empty: bool = True,
               nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, found {_type(value)} ({_short(value)})")
        if not value and not empty:
            raise self.fail(field, "is empty")
        if len(value) > limit:
            raise self.fail(field, f"a string of {len(value)} characters, at most {limit} allowed")
        return value

    def names(self, field: str, value: Any, *, limit: int, nullable: bool = True, unique: bool = True,
              length: int | None = None) -> list[str] | None:
        if value is None and nullable:
            return None
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list of names, found {_type(value)} ({_short(value)})")
        if len(value) > limit:
            raise self.fail(field, f"{len(value)} names, at most {limit} allowed")
        for i, name in enumerate(value):
            self.string(f"{field}[{i}]", name, limit=LIMITS["name"] * 10, empty=False)
        if unique and len(set(value)) != len(value):
            repeated = next(n for i, n in enumerate(value) if n in value[:i])
            raise self.fail(field, f"the name {_short(repeated)} appears more than once")
        if length is not None and len(value) != length:
            raise self.fail(field, f"{len(value)} names for {length} entries")
        return value

    def choice(self, field: str, value: Any, allowed: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(field, f"{_short(value)} is not one of {', '.join(allowed)}")
        return value


# ----------------------------------------------------------------------------- reading


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {_short(key)} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a value must be a finite number)")


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iteratively: never a RecursionError)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_card_json(path: Path) -> Any:
    """The parsed content of a student.json: strict JSON, at most :data:`MAX_JSON_BYTES`,
    nested at most :data:`MAX_DEPTH` deep. Its fields are checked by :func:`check_card`."""
    fix = "point to a directory written by save_student (a run's student folder), or save the student again"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise PrivkdError(f"{path}: unreadable student description ({type(exc).__name__}: {exc.strerror or exc})",
                          fix) from exc
    if len(raw) > MAX_JSON_BYTES:
        raise PrivkdError(f"{path}: unreadable student description (larger than {MAX_JSON_BYTES >> 20} MiB)",
                          f"the file is damaged or not a student description; {fix}")
    try:
        card = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as exc:
        raise PrivkdError(f"{path}: unreadable student description (lists or objects nested more than {MAX_DEPTH} deep)",
                          f"the file is damaged; {fix}") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PrivkdError(f"{path}: unreadable student description ({message})", f"the file is damaged; {fix}") from exc
    if _depth(card) > MAX_DEPTH:
        raise PrivkdError(f"{path}: unreadable student description (lists or objects nested more than {MAX_DEPTH} deep)",
                          f"the file is damaged; {fix}")
    return card


# ----------------------------------------------------------------------------- checking


def _check_modality(c: _Checker, field: str, entry: Any) -> None:
    entry = c.mapping(field, entry, ("kind", "sample_shape"), ("sampling_rate", "channel_names", "feature_columns"))
    kind = c.choice(f"{field}.kind", entry["kind"], MODALITY_KINDS)
    shape = entry["sample_shape"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= LIMITS["sample_dims"]:
        raise c.fail(f"{field}.sample_shape", f"expected a list of 1 to {LIMITS['sample_dims']} sizes, found "
                     f"{_short(shape)}")
    for i, size in enumerate(shape):
        c.integer(f"{field}.sample_shape[{i}]", size, 1, LIMITS["sample_size"])
    if math.prod(shape) > LIMITS["sample_size"]:
        raise c.fail(f"{field}.sample_shape", f"{math.prod(shape)} values per sample, at most {LIMITS['sample_size']} "
                     "allowed")
    rate = c.number(f"{field}.sampling_rate", entry.get("sampling_rate"), positive=True)
    if rate is None and kind != "features":
        raise c.fail(f"{field}.sampling_rate", f"a {kind} modality needs its sampling rate (only 'features' have none)")
    c.names(f"{field}.channel_names", entry.get("channel_names"), limit=LIMITS["names"], length=shape[0])
    columns = entry.get("feature_columns")
    if columns is not None and (kind != "features" or len(shape) != 1):
        raise c.fail(f"{field}.feature_columns", f"only a 1-D features modality has feature columns, not a {kind} "
                     f"modality shaped {tuple(shape)}")
    c.names(f"{field}.feature_columns", columns, limit=LIMITS["names"], length=shape[0])


def _check_modalities(c: _Checker, field: str, value: Any, *, nullable_entries: bool) -> dict:
    limit = LIMITS["inputs" if field == "inputs" else "privileged"]
    if not isinstance(value, dict):
        raise c.fail(field, f"expected an object (modality name: description), found {_type(value)} ({_short(value)})")
    if len(value) > limit:
        raise c.fail(field, f"{len(value)} modalities, at most {limit} allowed")
    for name, entry in value.items():
        c.string(f"{field} name", name, limit=LIMITS["name"], empty=False)
        if "/" in name:
            raise c.fail(f"{field}.{name}", "a modality name cannot hold '/'")
        if entry is None and nullable_entries:
            continue
        _check_modality(c, f"{field}.{name}", entry)
    return value


def _check_metrics(c: _Checker, field: str, value: Any, nested: bool) -> None:
    if not isinstance(value, dict):
        raise c.fail(field, f"expected an object (metric: value), found {_type(value)} ({_short(value)})")
    for name, entry in value.items():
        c.string(f"{field} name", name, limit=LIMITS["name"], empty=False)
        if nested:
            if not isinstance(entry, dict):
                raise c.fail(f"{field}.{name}", f"expected an object, found {_type(entry)} ({_short(entry)})")
            for key, number in entry.items():
                c.string(f"{field}.{name} name", key, limit=LIMITS["name"], empty=False)
                c.number(f"{field}.{name}.{key}", number)
        else:
            c.number(f"{field}.{name}", entry)


def check_card(path: Path, card: Any, format_name: str, format_version: int, weights_file: str) -> dict[str, Any]:
    """``card`` (read from ``path``) if it is a student description this privkd can use: every
    field of the right type and within :data:`LIMITS`; else a :class:`PrivkdError` naming the field."""
    c = _Checker(path)
    fix = "point to a directory written by save_student (a run's student folder), or save the student again"
    if not isinstance(card, dict) or card.get("format") != format_name:
        found = card.get("format") if isinstance(card, dict) else None
        raise PrivkdError(f"{path}: not a privkd student description (format {_short(found)})", fix)
    version = card.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= format_version:
        raise PrivkdError(f"{path}: student format version {_short(version)}, this privkd reads version "
                          f"{format_version}", "upgrade privkd, or save the student with this version")
    c.mapping("<root>", card, ("format", "format_version", "row", "method", "role", "task", "inputs", "config", "weights"),
              ("class_names", "target_names", "privileged", "training", "test_metrics", "cross_validated",
               "privkd_version", "torch_version"))
    for key in ("row", "method"):
        c.string(key, card[key], limit=LIMITS["name"], empty=False)
    for key in ("privkd_version", "torch_version"):
        c.string(key, card.get(key), limit=LIMITS["name"], nullable=True)
    role = card["role"]
    if not isinstance(role, str) or role not in DEPLOYABLE_ROLES:
        raise PrivkdError(f"{path}: role {_short(role)} is not a deployable student role", fix)
    task = c.choice("task", card["task"], TASKS)
    outputs = "class_names" if task == "classification" else "target_names"
    for key in ("class_names", "target_names"):
        c.names(key, card.get(key), limit=LIMITS["outputs"], nullable=key != outputs)
    if not card[outputs]:
        raise c.fail(outputs, f"a {task} student needs at least one name")

    inputs = _check_modalities(c, "inputs", card["inputs"], nullable_entries=False)
    if not inputs:
        raise c.fail("inputs", "no input modality (a student needs at least one prevalent modality)")
    privileged = card.get("privileged")
    if privileged is not None:
        _check_modalities(c, "privileged", privileged, nullable_entries=True)
        both = sorted(set(inputs) & set(privileged))
        if both:
            raise c.fail("privileged", f"modality {both[0]!r} is listed both as an input and as privileged")

    training = card.get("training")
    if training is not None:
        training = c.mapping("training", training, (), ("dataset", "data_path", "description", "source", "fold",
                                                        "train_subjects", "independence"))
        if training.get("independence", INDEPENDENCE[0]) not in INDEPENDENCE:
            raise c.fail("training.independence", f"{_short(training['independence'])} is not one of "
                         f"{list(INDEPENDENCE)}")
        for key in ("dataset", "data_path", "description", "source"):
            c.string(f"training.{key}", training.get(key, ""))
        if training.get("fold") is not None:
            c.integer("training.fold", training["fold"], 0, 1_000_000)
        c.names("training.train_subjects", training.get("train_subjects"), limit=LIMITS["names"], unique=False)
    if card.get("test_metrics") is not None:
        _check_metrics(c, "test_metrics", card["test_metrics"], nested=False)
    if card.get("cross_validated") is not None:
        _check_metrics(c, "cross_validated", card["cross_validated"], nested=True)

    weights = c.mapping("weights", card["weights"], ("file", "sha256"), ("parameters",))
    if weights["file"] != weights_file:
        raise c.fail("weights.file", f"{_short(weights['file'])} instead of {weights_file!r} (a student's weights are "
                     f"always {weights_file})")
    if not isinstance(weights["sha256"], str) or not _SHA256.fullmatch(weights["sha256"]):
        raise c.fail("weights.sha256", f"expected 64 lowercase hexadecimal digits, found {_short(weights['sha256'])}")
    if "parameters" in weights:
        c.integer("weights.parameters", weights["parameters"], 0, 1 << 40)

    if not isinstance(card["config"], dict):
        raise c.fail("config", f"expected an object, found {_type(card['config'])} ({_short(card['config'])})")
    return card


def check_config(path: Path, card: Mapping[str, Any]) -> RunConfig:
    """The run config of a checked ``card``, its types checked by the config parser, its model
    sizes within :data:`LIMITS` and its modalities those of the card's inputs."""
    c = _Checker(path)
    try:
        cfg = build_config(card["config"])
    except ConfigError as exc:
        raise c.fail(f"config.{exc.key}", exc.problem.rstrip(".")) from exc
    for key in MODEL_SIZES:
        c.integer(f"config.model.{key}", getattr(cfg.model, key), 1, LIMITS[key])
    prevalent, privileged = list(cfg.data.prevalent), list(cfg.data.privileged)
    if prevalent != list(card["inputs"]):
        raise c.fail("config.data.prevalent", f"{_short(prevalent)} differs from the inputs {_short(list(card['inputs']))}")
    recorded = card.get("privileged")
    if recorded is not None and privileged != list(recorded):
        raise c.fail("config.data.privileged", f"{_short(privileged)} differs from the privileged modalities "
                     f"{_short(list(recorded))}")
    return cfg
