"""Stage `prepare`: patient-wise, label-stratified, seeded splits and the box and image tables.

Reads ``data/raw/<dataset>/`` and writes ``data/prepared/<dataset>/`` (``splits.csv``,
``boxes.csv``, ``images.csv``) and the image cache ``images_<S>px.{npy,json}``: every scan decoded
once and resized to ``train.<dataset>.image_size`` (what training, randomisation and evaluation
read, memory-mapped). For Object-CXR the distributed ``train/`` and ``dev/`` parts are
pooled and re-split with the ``prepare`` fractions (80/10/10 by default).
"""

from __future__ import annotations

import typer

from pipelines._common import DATASET, params, run, stage_app
from xiqa.errors import XiqaError
from xiqa.paths import prepared_dir, raw_dir
from xiqa.schema import SPLITS, Dataset

app = stage_app(__doc__.split("\n\n")[0])


@app.command()
def main(dataset: Dataset = DATASET) -> None:
    """Write splits.csv, boxes.csv, images.csv and the image cache for data/raw/<dataset>/."""
    from xiqa.data import splits  # torch, pandas, scipy: not for --help
    from xiqa.data.dataset import write_image_cache
    from xiqa.data.datasets import dataset_spec

    root, p = params()
    raw = raw_dir(root, dataset)
    if not raw.is_dir():
        raise XiqaError(f"{raw}: not found (run the `data` stage first)")
    # the data stage decoded every image already; headers are enough here
    table = dataset_spec(dataset).read_dataset(raw, decode=False)
    out = prepared_dir(root, dataset)
    splits.prepare(table, out, p.prepare.fractions, p.prepare.seed)
    counts = splits.load_prepared(out).splits.groupby("split")["label"].agg(["size", "sum"])
    summary = ", ".join(f"{s} {int(counts.loc[s, 'size'])} ({int(counts.loc[s, 'sum'])} positive)"
                        for s in SPLITS if s in counts.index)
    size = p.train.recipe(dataset).image_size
    npy, _ = write_image_cache(root, dataset, size)
    typer.echo(f"prepare: {dataset}: {summary} -> {out.relative_to(root)} "
               f"(images cached at {size} px in {npy.name})")


if __name__ == "__main__":
    run(app)
