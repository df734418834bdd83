"""The ``evaluate`` stage's work for one grid cell: every model version → saliency maps → Pointing Game.

:func:`evaluate_cell` evaluates every condition × seed of one dataset × arch in one process
(the test split is decoded once and torch / MLflow imported once, instead of once per version).
For each version it reads ``models/<ds>-<arch>/<cond>/s<seed>.json``, loads the registered
model, scores the test split (:func:`xiqa.evaluation.scoring.score_split`) at τ in input pixels
(:meth:`xiqa.params.EvaluateParams.tau_px`), logs an evaluation run (experiment ``xiqa-<ds>``,
tagged with the model version it scored) and writes ``eval/<ds>-<arch>/<cond>-s<seed>.json``.

What this stage shares with ``sanity`` (the loop over model pointers, the per-cell set-up, run
tags and CSV logging) is :mod:`xiqa.evaluation.cell`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from xiqa import paths
from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.evaluation.cell import CellContext, each_version, load_pointer_model, log_tables
from xiqa.io import write_json
from xiqa.params import Params

if TYPE_CHECKING:
    from torch import nn

    from xiqa.data.dataset import Split

__all__ = ["EvaluationCell", "evaluate_cell"]

log = logging.getLogger(__name__)


def evaluate_cell(root: Path, params: Params, dataset: str, arch: str, conditions: list[str] | None = None,
                  seeds: list[int] | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Evaluate every ``condition`` × ``seed`` (default: trained + ``grid.randomised`` × ``grid.seeds``)
    of the grid cell ``dataset`` × ``arch``; returns the pointers written (skipped ones excluded)."""
    conditions = list(conditions or ["trained", *params.grid.randomised])
    seeds = list(seeds or params.grid.seeds)
    bad = [c for c in conditions if c not in S.CONDITIONS]
    if bad:
        raise XiqaError(f"--condition: unknown condition(s) {', '.join(bad)} (use {', '.join(S.CONDITIONS)})")
    written = []
    for cell, pointer, condition, seed, out in each_version(
            root, dataset, arch, [(c, s) for c in conditions for s in seeds],
            lambda c, s: paths.eval_pointer(root, dataset, arch, c, s),
            lambda: EvaluationCell(root, params, dataset, arch), echo):
        written.append(cell.evaluate(pointer, condition, seed, out, echo))
    return written


class EvaluationCell(CellContext):
    """What every version of one grid cell shares (:class:`CellContext`), and the figure sample."""

    def __init__(self, root: Path, params: Params, dataset: str, arch: str, split: Split | None = None) -> None:
        """``split``: the test split as the models take it (default: the prepared one at
        ``train.<dataset>.image_size``, ImageNet-normalised)."""
        from xiqa.evaluation.scoring import figure_sample

        super().__init__(root, params, dataset, arch, split)
        self.positive = 1  # the logit of label 1 (xiqa's models; an audited model states its own)
        ev = params.evaluate
        self.tau_px = ev.tau_px(dataset, self.image_size)  # τ in input pixels, logged by every run
        self.sample = figure_sample(self.scored, ev.figure_samples, ev.seed)

    def evaluate(self, pointer: dict, condition: str, seed: int, out: Path,
                 echo: Callable[[str], None] = print, model: nn.Module | None = None,
                 extra_tags: dict[str, str] | None = None) -> dict:
        """Score the model of ``pointer`` in one evaluation run; write and return its pointer ``out``.
        ``model``: that model, already loaded (``xiqa audit``); ``extra_tags``: more run tags."""
        import mlflow
        import torch
        from mlflow.exceptions import MlflowException
        from rich.progress import Progress

        from xiqa import saliency
        from xiqa.evaluation.scoring import score_split
        from xiqa.tracking import runs

        root, dataset, arch, ev = self.root, self.dataset, self.arch, self.params.evaluate
        name = pointer.get("name") or paths.registered_model_name(dataset, arch)
        tags = self.run_tags("evaluation", pointer, condition, seed,
                             ({"start": pointer["start"]} if pointer.get("start") else {}) | (extra_tags or {}))
        run_params = {"tolerance": ev.tolerance, "tolerance_at": getattr(ev.tolerance_at, dataset),
                      S.TAU: self.tau_px, "target": ev.target, "methods": ",".join(self.methods),
                      "smooth_sigma": ev.smooth_sigma, "smooth_kernel": ev.smooth_kernel,
                      "image_size": self.image_size, "n_test": len(self.split),
                      "figure_samples": len(self.sample), "topk_fraction": ev.topk_fraction,
                      "centre_sigma": ev.centre_sigma}

        def smooth(maps: torch.Tensor) -> torch.Tensor:
            return saliency.smooth(maps, sigma=ev.smooth_sigma, kernel_size=ev.smooth_kernel)

        # the run spans loading and scoring, like a training run spans training: an evaluation
        # that fails or is interrupted shows in MLflow as FAILED / KILLED, not as nothing
        with runs.tracked_run(root, dataset, f"evaluate {dataset}-{arch} {paths.alias(condition, seed)}",
                              run_params, tags) as run:
            if model is None:
                model = load_pointer_model(pointer, self.params.device)
            with Progress(transient=True) as bar:
                task = bar.add_task(f"{dataset}-{arch} {condition}-s{seed}", total=len(self.scored))
                result = score_split(model, arch, self.split, self.boxes, methods=self.methods,
                                     tolerance=self.tau_px, target=ev.target, smooth=smooth,
                                     batch_size=ev.batch_size, layers=ev.layers.get(arch),
                                     sample_ids=self.sample, progress=lambda n: bar.advance(task, n),
                                     topk_fraction=ev.topk_fraction, centre_sigma=ev.centre_sigma,
                                     positive=self.positive)
            for why in result.not_applicable.values():
                echo(f"{dataset}-{arch} {condition}-s{seed}: {why}")
            mlflow.set_tags({S.not_applicable_tag(m): why for m, why in result.not_applicable.items()})
            pg_off, pg_on = result.accuracies(False), result.accuracies(True)
            const_off, const_on = result.constant_maps(False), result.constant_maps(True)
            metrics = {S.pg_metric(m, False): v for m, v in pg_off.items()}
            metrics |= {S.pg_metric(m, True): v for m, v in pg_on.items()}
            metrics |= {f"constant_maps/{m}": float(v) for m, v in const_off.items()}
            metrics |= {f"constant_maps_smooth/{m}": float(v) for m, v in const_on.items()}
            metrics |= {S.skipped_metric(m): float(v) for m, v in result.skipped_layers.items()}
            metrics["n_images"] = float(len(self.scored))
            metrics["constant_maps"] = float(sum(const_off.values()) + sum(const_on.values()))
            metrics[S.TAU] = self.tau_px
            baselines = result.baseline_accuracies()
            metrics |= {S.baseline_metric(b): v for b, v in baselines.items()}
            for smoothed in (False, True):
                for k, per_method in result.localisation(smoothed).items():
                    metrics |= {S.loc_metric(k, m, smoothed): v for m, v in per_method.items()}
            for k, per_baseline in result.localisation_baselines().items():
                metrics |= {S.loc_baseline_metric(k, b): v for b, v in per_baseline.items()}
            mlflow.log_metrics(metrics)
            log_tables({"per_image.csv": result.per_image, "baselines.csv": result.baselines})
            if result.sample is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    mlflow.log_artifact(str(result.sample.save(Path(tmp) / "figure_maps.npz")))
            run_id = run.info.run_id
        if pointer.get("version"):
            try:  # link the version back to its latest evaluation (best effort: the run holds the link too)
                mlflow.MlflowClient().set_model_version_tag(name, str(pointer["version"]),
                                                            "evaluation_run_id", run_id)
            except (MlflowException, OSError) as err:
                log.warning("%s version %s: could not tag it with evaluation run %s (%s: %s)",
                            name, pointer["version"], run_id, type(err).__name__, err)
        summary = {"run_id": run_id, "model_run_id": pointer["run_id"], "model_uri": pointer["model_uri"],
                   "version": pointer.get("version"), "start": pointer.get("start"),
                   "n_images": len(self.scored),
                   "constant_maps": int(metrics["constant_maps"]),
                   S.TAU: self.tau_px, "tolerance": ev.tolerance,
                   "tolerance_at": getattr(ev.tolerance_at, dataset), "image_size": self.image_size,
                   "baselines": {b: round(v, 6) for b, v in baselines.items()},
                   "pg": {m: round(v, 6) for m, v in pg_off.items()},
                   "pg_smooth": {m: round(v, 6) for m, v in pg_on.items()},
                   "not_applicable": result.not_applicable}
        write_json(out, summary)
        best = max(pg_on, key=lambda m: pg_on[m])
        echo(f"{dataset}-{arch} {condition}-s{seed}: {len(self.scored)} images scored at tau "
             f"{self.tau_px:g} input px; best smoothed PG {best} {pg_on[best]:.3f} (chance "
             f"{baselines['chance']:.3f}, centre {baselines['centre']:.3f}); run {run_id}")
        return summary
