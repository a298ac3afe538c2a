"""The model card: a saved student's description (``student.json``) written for people.

Pure text from the description alone, so a card can be (re)written without the network.
Every text that comes from the data or the config (class and target names, modality,
channel, column, subject, metric, row and method names, the dataset's file name,
description and source) is escaped for where it goes: Markdown text (:func:`_md`: no line
breaks, HTML special characters as entities, Markdown punctuation backslash-escaped), code
spans and blocks (:func:`_code`) and the YAML header (:func:`_yaml`), so that no name can add
a heading, a link, a table row, raw HTML or a metadata key to the card.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privkd.config.schema import LEAKS, protocol_leaks
from privkd.data.h5format.spec import independent
from privkd.models.build import ROLES

__all__ = ["model_card"]


_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MD_PUNCTUATION = re.compile(r"([\\`*\[\]|~$])")
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_(?=[^\W_])")
_YAML_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}
SHOWN_NAMES = 12
"""Channel / column names listed per input; a count stands for the rest."""


def _one_line(value: Any) -> str:
    return _LINE_BREAKS.sub(" ", str(value)).strip()


def _md(value: Any) -> str:
    """``value`` as literal Markdown text on one line: line breaks and control characters become
    spaces, ``& < >`` entities, and ``\\ ` * [ ] | ~ $`` and word-edge ``_`` backslash-escaped
    (an underscore inside a word, as in ``macro_f1``, starts no emphasis and stays)."""
    text = html.escape(_one_line(value), quote=False)
    text = _MD_PUNCTUATION.sub(r"\\\1", text)
    marked = _INNER_UNDERSCORE.sub("\x00", text)  # keep in-word underscores, escape the others
    return marked.replace("_", "\\_").replace("\x00", "_")


def _code(value: Any) -> str:
    """``value`` for a code span or block: one line without backticks (HTML is not rendered there)."""
    return _one_line(value).replace("`", "'")


def _yaml(value: Any) -> str:
    """``value`` as one YAML scalar: plain when it is a simple name, else a JSON (= YAML) string."""
    text = str(value)
    if _YAML_PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _yaml_quoted(value: Any) -> str:
    """``value`` as one quoted YAML scalar: single-quoted (``'`` doubled) when it is one line of
    printable text, else a JSON (= YAML double-quoted) string."""
    text = str(value)
    return json.dumps(text) if _LINE_BREAKS.search(text) else "'" + text.replace("'", "''") + "'"


def _names(names: Sequence[Any], limit: int | None = None) -> str:
    shown = [_md(n) for n in (names if limit is None else names[:limit])]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more else "")


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _input_line(name: str, entry: Mapping[str, Any]) -> str:
    rate = entry.get("sampling_rate")
    rate_text = "no sampling rate" if rate is None or (isinstance(rate, float) and math.isnan(rate)) else f"{rate:g} Hz"
    text = f"- **{_md(name)}**: {_md(entry['kind'])}, shape per sample {_shape(entry['sample_shape'])} (batch: (N, " \
           f"{', '.join(str(int(s)) for s in entry['sample_shape'])})), {rate_text}"
    columns = entry.get("feature_columns")
    if entry.get("channel_names") and entry["channel_names"] != columns:
        text += f", channels {_names(entry['channel_names'], SHOWN_NAMES)}"
    if columns:
        text += f", table columns {_names(columns, SHOWN_NAMES)}"
    if entry["kind"] == "video":
        text += "; video frames as float in [0, 1] (uint8 / 255)"
    return text


def _dataset(training: Mapping[str, Any]) -> str:
    """The training data's file name, without the training machine's directories (unescaped)."""
    return Path(str(training["dataset"])).name


def _is_final(card: Mapping[str, Any]) -> bool:
    """Trained on every subject (``evaluation.final``), not on one cross-validation fold."""
    return card["training"]["fold"] is None


def _scores(card: Mapping[str, Any]) -> dict[str, tuple[float, float | None]]:
    """Per metric, the value the card reports and its spread: a fold's test score (no spread),
    or for a final student its row's cross-validated mean and std."""
    if _is_final(card):
        return {name: (values["mean"], values["std"]) for name, values in card.get("cross_validated", {}).items()
                if isinstance(values.get("mean"), float) and math.isfinite(values["mean"])}
    return {name: (value, None) for name, value in card.get("test_metrics", {}).items()
            if isinstance(value, float) and math.isfinite(value)}


def _held_out(card: Mapping[str, Any]) -> str:
    """What a fold holds out: ``subject``, or ``recording`` for data imported without subject ids
    (cards written before this was recorded held out subjects)."""
    return card["training"].get("independence") or "subject"


def _leaks(card: Mapping[str, Any]) -> list[str]:
    """The leaking evaluation choices (:data:`~privkd.config.schema.LEAKS`' words) its scores were made under."""
    evaluation = card["config"].get("evaluation") or {}
    return [LEAKS[name] for name in protocol_leaks(str(evaluation.get("protocol")), str(evaluation.get("selection")))]


def _independent(card: Mapping[str, Any]) -> str:
    return independent(_held_out(card))


def _score_source(card: Mapping[str, Any]) -> str:
    if _is_final(card):
        folds = max((v.get("folds", 0) for v in card.get("cross_validated", {}).values()), default=0)
        return f"cross-validated mean over {int(folds)} {_independent(card)} test folds"
    return f"test {_held_out(card)}s of fold {card['training']['fold']}"


def _front_matter(card: Mapping[str, Any]) -> list[str]:
    """A YAML metadata header (the keys model hubs read): library, tags, dataset, test metrics."""
    source = _score_source(card)
    metrics = [f"  - {{name: {_yaml(name)}, value: {value:.4f}, split: {_yaml_quoted(source)}}}"
               for name, (value, _) in _scores(card).items()]
    return ["---", "library_name: privkd",
            f"tags: [privileged-knowledge-distillation, {_yaml(card['method'])}, {_yaml(card['task'])}]",
            f"datasets: [{_yaml_quoted(_dataset(card['training']))}]",
            "license: other  # the training data's terms decide; set it when you publish the model",
            "metrics:", *(metrics or ["  []"]), "---", ""]


def _use_and_limits(card: Mapping[str, Any]) -> list[str]:
    training = card["training"]
    inputs = _names(list(card["inputs"]))
    unit = _held_out(card)
    return [
        "## Intended use", "",
        (f"Research use: {_md(card['task'])} from {inputs} alone, on recordings like those of `{_code(_dataset(training))}` "
         "(same sensors, placement, sampling rate and preprocessing). The privileged modalities its teacher saw are "
         "never needed."), "",
        "## Limitations", "",
        (f"- Trained on {len(training['train_subjects'])} {unit}s, every one but those that chose its epoch; no "
         f"{unit} was left to test this model: the metrics above estimate the procedure that trained it (the same "
         "on each cross-validation fold), not this model itself." if _is_final(card) else
         f"- Trained on {len(training['train_subjects'])} {unit}s and scored on the unseen test {unit}s of one "
         f"cross-validation fold ({training['fold']}): the metrics above are one fold's, not a population estimate; "
         "the run's summary gives the mean and spread over folds."),
        *([(f"- **LEAKING, for reproducing published numbers only: {'; '.join(_leaks(card))}**: the metrics above "
             "overestimate the score on unseen people.")] if _leaks(card) else []),
        *([("- Recording-independent only: the training data had no subject ids, so recordings of one person may sit "
             "in both training and test; the metrics may overestimate the score on people never seen.")]
          if unit == "recording" else []),
        "- Not validated on other populations, devices or recording conditions; expect lower scores there.",
        "- Inputs far outside the training range (after standardisation) are warned about by `privkd predict`, not refused.",
        ("- Inputs of another modality kind, sampling rate or channel order than listed under Inputs are refused by "
         "`privkd predict` (`--allow-mismatch` scores them with a warning); a table's columns are taken by name."),
        "",
    ]


def _split(card: Mapping[str, Any]) -> str:
    return "trained on every subject" if _is_final(card) else f"cross-validation fold {card['training']['fold']}"


def _metric_lines(card: Mapping[str, Any]) -> list[str]:
    leaks = _leaks(card)
    if leaks:
        return [f"**LEAKING, for reproducing published numbers only: {'; '.join(leaks)}.**", "", *_scored_lines(card)]
    return _scored_lines(card)


def _scored_lines(card: Mapping[str, Any]) -> list[str]:
    if _is_final(card):
        return [(f"The {_score_source(card)} of this row in the same run (mean ± std); this model was trained the "
                 "same way on every subject:"), "", "| metric | mean ± std |", "|---|---|",
                *[f"| {_md(name)} | {mean:.4f} ± {std:.4f} |" for name, (mean, std) in _scores(card).items()]]
    return [f"On the unseen test {_held_out(card)}s of fold {card['training']['fold']} ({_independent(card)}):", "",
            "| metric | value |", "|---|---|",
            *[f"| {_md(name)} | {'n/a' if value is None else (f'{value:.4f}' if isinstance(value, float) else _md(value))} |"
              for name, value in card.get("test_metrics", {}).items()]]


def model_card(card: Mapping[str, Any], directory: Path | str = "STUDENT_DIR") -> str:
    """The human-readable model card of a student description (the content of student.json).

    ``directory`` names the student's folder in the commands; give a relative path (the card
    travels with the folder, and must not carry the training machine's paths)."""
    training = card["training"]
    inputs, privileged = card["inputs"], card.get("privileged") or {}
    cfg = card["config"]
    names = card.get("class_names") if card["task"] == "classification" else card.get("target_names")
    lines = [
        *_front_matter(card),
        f"# privkd student: {_md(card['row'])} ({_split(card)})",
        "",
        f"- Method: `{_code(card['method'])}`" + (f" (results row `{_code(card['row'])}`)" if card["row"] != card["method"] else ""),
        f"- Network role: `{_code(card['role'])}` "
        + ("(sees the prevalent modalities and fuses them with its frozen T-Net's estimates of the privileged ones)"
           if ROLES[card["role"]].fuses_privileged else "(sees and fuses the prevalent modalities)"),
        f"- Task: {_md(card['task'])}",
        (f"- Fusion: {_md(cfg['model']['fusion'])}, embedding size {_md(cfg['model']['embed_dim'])}, "
        f"{_md(card.get('weights', {}).get('parameters', '?'))} parameters"),
        "",
        "## Inputs",
        "",
        "One array per prevalent modality, samples along the first axis:",
        "",
        *[_input_line(name, entry) for name, entry in inputs.items()],
        "",
        ("Preprocessing: per-channel standardisation ((x - mean) / std, per channel = axis 1 of a batch) with "
        "statistics fitted on the training subjects only. The statistics are stored in the weights (`weights.pt`, "
        "and the exported ONNX graph), so give the model raw values, as stored in the privkd dataset."),
        "",
    ]
    if privileged:
        lines += ["## Never needed", "",
                  "The privileged modalities were used only while training (by the teacher); this model never needs them:",
                  ""]
        for name, entry in privileged.items():
            detail = f": {_md(entry['kind'])}, shape per sample {_shape(entry['sample_shape'])}" if entry else ""
            lines.append(f"- **{_md(name)}**{detail}: not needed")
        lines.append("")
    lines += ["## Outputs", ""]
    if card["task"] == "classification":
        lines += [f"{len(names or [])} classes (one logit each; softmax gives the probabilities), in this order:", ""]
        lines += [f"{i}. {_md(name)}" for i, name in enumerate(names or [])]
    else:
        lines += [f"{len(names or [])} regression targets, in this order: {_names(names or [])}"]
    lines += [
        "",
        "## Training data",
        "",
        f"- Dataset: `{_code(_dataset(training))}` (config `data.path: {_code(Path(str(training['data_path'])).name)}`)",
    ]
    if training.get("description"):
        lines.append(f"- Description: {_md(training['description'])}")
    if training.get("source"):
        lines.append(f"- Source: {_md(training['source'])}")
    lines += [
        f"- Split: {_split(card)}",
        f"- Training {_held_out(card)}s ({len(training['train_subjects'])}): {_names(training['train_subjects'])}",
        "",
        "## Test metrics",
        "",
        *_metric_lines(card),
        "",
        *_use_and_limits(card),
        "## How to run it",
        "",
        f"From the directory that holds the `{_code(directory)}` folder:",
        "",
        "```",
        (f"privkd predict {_code(directory)} INPUT.h5 --out predictions.csv   # a privkd dataset holding "
         f"{_code(', '.join(inputs))}"),
    ]
    if all(e["kind"] == "features" and len(e["sample_shape"]) == 1 for e in inputs.values()):
        lines.append(f"privkd predict {_code(directory)} INPUT.csv --out predictions.csv  # or .parquet, columns "
                     "<modality>.<feature>")
    lines += [
        f"privkd export {_code(directory)} --onnx model.onnx",
        "```",
        "",
        ("From Python: `privkd.deploy.load_student(dir).net({name: tensor, ...}).logits`. "
        "Files: `weights.pt` (state_dict, load with `torch.load(..., weights_only=True)`), "
        "`student.json` (config and description used to rebuild the network)."),
        "",
    ]
    return "\n".join(lines)
