"""Documentation as a product: the configuration reference is the schema's (``make test`` also
builds the site with ``mkdocs build --strict``, which checks the site's own links and the API
reference)."""

from __future__ import annotations

from pathlib import Path

from privkd.config import reference

ROOT = Path(__file__).resolve().parents[1]
CONFIG_REFERENCE = ROOT / "docs" / "reference" / "configuration.md"


def test_the_configuration_reference_is_generated_from_the_schema():
    """A key added, renamed, re-typed or re-documented in config/schema.py must reach the page."""
    committed = CONFIG_REFERENCE.read_text()
    assert committed == reference.render(), (
        "docs/reference/configuration.md and src/privkd/config/schema.py disagree: "
        "run `make docs-reference` and commit the page")


def test_the_configuration_reference_lists_every_key_once():
    page = CONFIG_REFERENCE.read_text()
    for key in ("name", "seed", "methods", "data.path", "training.jobs", "student.hallucinate",
                "structural.ot_mode", "amid.mi_reduction", "study.search"):
        assert page.count(f"| `{key}` |") == 1, key
    assert "| `structural.ot_mode` | `Literal['paper', 'paired']` | `paper` | `paper`, `paired` |" in page
    assert "| `training.lr` | `float` | `0.001` | > 0 |" in page
