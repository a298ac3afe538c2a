"""The report's two renderings of the same content: markdown that links the saved figures and
LaTeX table, and a self-contained HTML page that embeds them (the PNGs as base64 data URIs,
the LaTeX as text), so that it needs no other file."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from privkd.data.h5format.spec import independent
from privkd.evaluation.summary import leak_line
from privkd.report.figures import ReportFigure
from privkd.report.subjects import SUBJECT_NOTE
from privkd.report.tables import DIAGNOSTICS_NOTE, GAP_NOTE, Table

__all__ = ["CSS", "ReportContent", "html_page", "markdown"]

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.85em;display:block;overflow-x:auto;max-width:100%}th,td{border:1px solid #ccc;
padding:0.3em 0.5em;text-align:right;white-space:nowrap}th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}
figure{margin:2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:0.9em;color:#444}
.notes li{font-size:0.9em;margin:0.2em 0}code{background:#f6f6f6;padding:0 0.2em}"""


@dataclass
class ReportContent:
    """Everything the report says, ready to render; empty tables are left out."""

    name: str
    run_dir: Path
    task: str
    n_folds: object
    study: str
    """Appended to the introduction for a study directory (where its figures come from), else empty."""
    headline: str
    """Label of the headline metric, for the gap-per-fold title."""
    results: Table
    comparison: Table
    """Each row against the baseline: gap closed, difference, its interval, the paired tests."""
    subjects: Table
    notes: list[str]
    gap_per_fold: Table
    diagnostics: Table
    figures: list[ReportFigure]
    skipped: list[str]
    sweep: Table | None = None
    sweep_dir: Path | None = None
    sweep_config: str = "?"
    leaks: list[str] = field(default_factory=list)
    """The run's leaking evaluation choices (:data:`privkd.config.schema.LEAKS`' words), said
    above every table; empty for privkd's own protocols."""
    independence: str | None = None
    """What the held-out ids are (``subject`` or ``recording``; None in runs made before it was recorded)."""
    latex: str = ""
    """The results as a booktabs table (:func:`privkd.report.latex.results_latex`)."""
    latex_path: Path | None = None


DISPLAY_DPI = 100
"""Pixels per inch a figure is shown at in the HTML page (its PNG has more, for print and
high-density screens): the size its fonts were chosen for."""


def _relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def _md_table(table: Table) -> list[str]:
    def esc(text: object) -> str:
        return str(text).replace("|", "\\|")

    return ["| " + " | ".join(esc(h) for h in table.header) + " |", "|" + "|".join("---" for _ in table.header) + "|",
            *["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]]


def _html_table(table: Table, table_id: str, row_ids: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        attrs = f' id="row-{html.escape(row[0])}" class="method" data-method="{html.escape(row[0])}"' if row_ids else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _per_subject(content: ReportContent) -> bool:
    """Whether the per-subject table says anything: data without subject ids has one sample per
    recording (:func:`privkd.data.from_arrays`), whose score is all or nothing."""
    return bool(content.subjects.rows) and content.independence != "recording"


def markdown(content: ReportContent, out_dir: Path) -> str:
    """``report.md``, linking each saved figure relative to ``out_dir`` (where the file goes)."""
    intro = (f"Run `{content.run_dir}`; task: {content.task}; {content.n_folds} {independent(content.independence)} test "
             f"fold(s){content.study}.")
    leak = [leak_line(content.leaks), ""] if content.leaks else []
    md = [f"# privkd report: {content.name}", "", intro, "", "## Results", "", *leak, *_md_table(content.results), "",
          "### Against the baseline", "", *leak, *_md_table(content.comparison), ""]
    md += [f"- {n}" for n in content.notes] + [""]
    if content.latex_path is not None:
        link = _relative(content.latex_path, out_dir)
        md += [f"The same results as a LaTeX table (booktabs, with these notes): [{link}]({link})", ""]
    if _per_subject(content):
        md += ["### Per-subject scores", "", SUBJECT_NOTE, "", *_md_table(content.subjects), ""]
    if content.gap_per_fold.rows:
        md += [f"### Gap closed per fold ({content.headline})", "", GAP_NOTE, "", *_md_table(content.gap_per_fold), ""]
    if content.diagnostics.rows:
        md += ["## Diagnostics", "", DIAGNOSTICS_NOTE, "", *_md_table(content.diagnostics), ""]
    if content.sweep is not None:
        md += ["## Sweep", "", f"Sweep `{content.sweep_dir}` of `{content.sweep_config}`.", "", *_md_table(content.sweep), ""]
    md += ["## Figures", ""]
    for figure in content.figures:
        others = " · ".join(f"[{fmt.upper()}]({_relative(path, out_dir)})" for fmt, path in figure.paths.items() if fmt != "png")
        md += [f"### {figure.title}", "", figure.caption, "", f"![{figure.title}]({_relative(figure.path, out_dir)})", "",
               *([f"Also as {others}.", ""] if others else [])]
    if content.skipped:
        md += ["### Figures not drawn", "", *[f"- {s}" for s in content.skipped], ""]
    return "\n".join(md)


def html_page(content: ReportContent) -> str:
    """``report.html``: the same content with every figure inline, nothing fetched from anywhere."""
    intro = (f"Run <code>{html.escape(str(content.run_dir))}</code>; task: {html.escape(str(content.task))}; "
             f"{html.escape(str(content.n_folds))} {independent(content.independence)} test fold(s){html.escape(content.study)}.")
    leak = [f'<p class="leak"><strong>{html.escape(leak_line(content.leaks).strip("*"))}</strong></p>'] if content.leaks else []
    body = [f"<h1>privkd report: {html.escape(content.name)}</h1>", f"<p>{intro}</p>", "<h2>Results</h2>", *leak,
            _html_table(content.results, "results", row_ids=True), "<h3>Against the baseline</h3>", *leak,
            _html_table(content.comparison, "comparison"),
            '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in content.notes) + "</ul>"]
    if content.latex:
        body.append(f"<details><summary>LaTeX table (booktabs)</summary><pre>{html.escape(content.latex)}</pre></details>")
    if _per_subject(content):
        body += ["<h3>Per-subject scores</h3>", f"<p>{html.escape(SUBJECT_NOTE)}</p>", _html_table(content.subjects, "subjects")]
    if content.gap_per_fold.rows:
        body += [f"<h3>Gap closed per fold ({html.escape(content.headline)})</h3>",
                 f"<p>{html.escape(GAP_NOTE)}</p>", _html_table(content.gap_per_fold, "gap-per-fold")]
    if content.diagnostics.rows:
        body += ["<h2>Diagnostics</h2>", f"<p>{html.escape(DIAGNOSTICS_NOTE)}</p>", _html_table(content.diagnostics, "diagnostics")]
    if content.sweep is not None:
        sweep_intro = (f"<p>Sweep <code>{html.escape(str(content.sweep_dir))}</code> of "
                       f"<code>{html.escape(content.sweep_config)}</code>.</p>")
        body += ["<h2>Sweep</h2>", sweep_intro, _html_table(content.sweep, "sweep")]
    body.append("<h2>Figures</h2>")
    for figure in content.figures:
        data = base64.b64encode(figure.png).decode("ascii")
        body.append(f'<figure id="fig-{html.escape(figure.key)}"><h3>{html.escape(figure.title)}</h3>'
                    f'<img src="data:image/png;base64,{data}" width="{round(figure.width_in * DISPLAY_DPI)}" '
                    f'alt="{html.escape(figure.title)}">'
                    f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    if content.skipped:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in content.skipped)
        body += ["<h3>Figures not drawn</h3>", f'<ul class="notes">{items}</ul>']
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>privkd report: {html.escape(content.name)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
