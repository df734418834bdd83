"""``xiqa report``: read one study's runs from the tracking store and write its tables and page.

Never touches a model: every number comes from what the aggregate and study runs logged
(:mod:`xiqa.schema`), fetched with ``mlflow.search_runs``; the figures are the study runs'
``figures/`` artifacts. The store is the project's embedded one, or ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.io import write_text
from xiqa.report import render as R
from xiqa.report import tables as T

FORMATS = S.REPORT_FORMATS


def _study_experiment_id(root: Path) -> str:
    import mlflow

    from xiqa.tracking import store

    uri = store.ensure_store(root)
    exp = mlflow.MlflowClient(uri).get_experiment_by_name(S.STUDY_EXPERIMENT)
    if exp is None:
        raise XiqaError(f"{uri}: no experiment {S.STUDY_EXPERIMENT!r}; run `dvc repro` (the report stage) first")
    return exp.experiment_id


def latest_study(root: Path) -> str:
    """The ``xiqa.study`` id of the most recent study whose report stage finished: its ``report``
    run, logged last, is FINISHED. A study interrupted half-way (some aggregates logged) is never
    the latest; ``--study ID`` still reaches it."""
    import mlflow

    exp = _study_experiment_id(root)
    runs = mlflow.search_runs([exp], filter_string=f"tags.`{S.KIND}` = 'report' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs.empty:
        raise XiqaError(f"experiment {S.STUDY_EXPERIMENT!r} holds no finished study; run `dvc repro` first")
    return str(runs.iloc[0][f"tags.{S.STUDY}"])


def study_runs(root: Path, study: str | None = None) -> tuple[str, pd.DataFrame]:
    """``(study id, runs)``: every aggregate, study and report run of ``study`` (default: latest)."""
    import mlflow

    study = study or latest_study(root)
    exp = _study_experiment_id(root)
    runs = mlflow.search_runs([exp], filter_string=f"tags.`{S.STUDY}` = '{study}'", max_results=10_000)
    if runs.empty:
        raise XiqaError(f"no run of study {study!r} in experiment {S.STUDY_EXPERIMENT!r}")
    return study, runs


def _figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Download every study run's ``figures/`` artifacts into ``out/figures`` (grid order)."""
    import mlflow

    kinds = runs.get(f"tags.{S.KIND}")
    found: list[Path] = []
    if kinds is None:
        return found
    for _, row in runs[kinds == "study"].iterrows():
        client = mlflow.MlflowClient()
        names = [a.path for a in client.list_artifacts(row["run_id"], "figures")]
        if not names:
            continue
        local = Path(mlflow.artifacts.download_artifacts(run_id=row["run_id"], artifact_path="figures",
                                                         dst_path=str(out)))
        found += [local / Path(n).name for n in sorted(names) if n.endswith(".png")]
    return found


def _caption(path: Path) -> str:
    layout, _, ds = path.stem.partition("-")
    what = {"smoothing": "smoothing off / on (cf. paper Fig. 2)",
            "randomisation": "fully randomised, semi-randomised and trained models (cf. Figs. 3, 5)",
            "seeds": "trained models, seeds side by side (cf. Fig. 4)",
            "architectures": "trained architectures side by side (cf. Fig. 6)",
            "overlay": "one test scan with its expert box, and a trained model's Grad-CAM and NormGrad maps",
            "sanity": "model-parameter randomisation test (Adebayo et al. 2018): similarity of each method's maps "
                      "to the trained model's as the model is randomised from the logits down, mean over seeds",
            "training": "learning curves of the trained models (training loss, validation AUC per epoch) and "
                        "of the stand-in pretext they started from"
            }.get(layout, layout)
    if layout in ("sanity", "training"):
        return f"{S.DATASET_LABELS.get(ds, ds)}: {what}."
    return (f"{S.DATASET_LABELS.get(ds, ds)}: {what}. "
            "Red: ground-truth boxes; cross: the map's peak (white hit, black miss).")


def export_report(root: Path, out: Path, formats: Iterable[str] = FORMATS, study: str | None = None) -> list[Path]:
    """Write every table in every format under ``out`` (``<table>.<ext>``) and, with ``html``,
    ``index.html`` holding all tables and figures (embedded). Returns the files written."""
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise XiqaError(f"unknown report format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    study, runs = study_runs(root, study)
    tables = T.build_tables(runs)
    written = R.write_tables(tables, out, formats)
    if "html" in formats:
        figures = _figures(runs, out)
        embedded = [(_caption(p), "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode())
                    for p in figures]
        page = out / "index.html"
        write_text(page, R.html_page("xiqa study report", tables, embedded,
                                     header=f"Study {study}: Pointing Game accuracies read from the MLflow runs "
                                            f"of this study (never recomputed)."))
        written += figures + [page]
    return written
