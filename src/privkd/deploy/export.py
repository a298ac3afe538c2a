"""ONNX export of a saved student: one named input per prevalent modality, one output.

The graph takes the raw inputs (its standardisation is inside) with a dynamic batch axis
and returns the logits (classification, output ``logits``) or values (regression, output
``values``). It is exported with this torch version's default exporter, ``torch.onnx.export(...,
dynamo=True)`` (torch.export + onnxscript); if that fails for some module, or its graph does
not reproduce PyTorch's outputs, the TorchScript exporter (``dynamo=False``) is used instead.
Every export is checked with onnxruntime (when installed) at a batch size other than the
one traced. The file carries metadata (``privkd.exporter``, ``privkd.inputs``,
``privkd.output_names``, ...) so that a consumer knows the class order.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from privkd.atomic import write_atomic
from privkd.deploy.output import check_output_file
from privkd.deploy.student import LoadedStudent, load_student
from privkd.errors import PrivkdError
from privkd.optional import require
from privkd.paths import refuse_output_onto_inputs

__all__ = ["EXPORTERS", "export_onnx", "onnx_metadata"]

EXPORTERS = ("dynamo", "torchscript")
"""Exporters tried in order; ``privkd.exporter`` in the file's metadata names the one used."""

TRACE_BATCH = 2  # torch.export specialises axes of size 0 and 1, so trace the batch axis at 2
CHECK_BATCH = 3
CHECK_ATOL = 1e-4
CHECK_RTOL = 1e-3


class _Exportable(nn.Module):
    """Positional inputs (one per prevalent modality, in order) → logits / values."""

    def __init__(self, net: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.names = list(names)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net(dict(zip(self.names, inputs))).logits


def _examples(student: LoadedStudent, batch: int, seed: int) -> tuple[Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((batch, *m.sample_shape), generator=generator) for m in student.inputs.values())


def _export(wrapper: nn.Module, examples: tuple[Tensor, ...], path: Path, exporter: str, input_names: list[str],
            output_name: str, opset: int | None) -> None:
    kwargs: dict = {"input_names": input_names, "output_names": [output_name]}
    if opset is not None:
        kwargs["opset_version"] = opset
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.ERROR)  # optimiser chatter ("Skipping constant folding ..."); failures raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim("batch")
                # forward(*inputs): one varargs entry holding every input's dynamic axes
                shapes = (tuple({0: batch} for _ in examples),)
                program = torch.onnx.export(wrapper, examples, dynamo=True, dynamic_shapes=shapes, external_data=False,
                                            verbose=False, report=False, **kwargs)
                program.save(str(path), external_data=False)
            else:
                axes = {name: {0: "batch"} for name in [*input_names, output_name]}
                torch.onnx.export(wrapper, examples, str(path), dynamo=False, dynamic_axes=axes, **kwargs)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _check(path: Path, wrapper: nn.Module, student: LoadedStudent) -> str | None:
    """Why the exported graph disagrees with PyTorch on a fresh batch size, or ``None``."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    examples = _examples(student, CHECK_BATCH, seed=1)
    with torch.inference_mode():
        expected = wrapper(*examples).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {node.name: x.numpy() for node, x in zip(session.get_inputs(), examples)}
    got = session.run(None, feed)[0]
    if got.shape != expected.shape:
        return f"output shape {got.shape} instead of {expected.shape} at batch size {CHECK_BATCH}"
    if not np.allclose(got, expected, atol=CHECK_ATOL, rtol=CHECK_RTOL):
        return f"outputs differ from PyTorch by up to {np.abs(got - expected).max():.3g}"
    return None


def _add_metadata(path: Path, student: LoadedStudent, exporter: str) -> None:
    onnx = require("onnx", "export", "ONNX export")

    model = onnx.load(str(path))
    card = student.card
    values = {
        "privkd.exporter": exporter,
        "privkd.row": card["row"],
        "privkd.method": card["method"],
        "privkd.task": student.task,
        "privkd.inputs": json.dumps({n: list(m.sample_shape) for n, m in student.inputs.items()}),
        "privkd.output_names": json.dumps(student.output_names),
        "privkd.preprocessing": "per-channel standardisation inside the graph: feed raw values",
    }
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "privkd"
    onnx.save(model, str(path))


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``privkd.*`` metadata of an exported student (exporter, inputs, output names, ...)."""
    onnx = require("onnx", "export", "reading an ONNX file's metadata")

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def export_onnx(student_dir: str | Path, out_path: str | Path, *, opset: int | None = None) -> Path:
    """Export the student saved in ``student_dir`` to the ONNX file ``out_path`` (written atomically).

    Inputs: one per prevalent modality, named after it, shaped ``(batch, *sample_shape)``
    float32 with a dynamic ``batch`` axis; output ``logits`` (classification) or ``values``
    (regression), ``(batch, n_outputs)``. ``opset`` defaults to the exporter's own. Tries
    the dynamo exporter first and falls back to the TorchScript one (see the module doc);
    raises :class:`PrivkdError` when neither produces a graph that matches PyTorch.
    """
    require("onnx", "export", "ONNX export")
    refuse_output_onto_inputs("--onnx", out_path, [("STUDENT_DIR", student_dir)])
    student = load_student(student_dir)
    out_path = check_output_file(Path(out_path), "--onnx", "model.onnx")
    names = list(student.prevalent)
    output_name = "logits" if student.task == "classification" else "values"
    wrapper = _Exportable(student.net, names).eval()
    examples = _examples(student, TRACE_BATCH, seed=0)
    failures = []
    for exporter in EXPORTERS:
        if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
            failures.append("dynamo: onnxscript is not installed")
            continue
        done = []

        def write(tmp: Path, exporter: str = exporter, done: list = done) -> None:
            _export(wrapper, examples, tmp, exporter, names, output_name, opset)
            problem = _check(tmp, wrapper, student)
            if problem:
                raise _Mismatch(problem)
            _add_metadata(tmp, student, exporter)
            done.append(exporter)

        try:
            write_atomic(out_path, write)
        except _Mismatch as exc:
            failures.append(f"{exporter}: {exc}")
        except PrivkdError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporters fail with many exception types
            failures.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if done:
            return out_path
    raise PrivkdError(f"cannot export {student.directory} to ONNX ({'; '.join(failures)})",
                      "run with --debug and report the failing module; the PyTorch student (privkd predict) still works")


class _Mismatch(Exception):
    """An exported graph that does not reproduce PyTorch's outputs."""
