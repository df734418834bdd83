"""Put an audited model (``xiqa audit``) beside the study's models in the latest study's tables.

The tables of ``xiqa report`` are read from one study's aggregate runs (experiment
``xiqa-study``, tag ``xiqa.study``). :func:`add_to_study` logs one more aggregate run into the
latest finished study, for ``<dataset>`` × ``<NAME>/v<VERSION>`` × ``trained``, computed from the
audit's evaluation run exactly as the report stage computes the study's (one model, so no std
over seeds), with the audit's sanity summary and a ``not_applicable/<m>`` tag per method that
could not run. The next ``dvc repro`` logs a new study, which holds only the grid's models.
"""

from __future__ import annotations

from pathlib import Path

from xiqa import schema as S
from xiqa.params import Params


def add_to_study(root: Path, params: Params, dataset: str, arch: str, evaluation: dict, sanity: dict | None,
                 not_applicable: dict[str, str], extra_tags: dict[str, str]) -> str:
    """Log the aggregate run of the audited ``arch`` into the latest finished study; returns that
    study's id (a store without a finished study is a :class:`XiqaError` from
    :func:`xiqa.report.export.latest_study`)."""
    import tempfile

    import mlflow
    import pandas as pd

    from xiqa.evaluation.aggregate import baseline_metrics, condition_metrics, localisation_metrics, sanity_metrics
    from xiqa.report.export import latest_study
    from xiqa.tracking import runs, store

    study = latest_study(root)
    ev = params.evaluate
    with tempfile.TemporaryDirectory() as tmp:
        frames = {name: pd.read_csv(mlflow.artifacts.download_artifacts(
            run_id=evaluation["run_id"], artifact_path=name, dst_path=tmp))
            for name in ("per_image.csv", "baselines.csv")}
    per_image, baselines = frames["per_image.csv"], frames["baselines.csv"]
    methods = [m for m in S.METHODS if m in set(per_image["method"])]
    metrics = condition_metrics([per_image], methods, n_boot=ev.bootstrap, seed=ev.seed)
    metrics |= baseline_metrics([baselines], n_boot=ev.bootstrap, seed=ev.seed)
    metrics |= localisation_metrics([per_image], methods, n_boot=ev.bootstrap, seed=ev.seed)
    if sanity is not None:
        metrics |= sanity_metrics([sanity], methods)
    metrics[S.TAU] = float(evaluation[S.TAU])
    tags = extra_tags | {S.KIND: "aggregate", S.STUDY: study, "dataset": dataset, "arch": arch,
                         "condition": "trained", "grid_index": str(10_000), "seeds": "0",
                         "methods": ",".join(methods), "evaluation_run_id": evaluation["run_id"]}
    tags |= {S.not_applicable_tag(m): why for m, why in not_applicable.items()}
    exp = store.experiment_id(root, S.STUDY_EXPERIMENT)
    with runs.experiment_run(exp, f"aggregate {dataset}-{arch} trained (audit)", tags):
        mlflow.log_params({"bootstrap": ev.bootstrap, "seed": ev.seed, "target": ev.target,
                           "smooth_sigma": ev.smooth_sigma, "smooth_kernel": ev.smooth_kernel,
                           "tau_px": evaluation[S.TAU], "image_size": evaluation["image_size"]})
        mlflow.log_metrics(metrics)
    return study
