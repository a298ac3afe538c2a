"""The model card: a saved student's description (``student.json``) written for people.

Pure text from the description alone, so a card can be (re)written without the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privkd.models.build import ROLES

__all__ = ["model_card"]


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _input_line(name: str, entry: Mapping[str, Any]) -> str:
    rate = entry.get("sampling_rate")
    rate_text = "no sampling rate" if rate is None or (isinstance(rate, float) and math.isnan(rate)) else f"{rate:g} Hz"
    text = f"- **{name}**: {entry['kind']}, shape per sample {_shape(entry['sample_shape'])} (batch: (N, " \
           f"{', '.join(str(s) for s in entry['sample_shape'])})), {rate_text}"
    if entry.get("channel_names"):
        text += f", channels {', '.join(entry['channel_names'])}"
    if entry.get("feature_columns"):
        columns = entry["feature_columns"]
        shown = ", ".join(columns[:12]) + (f", ... ({len(columns) - 12} more)" if len(columns) > 12 else "")
        text += f", table columns {shown}"
    if entry["kind"] == "video":
        text += "; video frames as float in [0, 1] (uint8 / 255)"
    return text


def _dataset(training: Mapping[str, Any]) -> str:
    """The training data's file name, without the training machine's directories."""
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


def _score_source(card: Mapping[str, Any]) -> str:
    if _is_final(card):
        folds = max((v.get("folds", 0) for v in card.get("cross_validated", {}).values()), default=0)
        return f"cross-validated mean over {int(folds)} subject-independent test folds"
    return f"test subjects of fold {card['training']['fold']}"


def _front_matter(card: Mapping[str, Any]) -> list[str]:
    """A YAML metadata header (the keys model hubs read): library, tags, dataset, test metrics."""
    source = _score_source(card)
    metrics = [f"  - {{name: {name}, value: {value:.4f}, split: '{source}'}}" for name, (value, _) in _scores(card).items()]
    return ["---", "library_name: privkd", f"tags: [privileged-knowledge-distillation, {card['method']}, {card['task']}]",
            f"datasets: ['{_dataset(card['training'])}']",
            "license: other  # the training data's terms decide; set it when you publish the model",
            "metrics:", *(metrics or ["  []"]), "---", ""]


def _use_and_limits(card: Mapping[str, Any]) -> list[str]:
    training = card["training"]
    inputs = ", ".join(card["inputs"])
    return [
        "## Intended use", "",
        (f"Research use: {card['task']} from {inputs} alone, on recordings like those of `{_dataset(training)}` "
         "(same sensors, placement, sampling rate and preprocessing). The privileged modalities its teacher saw are "
         "never needed."), "",
        "## Limitations", "",
        (f"- Trained on {len(training['train_subjects'])} subjects, every one but those that chose its epoch; no "
         "subject was left to test this model: the metrics above estimate the procedure that trained it (the same "
         "on each cross-validation fold), not this model itself." if _is_final(card) else
         f"- Trained on {len(training['train_subjects'])} subjects and scored on the unseen test subjects of one "
         f"cross-validation fold ({training['fold']}): the metrics above are one fold's, not a population estimate; "
         "the run's summary gives the mean and spread over folds."),
        "- Not validated on other populations, devices or recording conditions; expect lower scores there.",
        "- Inputs far outside the training range (after standardisation) are warned about by `privkd predict`, not refused.",
        "",
    ]


def _split(card: Mapping[str, Any]) -> str:
    return "trained on every subject" if _is_final(card) else f"cross-validation fold {card['training']['fold']}"


def _metric_lines(card: Mapping[str, Any]) -> list[str]:
    if _is_final(card):
        return [(f"The {_score_source(card)} of this row in the same run (mean ± std); this model was trained the "
                 "same way on every subject:"), "", "| metric | mean ± std |", "|---|---|",
                *[f"| {name} | {mean:.4f} ± {std:.4f} |" for name, (mean, std) in _scores(card).items()]]
    return [f"On the unseen test subjects of fold {card['training']['fold']} (subject-independent):", "",
            "| metric | value |", "|---|---|",
            *[f"| {name} | {'n/a' if value is None else (f'{value:.4f}' if isinstance(value, float) else value)} |"
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
        f"# privkd student: {card['row']} ({_split(card)})",
        "",
        f"- Method: `{card['method']}`" + (f" (results row `{card['row']}`)" if card["row"] != card["method"] else ""),
        f"- Network role: `{card['role']}` "
        + ("(sees the prevalent modalities and fuses them with its frozen T-Net's estimates of the privileged ones)"
           if ROLES[card["role"]].fuses_privileged else "(sees and fuses the prevalent modalities)"),
        f"- Task: {card['task']}",
        (f"- Fusion: {cfg['model']['fusion']}, embedding size {cfg['model']['embed_dim']}, "
        f"{card.get('weights', {}).get('parameters', '?')} parameters"),
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
            detail = f": {entry['kind']}, shape per sample {_shape(entry['sample_shape'])}" if entry else ""
            lines.append(f"- **{name}**{detail}: not needed")
        lines.append("")
    lines += ["## Outputs", ""]
    if card["task"] == "classification":
        lines += [f"{len(names or [])} classes (one logit each; softmax gives the probabilities), in this order:", ""]
        lines += [f"{i}. {name}" for i, name in enumerate(names or [])]
    else:
        lines += [f"{len(names or [])} regression targets, in this order: {', '.join(names or [])}"]
    lines += [
        "",
        "## Training data",
        "",
        f"- Dataset: `{_dataset(training)}` (config `data.path: {Path(str(training['data_path'])).name}`)",
    ]
    if training.get("description"):
        lines.append(f"- Description: {training['description']}")
    if training.get("source"):
        lines.append(f"- Source: {training['source']}")
    lines += [
        f"- Split: {_split(card)}",
        f"- Training subjects ({len(training['train_subjects'])}): {', '.join(training['train_subjects'])}",
        "",
        "## Test metrics",
        "",
        *_metric_lines(card),
        "",
        *_use_and_limits(card),
        "## How to run it",
        "",
        f"From the directory that holds the `{directory}` folder:",
        "",
        "```",
        f"privkd predict {directory} INPUT.h5 --out predictions.csv   # a privkd dataset holding {', '.join(inputs)}",
    ]
    if all(e["kind"] == "features" and len(e["sample_shape"]) == 1 for e in inputs.values()):
        lines.append(f"privkd predict {directory} INPUT.csv --out predictions.csv  # or .parquet, columns <modality>.<feature>")
    lines += [
        f"privkd export {directory} --onnx model.onnx",
        "```",
        "",
        ("From Python: `privkd.deploy.load_student(dir).net({name: tensor, ...}).logits`. "
        "Files: `weights.pt` (state_dict, load with `torch.load(..., weights_only=True)`), "
        "`student.json` (config and description used to rebuild the network)."),
        "",
    ]
    return "\n".join(lines)
