"""Documentation as a product: the README stays a short entry point whose links lead somewhere,
and the configuration reference is the schema's (``make test`` also builds the site with
``mkdocs build --strict``, which checks the site's own links and the API reference)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import yaml

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


def _nav_pages(entries: list) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_site_navigation():
    """A page missing from mkdocs.yml's nav fails ``make docs`` (strict); this says which, sooner."""
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages, f"add to mkdocs.yml's nav: {sorted(set(pages) - set(nav))}"


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


MEASUREMENT_PATTERNS = {
    "a speed-up": r"\b\d+(\.\d+)?\s?x\s(faster|slower)\b|\b\d+\.\d+ times (the|as)\b",
    "a timing": r"\b\d+(\.\d+)?\s?(ms|µs)\b|\b\d+ min \d+ s\b",
    "a p-value": r"\bp\s?=\s?0?\.\d",
    "an iteration count": r"\b\d{1,3}(?:[ ,]\d{3})+\s+iterations\b|\b\d{3,}\s+iterations\b",
    "a measured score": r"\b(macro-F1|accuracy|CCC)\s(of\s)?0\.\d{2,}",
}
"""What a measured result looks like in prose: it belongs on a docs page (speed, a study, the
Sinkhorn notes), where it is dated by its commit and processor; a docstring states the design
and points there, so that re-measuring never leaves stale numbers in the code."""


def _prose(path: Path) -> list[tuple[int, str]]:
    """The docstrings (module, class, function and attribute ones) and comments of a source file."""
    source = path.read_text()
    found = [(node.lineno, node.value.value) for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
             and isinstance(node.value.value, str)]
    found += [(token.start[0], token.string) for token in tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT]
    return found


def test_no_docstring_or_comment_in_src_holds_a_measured_result():
    offending = [f"{path.relative_to(ROOT)}:{line}: {what}: {match.group(0)!r}"
                 for path in sorted((ROOT / "src").rglob("*.py")) for line, text in _prose(path)
                 for what, pattern in MEASUREMENT_PATTERNS.items() for match in re.finditer(pattern, text)]
    assert not offending, "move these to a docs page and leave a pointer:\n" + "\n".join(offending)
