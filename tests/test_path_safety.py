"""Issue 31, item 5 ("Paths") and the HDF5 part of item 3: an output path never destroys what a
command reads, and a dataset file is read only from itself, within declared sizes that fit.

- an output that resolves to an input (or into a saved student) is refused, exit code 2, the
  input intact;
- a modality that is an external link, or whose bytes are stored in another file, is refused
  by ``data info`` and by reading the dataset (``read_info``, which ``run`` and ``predict`` use);
- a tiny file declaring a chunked (10, 3, 10**9) modality is refused by ``data info`` at once,
  without allocating the 11 GiB one sample of it would take.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_bad_input import small_dataset, trained_student
from typer.testing import CliRunner

from privkd.cli import app
from privkd.data import read_info
from privkd.errors import DatasetError, PrivkdError


def invoke(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, " ".join(result.output.split())


def refused(result, message: str) -> None:
    assert result.exit_code == 2, message
    assert "Traceback" not in result.output and "Fix:" in message, message


# ------------------------------------------------------------------ output paths

def test_import_table_onto_its_own_csv_is_refused_and_the_csv_is_intact(tmp_path):
    table = tmp_path / "X.csv"
    pd.DataFrame({"subject": ["a", "a", "b", "b"], "label": ["x", "y", "x", "y"],
                  "eda.mean": [0.1, 0.2, 0.3, 0.4]}).to_csv(table, index=False)
    before = table.read_bytes()
    result, message = invoke("data", "import", "table", table, table, "--no-progress")
    refused(result, message)
    assert "DST" in message and "SRC" in message and "X.csv" in message, message
    assert table.read_bytes() == before  # still the CSV, not HDF5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.csv"]

    link = tmp_path / "link.h5"  # the same through a symbolic link
    link.symlink_to(table)
    result, message = invoke("data", "import", "table", table, link, "--no-progress")
    refused(result, message)
    assert table.read_bytes() == before


def test_predict_onto_its_input_is_refused(tmp_path):
    student = trained_student(tmp_path)
    data = tmp_path / "data.h5"
    before = data.read_bytes()
    result, message = invoke("predict", student, data, "--out", data)
    refused(result, message)
    assert "--out" in message and "INPUT" in message and "data.h5" in message, message
    assert data.read_bytes() == before
    read_info(data)  # still a valid dataset


def test_outputs_into_a_saved_student_are_refused(tmp_path):
    student = trained_student(tmp_path)
    weights = (student / "weights.pt").read_bytes()
    table = tmp_path / "t.csv"
    pd.DataFrame({"subject": ["a", "b"], "label": ["x", "y"], "eda.mean": [0.1, 0.2]}).to_csv(table, index=False)
    for args in (["data", "import", "table", table, student / "weights.pt", "--no-progress"],
                 ["predict", student, tmp_path / "data.h5", "--out", student / "predictions.csv"],
                 ["export", student, "--onnx", student / "weights.pt"]):
        result, message = invoke(*args)
        refused(result, message)
        assert "saved student" in message and str(student) in message, message
    assert (student / "weights.pt").read_bytes() == weights
    assert sorted(p.name for p in student.iterdir()) == ["model_card.md", "student.json", "weights.pt"]


def test_report_out_onto_the_runs_own_files_is_refused(tmp_path, monkeypatch):
    from privkd import report
    from privkd.paths import refuse_output_onto_inputs

    run = tmp_path / "run"
    run.mkdir()
    for name in ("environment.json", "folds.json", "summary.json"):
        (run / name).write_text("{}")
    monkeypatch.setattr(report, "load_summary", lambda run_dir: {})  # refused before anything else is read
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.md").symlink_to(run / "summary.json")
    with pytest.raises(PrivkdError, match="--out .*inside the run directory") as caught:
        report.build_report(run, out_dir=elsewhere)
    assert "summary.json" in str(caught.value) and "Fix:" in str(caught.value)
    with pytest.raises(PrivkdError, match="inside the run directory"):
        report.build_report(run, out_dir=run / "fold_0")
    assert (run / "summary.json").read_text() == "{}" and not (run / "fold_0").exists()
    for own in ("report.md", "report.html"):  # the default, --out RUN_DIR, replaces the report's own files
        refuse_output_onto_inputs("--out", run / own, [("RUN_DIR", run)], own=[run / "report.md", run / "report.html"])


# ------------------------------------------------------------ data outside the file

def _replace_modality(path: Path, make) -> Path:
    """``small_dataset`` with /modalities/gyro replaced by what ``make(h5, tmp_dir)`` puts there."""
    small_dataset(path)
    with h5py.File(path, "a") as h5:
        attrs = dict(h5["modalities/gyro"].attrs)
        del h5["modalities/gyro"]
        make(h5, path.parent)
        h5["modalities/gyro"].attrs.update(attrs)
    return path


def _external_link(h5: h5py.File, folder: Path) -> None:
    other = folder / "elsewhere.h5"
    with h5py.File(other, "w") as o:
        o["gyro"] = np.zeros((48, 3, 32), np.float32)
    h5["modalities/gyro"] = h5py.ExternalLink(str(other), "/gyro")


def _external_storage(h5: h5py.File, folder: Path) -> None:
    raw = folder / "gyro.raw"
    raw.write_bytes(np.zeros((48, 3, 32), np.float32).tobytes())
    h5.create_dataset("modalities/gyro", shape=(48, 3, 32), dtype=np.float32, external=[(str(raw), 0, h5py.h5f.UNLIMITED)])


def _soft_link_through_external(h5: h5py.File, folder: Path) -> None:
    _external_link(h5, folder)
    h5.move("modalities/gyro", "outside")
    h5["modalities/gyro"] = h5py.SoftLink("/outside")


@pytest.mark.parametrize("make, words", [(_external_link, ["external link", "elsewhere.h5"]),
                                         (_external_storage, ["stored outside the file", "gyro.raw"]),
                                         (_soft_link_through_external, ["external link", "elsewhere.h5"])],
                         ids=["external link", "external storage", "soft link to an external link"])
def test_data_outside_the_file_is_refused(tmp_path, make, words):
    path = _replace_modality(tmp_path / "data.h5", make)
    with pytest.raises(DatasetError) as caught:
        read_info(path)
    assert caught.value.file == path and caught.value.field == "/modalities/gyro", str(caught.value)
    assert all(w in str(caught.value) for w in words), str(caught.value)
    result, message = invoke("data", "info", path)
    refused(result, message)
    assert "field '/modalities/gyro'" in message and all(w in message for w in words), message


def test_virtual_dataset_of_another_file_is_refused(tmp_path):
    def virtual(h5: h5py.File, folder: Path) -> None:
        other = folder / "sources.h5"
        with h5py.File(other, "w") as o:
            o["gyro"] = np.zeros((48, 3, 32), np.float32)
        layout = h5py.VirtualLayout(shape=(48, 3, 32), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "gyro", shape=(48, 3, 32))
        h5["modalities"].create_virtual_dataset("gyro", layout)

    path = _replace_modality(tmp_path / "data.h5", virtual)
    with pytest.raises(DatasetError, match="virtual dataset") as caught:
        read_info(path)
    assert caught.value.field == "/modalities/gyro" and "sources.h5" in str(caught.value)


def test_a_soft_link_inside_the_file_is_still_read(tmp_path):
    def inside(h5: h5py.File, folder: Path) -> None:
        h5["stored_gyro"] = np.ones((48, 3, 32), np.float32)
        h5["modalities/gyro"] = h5py.SoftLink("/stored_gyro")

    info = read_info(_replace_modality(tmp_path / "data.h5", inside))
    assert info.modalities["gyro"].sample_shape == (3, 32)


# ---------------------------------------------------------------- declared sizes

def test_a_tiny_file_declaring_a_huge_chunked_modality_is_refused_quickly(tmp_path):
    def huge(h5: h5py.File, folder: Path) -> None:  # chunks never written: they would read back as zeros
        h5.create_dataset("modalities/gyro", shape=(48, 3, 10**9), dtype=np.float32, chunks=(1, 1, 2**20))

    path = _replace_modality(tmp_path / "data.h5", huge)
    assert path.stat().st_size < 64 * 2**10
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result, message = invoke("data", "info", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    refused(result, message)
    assert "field '/modalities/gyro'" in message and "declared shape (48, 3, 1000000000)" in message, message
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert time.perf_counter() - started < 30


def test_labels_declaring_more_samples_than_the_modalities_are_not_read(tmp_path):
    path = small_dataset(tmp_path / "data.h5")
    with h5py.File(path, "a") as h5:
        del h5["labels"]
        h5.create_dataset("labels", shape=(10**9,), dtype=np.int64, chunks=(2**20,))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="labels but") as caught:
            read_info(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.field == "/labels" and peak < 200 * 2**20


def test_a_large_sample_is_scanned_in_bounded_pieces(tmp_path):
    """A sample bigger than the scan block (here 24 MiB) is checked piece by piece, and a NaN
    deep inside it is still found with its sample."""
    from privkd.data.h5format.rules import _check_finite

    array = np.zeros((2, 3, 2 * 2**20), np.float32)
    array[1, 2, -1] = np.nan
    reads = []

    class Recording:
        shape, dtype = array.shape, array.dtype

        def __getitem__(self, key):
            block = array[key]
            reads.append(block.nbytes)
            return block

    with pytest.raises(DatasetError, match="NaN value in sample 1"):
        _check_finite(Path("f.h5"), "/modalities/x", Recording())
    assert max(reads) <= 16 * 2**20


def test_privkd_error_type_for_paths(tmp_path):
    from privkd.paths import refuse_output_onto_inputs

    source = tmp_path / "in.csv"
    source.write_text("a\n1\n")
    with pytest.raises(PrivkdError, match="DST"):
        refuse_output_onto_inputs("DST", tmp_path / "." / "in.csv", [("SRC", source)])
    assert refuse_output_onto_inputs("DST", tmp_path / "out.h5", [("SRC", source)]) == tmp_path / "out.h5"
