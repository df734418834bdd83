"""DVC stage ``report``: aggregate the evaluations of the grid, log the study, export its tables.

:func:`xiqa.report.study.run_study` reads exactly the evaluation and sanity pointers the grid
in ``params.yaml`` names, logs one aggregate run per dataset × arch × condition, one study run
per dataset and one report run (experiment ``xiqa-study``, tag ``xiqa.study``), and writes
``metrics/<ds>-<arch>/*.json`` (DVC metrics: the headline), ``plots/pg-<ds>.csv`` (DVC plots) and
``reports/`` (``xiqa report`` on this study, plus the full metric sets in ``reports/metrics/``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines import _common

app = _common.stage_app(__doc__.splitlines()[0])


@app.command()
def main(out: Path = typer.Option(Path("reports"), help="folder for the exported tables and figures")) -> None:
    """Aggregate every evaluation of the grid, log aggregate/study runs, write metrics, plots, reports."""
    from xiqa.report.study import run_study

    root, params = _common.params()
    result = run_study(root, params, out)
    typer.echo(f"study {result.study}: {result.evaluations} evaluations aggregated; "
               f"{len(result.written)} files under {out}/")


if __name__ == "__main__":
    _common.run(app)
