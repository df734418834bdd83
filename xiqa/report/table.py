"""One report table: :class:`TableCell` (a number with its spread, or a note), :class:`ColumnKey`
(where a column's numbers live in MLflow, which names its CSV columns) and :class:`Table` (rows
of cells by column, with notes), as displayed text or as numbers for machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class TableCell:
    """One table entry: a number with its spread, or a note (e.g. why a condition was skipped)."""

    mean: float | None = None
    std: float | None = None  # None: a single seed (ddof = 1 undefined)
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    note: str | None = None  # whole, as the CSV carries it
    short_note: str | None = None  # what md / LaTeX / HTML show instead of a long note
    digits: int | None = None  # display digits when not the table's default

    def text(self, digits: int = 3) -> str:
        """The cell as displayed: ``mean ± std`` (or the note) with ``digits`` decimals."""
        if self.mean is None:
            return self.short_note or self.note or "–"
        digits = self.digits or digits
        out = f"{self.mean:.{digits}f}"
        if self.std is not None:
            out += f" ± {self.std:.{digits}f}"
        if self.ci_low is not None and self.ci_high is not None:
            out += f" [{self.ci_low:.{digits - 1}f}, {self.ci_high:.{digits - 1}f}]"
        if self.p_value is not None:
            out += f" (p = {self.p_value:.2f})"
        return out


@dataclass(frozen=True)
class ColumnKey:
    """Where a column's numbers live in MLflow, which names its CSV columns: ``run`` the run's
    coordinates (``<ds>/<arch>/<condition>`` of an aggregate run, ``<ds>/<archA>~<archB>`` of a
    study run's architecture pair, "" when the rows are the runs, Table 7) and ``metric`` the
    stem of the metric key. The CSV column of statistic ``stat`` is ``<run>/<metric>_<stat>``,
    and its value at row ``<id>`` is the metric ``<metric>_<stat>/<id>`` of that run (e.g.
    ``objectcxr/resnet34/fr/pg_mean`` at row ``gradcam`` = ``pg_mean/gradcam`` of the FR
    aggregate run). ``whole``: the value is the metric ``<metric>/<id>`` itself (``dom``,
    ``mmd``; its p-value ``mmd_p``)."""

    run: str
    metric: str
    whole: bool = False

    def name(self, stat: str) -> str:
        """The CSV column of ``stat`` (mean, std, ci_low, ci_high, p or note)."""
        key = self.metric if self.whole and stat == "mean" else f"{self.metric}_{stat}"
        return f"{self.run}/{key}" if self.run else key


@dataclass
class Table:
    """One report table: an id, a title, rows of cells by column, notes; exported to every format."""

    key: str  # file stem, e.g. "table4-objectcxr"
    title: str
    row_header: str  # "method" or "model": the CSV's id column
    rows: list[str]  # display labels
    columns: list[str]
    cells: dict[tuple[str, str], TableCell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # row label -> stable id (as in the metric keys)
    keys: dict[str, ColumnKey] = field(default_factory=dict)  # column -> its runs and metric (CSV names)

    def add_column(self, column: str, key: ColumnKey) -> str:
        """Append ``column``, whose numbers are ``key``'s metric; returns ``column``."""
        self.columns.append(column)
        self.keys[column] = key
        return column

    def cell(self, row: str, column: str) -> TableCell:
        """The cell at ``row`` × ``column`` (an empty cell when absent)."""
        return self.cells.get((row, column), TableCell())

    def text_frame(self) -> pd.DataFrame:
        """The table as displayed: one string per cell, methods as the index."""
        data = {c: [self.cell(r, c).text() for r in self.rows] for c in self.columns}
        return pd.DataFrame(data, index=pd.Index(self.rows, name=self.row_header))

    def numeric_frame(self) -> pd.DataFrame:
        """Machine-readable: indexed by the row's stable id (``row_header``: a method name as in
        the metric keys ``pg_mean/<method>``, ``baseline_<b>``, ``tau_px``; or ``<ds>-<arch>``),
        then ``label`` (the display label), then per column the statistics named as the metric
        keys they come from (:class:`ColumnKey`): ``<run>/<metric>_mean``, ``_std`` and, when
        present, ``_ci_low``, ``_ci_high``, ``_p`` and ``_note`` (whole, never cut). The
        baseline rows hold the same run's ``baseline_<stat>/<b>`` and the τ row its ``tau_px``."""
        data: dict[str, list] = {"label": list(self.rows)}
        for c in self.columns:
            if c not in self.keys:  # a bug in a table builder, not a user error
                raise ValueError(f"{self.key}: column {c!r} has no metric key")
            name = self.keys[c].name
            cells = [self.cell(r, c) for r in self.rows]
            data[name("mean")] = [x.mean for x in cells]
            if any(x.std is not None for x in cells) or any(x.mean is not None for x in cells):
                data[name("std")] = [x.std for x in cells]
            if any(x.ci_low is not None for x in cells):
                data[name("ci_low")] = [x.ci_low for x in cells]
                data[name("ci_high")] = [x.ci_high for x in cells]
            if any(x.p_value is not None for x in cells):
                data[name("p")] = [x.p_value for x in cells]
            if any(x.note for x in cells):
                data[name("note")] = [x.note or "" for x in cells]
        names = [self.keys[c].name("mean") for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.key}: two columns share a metric key: {names}")
        missing = [r for r in self.rows if r not in self.ids]
        if missing:
            raise ValueError(f"{self.key}: rows without an id: {missing}")
        return pd.DataFrame(data, index=pd.Index([self.ids[r] for r in self.rows], name=self.row_header))

