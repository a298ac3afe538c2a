"""A trained student saved for deployment: its weights, a self-describing ``student.json`` and a model card.

Layout of a student directory::

    weights.pt       the network's state_dict (torch.save), read back with weights_only=True;
                     it carries the preprocessing: each encoder's standardisation statistics
                     (fitted on the training subjects) are buffers of the network
    student.json     everything needed to rebuild and run the network without the training
                     data: the resolved run config, the build_net role, the task and class /
                     target names, the inputs (one per prevalent modality: kind, sample shape,
                     sampling rate, channel names), the privileged modalities it never needs,
                     the training data and fold, the fold's test metrics, and the sha256 of
                     weights.pt (so a weights file from another model is refused)
    model_card.md    the same, for people (:mod:`privkd.deploy.card`)

Only networks of a role that sees nothing but the prevalent modalities
(:data:`~privkd.models.build.DEPLOYABLE_ROLES`) can be deployed; the method registry says which
method trains one, and the caller passes its role. Loading rebuilds the network with
:func:`~privkd.models.build.build_net` from the schema alone, so ``privkd predict`` and
``privkd export`` never import the training stack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privkd.atomic import write_atomic, write_text_atomic
from privkd.config import RunConfig
from privkd.config.parse import build_config, config_to_dict
from privkd.data.h5format import DatasetInfo, ModalityInfo
from privkd.deploy.card import model_card
from privkd.deploy.schema import check_card, check_config, read_card_json
from privkd.errors import PrivkdError, UnknownPartError
from privkd.models.build import DEPLOYABLE_ROLES, build_net
from privkd.version import __version__

__all__ = [
    "CARD_FILE",
    "STUDENT_FILE",
    "WEIGHTS_FILE",
    "LoadedStudent",
    "load_student",
    "save_student",
]

STUDENT_FORMAT = "privkd-student"
STUDENT_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
STUDENT_FILE = "student.json"
CARD_FILE = "model_card.md"


# ----------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_number(value: Any) -> Any:
    """A metric as strict JSON: floats stay floats, NaN/inf become null."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else None


def _feature_columns(info: DatasetInfo, modality: ModalityInfo) -> list[str] | None:
    """Feature column names of a table-imported ``features`` modality, in stored vector order.

    The table importer keeps them in the dataset description (``Feature columns: eda =
    [eda.mean, eda.slope]; ...``); ``None`` when they are not listed there in full.
    """
    if modality.kind != "features" or len(modality.sample_shape) != 1:
        return None
    listing = info.description.partition("Feature columns: ")[2]
    match = re.search(rf"(?:^|; ){re.escape(modality.name)} = \[([^\]]*)\]", listing)
    if not match or "more)" in match.group(1):
        return None
    names = [n.strip() for n in match.group(1).split(", ")]
    return names if len(names) == modality.sample_shape[0] and len(set(names)) == len(names) else None


def _modality_entry(info: DatasetInfo, modality: ModalityInfo) -> dict[str, Any]:
    """What the student was trained on for one modality: kind, sample shape, sampling rate and
    channel names; for a 1-D features modality also its feature (table column) names, in
    vector order, whatever their number: the modality's channel names (which name axis 1,
    the feature axis; the table importer stores the column names there), else the listing
    in the dataset description (datasets imported before, cut short for wide tables)."""
    entry: dict[str, Any] = {
        "kind": modality.kind,
        "sample_shape": list(modality.sample_shape),
        "sampling_rate": modality.sampling_rate,
        "channel_names": list(modality.channel_names) if modality.channel_names else None,
    }
    if modality.kind == "features":
        named = modality.channel_names if len(modality.sample_shape) == 1 else None
        entry["feature_columns"] = list(named) if named else _feature_columns(info, modality)
    return entry


def _deploy_config(cfg: RunConfig) -> RunConfig:
    """The run config without what only training needs from disk: the backbone weights files
    (weights.pt holds every trained tensor) and the frozen-backbone setting (which would
    rebuild the reference backbone from those files)."""
    model = dataclasses.replace(cfg.model, backbone_weights={}, frozen_backbones=())
    return dataclasses.replace(cfg, model=model)


def _info_from_card(card: Mapping[str, Any]) -> DatasetInfo:
    """The dataset description build_net needs: the prevalent inputs and the output names.
    The privileged modalities are left out on purpose: a deployable role never reads them."""
    modalities = {
        name: ModalityInfo(name=name, kind=entry["kind"], sampling_rate=entry.get("sampling_rate"),
                           sample_shape=tuple(int(s) for s in entry["sample_shape"]),
                           channel_names=tuple(entry["channel_names"]) if entry.get("channel_names") else None)
        for name, entry in card["inputs"].items()
    }
    training = card.get("training", {})
    return DatasetInfo(path=Path(training.get("dataset", "")), task=card["task"], n_samples=0, modalities=modalities,
                       class_names=card.get("class_names"), target_names=card.get("target_names"), subjects=[],
                       description=training.get("description", ""), source=training.get("source", ""))


def _build(card: Mapping[str, Any], cfg: RunConfig | None = None, *, meta: bool = False) -> nn.Module:
    """A freshly initialised network of the architecture ``card`` describes (the global RNG is
    left untouched). The config is only parsed, not validated again: it was validated when
    the student was trained, and validating asks the method registry (the training stack).
    ``meta``: on PyTorch's meta device, shapes without memory (to size it before allocating)."""
    cfg = _deploy_config(build_config(card["config"]) if cfg is None else cfg)
    with torch.random.fork_rng(devices=[]):
        if meta:
            with torch.device("meta"):
                return build_net(card["role"], cfg, _info_from_card(card))
        return build_net(card["role"], cfg, _info_from_card(card))


def _state_bytes(net: nn.Module) -> int:
    """Bytes of ``net``'s state_dict tensors (what weights.pt must hold at least: torch.save
    stores tensors uncompressed)."""
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def _fit_problems(net: nn.Module, state: Mapping[str, Any]) -> list[str]:
    """What keeps ``state`` from loading into ``net`` (empty when it fits)."""
    own = net.state_dict()
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return ["it is not a state_dict (a mapping of names to tensors)"]
    problems = []
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
    if mismatched:
        k = mismatched[0]
        problems.append(f"{len(mismatched)} tensors of another shape (e.g. {k}: {tuple(state[k].shape)} "
                        f"instead of {tuple(own[k].shape)})")
    return problems


# ----------------------------------------------------------------------------- saving


def save_student(
    directory: str | Path,
    net: nn.Module,
    cfg: RunConfig,
    info: DatasetInfo,
    *,
    row: str,
    method: str,
    role: str,
    fold: int | None,
    test_metrics: Mapping[str, float],
    train_subjects: Sequence[str],
    cross_validated: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Save a trained ``net`` (built by ``build_net(role, cfg, info)``) as a deployable student.

    ``cfg`` is the row's resolved config (``variant_config(cfg, row)``), ``info`` the training
    dataset, ``fold`` the cross-validation fold index, ``test_metrics`` its scores on the
    fold's unseen test subjects and ``train_subjects`` the subjects it was trained on (whose
    statistics the standardisation was fitted on). A student trained on every subject
    (``evaluation.final``) has ``fold`` None, no test metrics, and its row's
    ``cross_validated`` mean, std and fold count per metric instead. Writes ``weights.pt``,
    ``student.json`` and ``model_card.md`` into ``directory`` (created) and returns it.
    """
    directory = Path(directory)
    if role not in DEPLOYABLE_ROLES:
        raise PrivkdError(f"a {role!r} network sees the privileged modalities and cannot be deployed as a student",
                          f"save a network of role {' or '.join(DEPLOYABLE_ROLES)} (the baseline or a distilled student)")
    prevalent, privileged = list(cfg.data.prevalent), list(cfg.data.privileged)
    absent = [m for m in prevalent if m not in info.modalities]
    if absent:
        raise PrivkdError(f"prevalent modality {absent[0]!r} is not in the dataset {info.path}",
                          "pass the dataset the student was trained on")
    card: dict[str, Any] = {
        "format": STUDENT_FORMAT,
        "format_version": STUDENT_FORMAT_VERSION,
        "row": row,
        "method": method,
        "role": role,
        "task": info.task,
        "class_names": list(info.class_names) if info.class_names is not None else None,
        "target_names": list(info.target_names) if info.target_names is not None else None,
        "inputs": {name: _modality_entry(info, info.modalities[name]) for name in prevalent},
        "privileged": {name: (_modality_entry(info, info.modalities[name]) if name in info.modalities else None)
                       for name in privileged},
        "training": {
            "dataset": str(info.path),
            "data_path": cfg.data.path,
            "description": info.description,
            "source": info.source,
            "fold": None if fold is None else int(fold),
            "train_subjects": [str(s) for s in train_subjects],
            "independence": info.independence,
        },
        "test_metrics": {str(k): _plain_number(v) for k, v in test_metrics.items()},
        "cross_validated": {str(metric): {str(k): _plain_number(v) for k, v in values.items()}
                            for metric, values in (cross_validated or {}).items()},
        "config": config_to_dict(cfg),
    }
    parameters = int(sum(p.numel() for p in net.parameters()))
    # the loader's schema, checked before anything is written: a saved student always loads
    check_card(directory / STUDENT_FILE, {**card, "weights": {"file": WEIGHTS_FILE, "sha256": "0" * 64,
                                                             "parameters": parameters}},
               STUDENT_FORMAT, STUDENT_FORMAT_VERSION, WEIGHTS_FILE)
    cfg_checked = check_config(directory / STUDENT_FILE, card)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    problems = _fit_problems(_build(card, cfg_checked, meta=True), state)
    if problems:
        raise ValueError(f"the network does not match build_net({role!r}, cfg, info): {'; '.join(problems)}; "
                         "pass the role the network was built with and the row's own config")

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    write_atomic(weights, lambda tmp: torch.save(state, tmp))
    card["weights"] = {"file": WEIGHTS_FILE, "sha256": _sha256(weights), "parameters": parameters}
    card["privkd_version"] = __version__
    card["torch_version"] = torch.__version__
    write_text_atomic(directory / STUDENT_FILE, json.dumps(card, indent=2) + "\n")
    write_text_atomic(directory / CARD_FILE, model_card(card, Path(directory.name)))  # no machine paths in the card
    return directory


# ----------------------------------------------------------------------------- loading


@dataclass
class LoadedStudent:
    """A deployable student rebuilt from its directory: ``net`` is in eval mode on the CPU."""

    directory: Path
    net: nn.Module
    card: dict[str, Any]
    prevalent: list[str]
    task: str
    class_names: list[str] | None
    target_names: list[str] | None

    @property
    def inputs(self) -> dict[str, ModalityInfo]:
        """What each input must look like (sample shape without the batch axis, kind, rate)."""
        return _info_from_card(self.card).modalities

    @property
    def output_names(self) -> list[str]:
        """Class names (classification) or target names (regression), in output order."""
        return list((self.class_names if self.task == "classification" else self.target_names) or [])

    @property
    def privileged(self) -> list[str]:
        """Modalities the student was distilled with but never needs."""
        return list(self.card.get("privileged") or {})

    def predict_proba(self, arrays: Mapping[str, Any], batch_size: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the outputs), float64 ``(n, n_classes)`` whose rows sum
        to 1, in :attr:`output_names` order, for ``arrays`` = ``{modality: (n, *sample_shape)}``
        holding every prevalent modality (others are ignored). Refuses a regression student,
        which has no classes, and inputs of another shape than the student was trained on.
        """
        if self.task != "classification":
            raise PrivkdError(f"{self.directory}: a {self.task} student predicts values, not class probabilities",
                              "run its network (privkd.deploy.predict_arrays) for the predicted targets")
        inputs = {}
        for name, expected in self.inputs.items():
            if name not in arrays:
                raise PrivkdError(f"no input {name!r}: this student needs {', '.join(self.prevalent)}",
                                  f"pass {{{name!r}: array of shape (n, {', '.join(map(str, expected.sample_shape))})}}")
            array = np.asarray(arrays[name], dtype=np.float32)
            if array.shape[1:] != tuple(expected.sample_shape):
                raise PrivkdError(f"input {name!r} has samples shaped {array.shape[1:]}, this student expects "
                                  f"{tuple(expected.sample_shape)}", "window / resample the data as the training data was")
            inputs[name] = torch.from_numpy(array)
        sizes = {name: len(array) for name, array in inputs.items()}
        if len(set(sizes.values())) > 1:
            raise PrivkdError(f"the inputs hold different numbers of samples ({sizes})", "pass the same samples of every modality")
        n = next(iter(sizes.values()))
        with torch.inference_mode():
            logits = [self.net({k: v[i:i + batch_size] for k, v in inputs.items()}).logits for i in range(0, n, batch_size)]
        stacked = torch.cat(logits) if logits else torch.empty(0, len(self.output_names))
        return torch.softmax(stacked.double(), dim=-1).numpy()


def _read_card(directory: Path) -> dict[str, Any]:
    """student.json, read as untrusted input and checked against the schema
    (:mod:`privkd.deploy.schema`) before anything is built."""
    path = directory / STUDENT_FILE
    if not path.is_file():
        raise PrivkdError(f"{path}: file not found",
                          "point to a directory written by save_student (a run's student folder), or save the student again")
    return check_card(path, read_card_json(path), STUDENT_FORMAT, STUDENT_FORMAT_VERSION, WEIGHTS_FILE)


def _another_model(weights_path: Path, detail: str) -> PrivkdError:
    return PrivkdError(f"{weights_path}: this weights file comes from another model ({detail})",
                       "use the weights.pt saved together with this student.json, or save the student again "
                       "with privkd.deploy.save_student")


def _load_state(weights_path: Path) -> Any:
    try:
        return torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # (torch's own message suggests weights_only=False, which would run arbitrary code: not repeated here)
        raise PrivkdError(f"{weights_path}: not a readable weights file ({type(exc).__name__}); it is damaged or is not "
                          "the weights.pt saved with this student.json",
                          "copy the weights.pt saved with this student.json (a torch.save'd state_dict)") from exc


def _cannot_rebuild(json_path: Path, exc: Exception, rebuild_fix: str) -> PrivkdError:
    """The error for a ``student.json`` whose network cannot be built: a backbone or method this
    process does not know (a plugin not installed here) says how to get it, anything else that
    the file is damaged."""
    if isinstance(exc, UnknownPartError):
        return PrivkdError(f"{json_path}: the network it describes needs a part this installation lacks "
                           f"({exc.problem})", exc.fix)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return PrivkdError(f"{json_path}: cannot rebuild the network it describes ({message})", rebuild_fix)


def load_student(directory: str | Path) -> LoadedStudent:
    """Rebuild the student saved in ``directory`` and load its weights (``weights_only=True``).

    Refuses a missing directory or file, a ``student.json`` that does not follow the schema
    (:mod:`privkd.deploy.schema`: types, sizes, nesting), and a ``weights.pt`` that is not the
    one saved with that ``student.json`` (its sha256 differs, or it does not fit). In that
    order, before anything large is allocated: the network is first built on the meta device
    to check that ``weights.pt`` is large enough to hold it, and the checksum is verified
    before the weights are read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PrivkdError(f"{directory}: no such student directory",
                          "give the directory save_student wrote (holding student.json, weights.pt, model_card.md)")
    card = _read_card(directory)
    json_path, weights_path = directory / STUDENT_FILE, directory / WEIGHTS_FILE
    cfg = check_config(json_path, card)
    if not weights_path.is_file():
        raise PrivkdError(f"{weights_path}: file not found", "copy the weights.pt saved with this student.json into the directory")
    rebuild_fix = "the file is damaged or from an incompatible privkd version; save the student again"
    try:
        shapes = _build(card, cfg, meta=True)  # shapes only, no memory
    except (PrivkdError, KeyError, TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise _cannot_rebuild(json_path, exc, rebuild_fix) from exc
    parameters = sum(p.numel() for p in shapes.parameters())
    recorded = card["weights"].get("parameters")
    if recorded is not None and recorded != parameters:
        raise PrivkdError(f"{json_path}: field 'weights.parameters': the network it describes has {parameters} "
                          f"parameters, but {recorded} are recorded", rebuild_fix)
    needed, size = _state_bytes(shapes), weights_path.stat().st_size
    reason = (f"the network described in student.json takes {needed} bytes, more than the {size} bytes of this file"
              if needed > size else None)
    if reason is None and _sha256(weights_path) != card["weights"]["sha256"]:
        reason = "its checksum differs from the one recorded in student.json"
    if reason is not None:  # the file is not read beyond its own size: what is wrong with it, for the message
        problems = _fit_problems(shapes, _load_state(weights_path))
        raise _another_model(weights_path, reason + ("; it does not fit the network described in student.json: "
                                                     + "; ".join(problems) if problems else ""))
    state = _load_state(weights_path)
    problems = _fit_problems(shapes, state)
    if problems:
        raise _another_model(weights_path, "it does not fit the network described in student.json: " + "; ".join(problems))
    try:
        net = _build(card, cfg)
    except (PrivkdError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _cannot_rebuild(json_path, exc, rebuild_fix) from exc
    net.load_state_dict(state)
    net.eval().requires_grad_(False)
    return LoadedStudent(directory=directory, net=net, card=card, prevalent=list(card["inputs"]), task=card["task"],
                         class_names=card.get("class_names"), target_names=card.get("target_names"))
