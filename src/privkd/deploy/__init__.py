"""Deployment of trained students: a self-describing student directory with a model card,
predictions on new data (privkd ``.h5`` or CSV / Parquet tables) and ONNX export.

A student needs only the prevalent modalities at test time; nothing here ever asks for the
privileged ones, nor imports the training stack.
"""

from privkd.deploy.export import export_onnx, onnx_metadata
from privkd.deploy.predict import predict_arrays, predict_file
from privkd.deploy.student import LoadedStudent, load_student, save_student

__all__ = [
    "LoadedStudent",
    "export_onnx",
    "load_student",
    "onnx_metadata",
    "predict_arrays",
    "predict_file",
    "save_student",
]
