"""The ``sanity`` stage's work for one grid cell: MPRT and random logit of every trained seed.

:class:`SanityCell` holds what the seeds of one dataset × arch share
(:class:`xiqa.evaluation.cell.CellContext` and the fixed, seeded sample of test images with
boxes); :meth:`SanityCell.check` loads one trained model from its registry pointer, runs
:func:`xiqa.evaluation.sanity.mprt` and :func:`xiqa.evaluation.sanity.random_logit` on the
sample, logs a ``sanity`` run (experiment ``xiqa-<ds>``; metric histories ``mprt_spearman/<m>``,
``mprt_ssim/<m>`` with step = randomised depth; ``random_logit_ssim/<m>``; the per-image tables
``mprt.csv`` and ``random_logit.csv``) and writes the summary JSON the report stage reads
(:func:`summarise`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from xiqa import paths
from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.evaluation.cell import CellContext, each_version, load_pointer_model, log_tables
from xiqa.io import write_json
from xiqa.params import Params

if TYPE_CHECKING:
    from torch import nn

    from xiqa.data.dataset import Split

__all__ = ["SanityCell", "sanity_cell", "summarise"]


def summarise(mprt: pd.DataFrame, random_logit: pd.DataFrame) -> dict:
    """The JSON summary of one model's checks: ``blocks`` (label of each step, 0 = ``original``),
    ``final_step``, per method ``mprt[m] = {spearman: [mean per step], ssim: [...], n_constant:
    [...]}`` (means over the sample's non-constant pairs; None where every pair was constant),
    ``random_logit_ssim[m]`` (mean or None) and ``random_logit_constant[m]``."""
    from xiqa.evaluation.sanity import step_means

    means = step_means(mprt)
    blocks = means.drop_duplicates("step").sort_values("step")["block"].tolist()

    def clean(v: float) -> float | None:
        return None if math.isnan(v) else round(float(v), 6)

    out: dict = {"blocks": blocks, "final_step": len(blocks) - 1, "mprt": {}, "random_logit_ssim": {},
                 "random_logit_constant": {}}
    for method, g in means.groupby("method", sort=False):
        g = g.sort_values("step")
        out["mprt"][method] = {"spearman": [clean(v) for v in g["spearman"]], "ssim": [clean(v) for v in g["ssim"]],
                               "n_constant": [int(v) for v in g["n_constant"]]}
    for method, g in random_logit.groupby("method", sort=False):
        out["random_logit_ssim"][method] = clean(g["ssim"].mean())
        out["random_logit_constant"][method] = int(g["constant"].sum())
    return out


def sanity_cell(root: Path, params: Params, dataset: str, arch: str, seeds: list[int] | None = None,
                echo: Callable[[str], None] = print) -> list[dict]:
    """MPRT and random logit of every trained seed (default: ``grid.seeds``) of the grid cell
    ``dataset`` × ``arch``; returns the summaries written (skipped models excluded)."""
    done = []
    for cell, pointer, _, seed, out in each_version(
            root, dataset, arch, [("trained", s) for s in seeds or params.grid.seeds],
            lambda _, s: paths.sanity_pointer(root, dataset, arch, s),
            lambda: SanityCell(root, params, dataset, arch), echo):
        summary = cell.check(pointer, seed, out)
        final = summary["final_step"]
        worst = max(summary["mprt"], key=lambda m: summary["mprt"][m]["spearman"][final] or -1.0)
        echo(f"{dataset}-{arch} trained-s{seed}: {len(cell.ids)} images x {final} randomisation steps in "
             f"{summary['seconds']:.1f} s; highest final Spearman {worst} "
             f"{summary['mprt'][worst]['spearman'][final]}; run {summary['run_id']}")
        done.append(summary)
    return done


class SanityCell(CellContext):
    """What every trained seed of one dataset × arch shares (:class:`CellContext`), and the image sample."""

    def __init__(self, root: Path, params: Params, dataset: str, arch: str, split: Split | None = None) -> None:
        """``split``: the test split as the model takes it (default: the prepared one at
        ``train.<dataset>.image_size``, ImageNet-normalised)."""
        from xiqa.evaluation.scoring import figure_sample

        super().__init__(root, params, dataset, arch, split)
        if not self.scored:
            raise XiqaError(f"{dataset}: no test image has a box, so the sanity checks have no sample")
        self.ids = figure_sample(self.scored, params.sanity.samples, params.sanity.seed)
        position = {image_id: i for i, image_id in enumerate(self.split.ids)}
        self.images = self.split.inputs([position[i] for i in self.ids])

    def check(self, pointer: dict, seed: int, out: Path, model: nn.Module | None = None,
              extra_tags: dict[str, str] | None = None) -> dict:
        """MPRT and random logit of the trained model of ``pointer`` (seed ``seed``): one run,
        the summary JSON at ``out``; returns the summary (with ``run_id`` and ``seconds``).
        ``model``: that model, already loaded (``xiqa audit``); ``extra_tags``: more run tags."""
        import mlflow

        from xiqa import saliency
        from xiqa.evaluation.sanity import metric_histories, mprt, random_logit
        from xiqa.tracking import runs

        sp, ev, ds, arch = self.params.sanity, self.params.evaluate, self.dataset, self.arch
        tags = self.run_tags("sanity", pointer, "trained", seed, extra_tags)
        run_params = {"samples": len(self.ids), "sample_seed": sp.seed, "cascade_seed": seed,
                      "methods": ",".join(self.methods), "image_size": self.image_size, "images": ",".join(self.ids)}
        with runs.tracked_run(self.root, ds, f"sanity {ds}-{arch} {paths.alias('trained', seed)}",
                              run_params, tags) as run:
            if model is None:
                model = load_pointer_model(pointer, self.params.device)
            methods, refused = saliency.applicable(model, self.methods)
            mlflow.set_tags({S.not_applicable_tag(m): why for m, why in refused.items()})
            x = self.images.to(next(model.parameters()).device)
            layers = ev.layers.get(arch)
            start = time.perf_counter()
            # the cascade's generator is seeded with the model's seed: each seed its own draw
            frame = mprt(model, x, arch, seed=seed, methods=methods, layers=layers,
                         batch_size=ev.batch_size)
            logit = random_logit(model, x, arch, seed=seed, methods=methods, layers=layers,
                                 batch_size=ev.batch_size)
            seconds = time.perf_counter() - start
            for key, points in metric_histories(frame).items():
                for step, value in points:
                    mlflow.log_metric(key, value, step=step)
            summary = summarise(frame, logit)
            mlflow.log_metrics({f"random_logit_ssim/{m}": v for m, v in summary["random_logit_ssim"].items()
                                if v is not None} | {"sanity_seconds": seconds})
            log_tables({"mprt.csv": frame, "random_logit.csv": logit})
            run_id = run.info.run_id
        summary = {"run_id": run_id, "model_run_id": pointer["run_id"], "model_uri": pointer["model_uri"],
                   "version": pointer.get("version"), "images": self.ids, "seconds": round(seconds, 3)} | summary
        write_json(out, summary)
        return summary
