"""MultimodalDataset: lazy vs in-memory reads, modality selection, DataLoader workers, subsets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from privkd.data import MultimodalDataset, write_dataset
from privkd.errors import DatasetError

N = 10


@pytest.fixture(scope="module")
def classification_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    return write_dataset(
        tmp_path_factory.mktemp("data") / "toy.h5",
        modalities={"eda": rng.normal(size=(N, 1, 16)), "ecg": rng.normal(size=(N, 2, 32))},
        labels=np.arange(N) % 2,
        subjects=[f"s{i % 3}" for i in range(N)],
        groups=[f"rec{i // 2}" for i in range(N)],
        task="classification",
        class_names=["a", "b"],
        modality_kinds={"eda": "signal", "ecg": "signal"},
        sampling_rates={"eda": 4.0, "ecg": 8.0},
    )


def _assert_items_equal(a: dict, b: dict) -> None:
    assert a.inputs.keys() == b.inputs.keys()
    for name in a.inputs:
        assert a.inputs[name].dtype == torch.float32
        torch.testing.assert_close(a.inputs[name], b.inputs[name], rtol=0, atol=0)
    assert torch.equal(a.label, b.label) and a.subject == b.subject and a.index == b.index


def test_lazy_and_in_memory_give_identical_items(classification_file: Path) -> None:
    lazy = MultimodalDataset(classification_file)
    memory = MultimodalDataset(classification_file, in_memory=True)
    assert len(lazy) == len(memory) == N
    for i in range(N):
        _assert_items_equal(lazy[i], memory[i])
    item = lazy[3]
    assert item.label.dtype == torch.int64 and item.label.shape == () and int(item.label) == 1
    assert item.subject == "s0" and item.index == 3
    assert item.inputs["ecg"].shape == (2, 32)
    assert lazy.labels.tolist() == [0, 1] * 5 and lazy.subjects[:4].tolist() == ["s0", "s1", "s2", "s0"]
    assert lazy.groups is not None and lazy.groups[:3].tolist() == ["rec0", "rec0", "rec1"]
    assert lazy.info.n_samples == N


def test_modality_selection(classification_file: Path) -> None:
    dataset = MultimodalDataset(classification_file, modalities=["ecg"])
    assert dataset.modalities == ("ecg",) and list(dataset[0].inputs) == ["ecg"]
    assert list(MultimodalDataset(classification_file, ["ecg"], in_memory=True)[0].inputs) == ["ecg"]


def test_absent_modality_names_it_and_the_available_ones(classification_file: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        MultimodalDataset(classification_file, modalities=["eda", "video"])
    message = str(exc.value)
    assert "'video'" in message and "available: ecg, eda" in message and "Fix:" in message
    assert exc.value.field == "/modalities/video"


def test_subset_uses_file_rows_and_keeps_order(classification_file: Path) -> None:
    dataset = MultimodalDataset(classification_file, modalities=["eda"])
    for in_memory in (False, True):
        part = MultimodalDataset(classification_file, ["eda"], in_memory=in_memory).subset([7, 2, 9])
        assert len(part) == 3 and part.in_memory is in_memory and part.modalities == ("eda",)
        assert [part[i].index for i in range(3)] == [7, 2, 9]
        assert part.labels.tolist() == [1, 0, 1] and part.subjects.tolist() == ["s1", "s2", "s0"]
        _assert_items_equal(part[1], dataset[2])
    with pytest.raises(IndexError):
        dataset.subset([N])


def test_dataloader_with_two_workers_collates_a_batched_dict(classification_file: Path) -> None:
    dataset = MultimodalDataset(classification_file).subset(np.arange(1, N))
    dataset[0]  # opens a handle in this process: workers must not reuse it
    restored = pickle.loads(pickle.dumps(dataset))
    _assert_items_equal(restored[4], dataset[4])
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False))
    assert [len(b.index) for b in batches] == [4, 4, 1]
    first = batches[0]
    assert first.inputs["eda"].shape == (4, 1, 16) and first.inputs["ecg"].shape == (4, 2, 32)
    assert first.label.tolist() == [1, 0, 1, 0] and first.index.tolist() == [1, 2, 3, 4]
    assert list(first.subject) == ["s1", "s2", "s0", "s1"]
    torch.testing.assert_close(first.inputs["ecg"][2], dataset[2].inputs["ecg"])


def test_regression_labels_are_float_vectors(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "reg.h5", modalities={"f": np.ones((4, 3))}, labels=[0.5, 1.0, 1.5, 2.0],
                         subjects=["a", "a", "b", "b"], task="regression", modality_kinds={"f": "features"})
    dataset = MultimodalDataset(path)
    label = dataset[2].label
    assert label.dtype == torch.float32 and label.tolist() == [1.5]
    assert dataset.labels.shape == (4, 1) and dataset.groups is None
