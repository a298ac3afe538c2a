"""Documentation as a product: the README stays a short entry point whose links lead somewhere,
and the configuration reference is the schema's (``make test`` also builds the site with
``mkdocs build --strict``, which checks the site's own links and the API reference)."""

from __future__ import annotations

import re
from pathlib import Path

from privkd.config import reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
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


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert first_block and first_block.start() < text.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    quick_start = next(i for i, line in enumerate(lines) if line.startswith("## Quick start"))
    assert quick_start < 60 and "privkd run" in "\n".join(lines[quick_start:100])


def test_the_readme_links_lead_to_files_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links to no documentation page"
    for link in local:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), link
