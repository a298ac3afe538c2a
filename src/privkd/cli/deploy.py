"""``privkd predict`` and ``privkd export``: run or export a saved student.

Neither imports the training stack (Lightning): a student is rebuilt from its own directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from privkd.cli.console import console

__all__ = ["export", "predict"]

StudentDir = Annotated[Path, typer.Argument(help="A saved student directory (student.json, weights.pt, model_card.md).")]


def predict(
    student_dir: StudentDir,
    input: Annotated[Path, typer.Argument(help="A privkd .h5 dataset holding the prevalent modalities, a .csv / "
                                               ".parquet table with <modality>.<feature> columns (feature students), "
                                               "or a UEA/UCR .ts file (students of a data import ts dataset); "
                                               "tables and .ts files need no labels.")],
    out: Annotated[Path, typer.Option("--out", help="Predictions CSV to write (one row per sample).")] = Path("predictions.csv"),
    allow_mismatch: Annotated[bool, typer.Option(
        "--allow-mismatch", help="Score a modality whose kind, sampling rate or channel order differs from the training "
                                 "data's, with a warning, instead of refusing it.")] = False,
    split: Annotated[str | None, typer.Option(
        "--split", help="Predict only this part of the input's split (/splits of a .h5, the split column of a table), "
                        "e.g. test.")] = None,
) -> None:
    """Predict every sample of INPUT with a saved student (it never needs the privileged modalities).

    A modality of another kind, sampling rate or channel order than the student was trained on
    is refused, unless --allow-mismatch is given."""
    import warnings

    import pandas as pd

    from privkd.deploy.predict import InputWarning, predict_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        path = predict_file(student_dir, input, out, allow_mismatch=allow_mismatch, split=split)
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            console.print(f"[bold yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
    rows = len(pd.read_csv(path, usecols=["row"]))
    console.print(f"predicted {rows} samples of {escape(str(input))} with {escape(str(student_dir))}: "
                  f"[bold]{escape(str(path))}[/]", highlight=False)


def export(
    student_dir: StudentDir,
    onnx: Annotated[Path, typer.Option("--onnx", help="ONNX file to write.")] = Path("model.onnx"),
) -> None:
    """Export a saved student to ONNX: one input per prevalent modality, dynamic batch axis."""
    from privkd.deploy.export import export_onnx, onnx_metadata

    path = export_onnx(student_dir, onnx)
    meta = onnx_metadata(path)
    inputs = ", ".join(f"{name} (batch, {', '.join(map(str, shape))})"
                       for name, shape in json.loads(meta.get("privkd.inputs", "{}")).items())
    console.print(f"exported {escape(str(student_dir))} to [bold]{escape(str(path))}[/] (inputs {escape(inputs)}; "
                  f"{meta.get('privkd.exporter', '?')} exporter)", highlight=False)
