"""Shared fixtures: the embedded dataset built once per session into a temporary cache."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def watch_path(tmp_path_factory) -> Path:
    from privkd.data.embedded import embedded_dataset_path

    return embedded_dataset_path(tmp_path_factory.mktemp("cache"))
