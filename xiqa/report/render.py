"""Render a report table for people and machines: Markdown, CSV, LaTeX and HTML (one renderer per
format in :data:`RENDERERS`), the self-contained HTML page, and :func:`write_tables`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from xiqa.errors import XiqaError
from xiqa.io import write_text
from xiqa.report.table import Table


def to_markdown(t: Table) -> str:
    """``t`` as a Markdown table with its title and notes."""
    frame = t.text_frame()
    head = [t.row_header, *t.columns]
    lines = [f"### {t.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(t.columns)) + "|"]
    for label, values in frame.iterrows():
        cells = [str(label), *[str(v) for v in values]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [""] + [f"_{n}_" for n in t.notes]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """``t`` as CSV for machines: the row id, its label, then every statistic, nothing cut."""
    return t.numeric_frame().to_csv()


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "±": r"$\pm$", "×": r"$\times$", "σ": r"$\sigma$", "−": "-", "—": "--",
                  "–": "--", "·": r"$\cdot$", "τ": r"$\tau$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and Unicode symbols as math."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(t: Table) -> str:
    """``t`` as a LaTeX ``tabular`` with its caption and notes."""
    frame = t.text_frame()
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(t.title)}}}",
             rf"\label{{tab:{t.key}}}", r"\begin{tabular}{l" + "r" * len(t.columns) + "}", r"\hline",
             " & ".join(latex_escape(h) for h in [t.row_header, *t.columns]) + r" \\", r"\hline"]
    for label, values in frame.iterrows():
        lines.append(" & ".join(latex_escape(str(c)) for c in [label, *values]) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {latex_escape(n)}" for n in t.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(t: Table) -> str:
    """An HTML fragment (``<table>`` with caption and notes) for one table."""
    frame = t.text_frame()
    e = html.escape
    out = [f'<table class="xiqa" id="{e(t.key)}">', f"<caption>{e(t.title)}</caption>",
           "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in [t.row_header, *t.columns]) + "</tr></thead>",
           "<tbody>"]
    for label, values in frame.iterrows():
        out.append(f"<tr><th>{e(str(label))}</th>" + "".join(f"<td>{e(str(v))}</td>" for v in values) + "</tr>")
    out.append("</tbody></table>")
    out += [f'<p class="note">{e(n)}</p>' for n in t.notes]
    return "\n".join(out) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.xiqa { border-collapse: collapse; margin: 1em 0 0.3em; font-size: 0.85em; }
table.xiqa caption { text-align: left; font-weight: 600; padding-bottom: 0.4em; }
table.xiqa th, table.xiqa td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
table.xiqa td { text-align: right; font-variant-numeric: tabular-nums; }
table.xiqa thead th { background: #f3f3f3; }
p.note { font-size: 0.8em; color: #555; margin: 0.1em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
"""


def html_page(title: str, tables: Iterable[Table], figures: Iterable[tuple[str, str]] = (),
              header: str = "") -> str:
    """One self-contained page: every table, then every figure (``(caption, data URI or path)``)."""
    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if header:
        parts.append(f"<p>{e(header)}</p>")
    parts.append("<h2>Tables</h2>")
    parts += [to_html(t) for t in tables]
    figures = list(figures)
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, src in figures:
            parts.append(f'<figure><img src="{e(src)}" alt="{e(caption)}">'
                         f'<figcaption>{e(caption)}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class Renderer:
    """How one report format is written: the file suffix and the function rendering a table."""

    suffix: str
    render: Callable[[Table], str]


# the one table of formats: its keys are xiqa.schema.REPORT_FORMATS (the params.yaml and CLI choices)
RENDERERS: dict[str, Renderer] = {"md": Renderer(".md", to_markdown), "csv": Renderer(".csv", to_csv),
                                  "latex": Renderer(".tex", to_latex), "html": Renderer(".html", to_html)}


def write_tables(tables: Iterable[Table], out: Path, formats: Iterable[str]) -> list[Path]:
    """Write every table in every format: ``<out>/<key><suffix>``. Returns the files written."""
    out = Path(out)
    written = []
    for fmt in formats:
        if fmt not in RENDERERS:
            raise XiqaError(f"unknown report format {fmt!r}; choose from {', '.join(RENDERERS)}")
        for t in tables:
            path = out / f"{t.key}{RENDERERS[fmt].suffix}"
            write_text(path, RENDERERS[fmt].render(t))
            written.append(path)
    return written
