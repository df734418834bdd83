"""Stage `data`: write ``data/raw/<dataset>/`` in the dataset's real distribution format.

``data.<dataset>.source: phantom`` (the default) generates seeded phantoms into a temporary
folder and imports them with the same validation as real data; any other value is the path
(relative to the project root) of a real Object-CXR folder or LVOT manifest, which is
validated and copied in. Either way the output appears whole or not at all.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from pipelines._common import DATASET, params, run, stage_app
from xiqa.errors import XiqaError
from xiqa.paths import raw_dir
from xiqa.schema import Dataset

app = stage_app(__doc__.split("\n\n")[0])


@app.command()
def main(dataset: Dataset = DATASET,
         progress: bool = typer.Option(True, help="show progress bars")) -> None:
    """Generate phantoms or import a real dataset into data/raw/<dataset>/."""
    from xiqa.data.datasets import dataset_spec  # pandas, scipy: not for --help

    root, p = params()
    cfg = p.data.dataset(dataset)
    spec = dataset_spec(dataset)
    target = raw_dir(root, dataset)
    if cfg.source == "phantom":
        with tempfile.TemporaryDirectory(prefix="xiqa-phantom-") as tmp:
            spec.write_phantoms(Path(tmp), cfg, p.data.seed, progress)
            df = spec.import_dataset(tmp, target, progress=progress)
    else:
        source = Path(cfg.source).expanduser()
        source = source if source.is_absolute() else root / source
        if not source.exists():
            raise XiqaError(f"params.yaml: data.{dataset}.source: {source} does not exist")
        df = spec.import_dataset(source, target, progress=progress)
    for line in spec.problems(df):
        typer.echo(f"xiqa: warning: {line}", err=True)
    typer.echo(f"data: {dataset}: {len(df)} images ({int(df['label'].sum())} positive) "
               f"-> {target.relative_to(root)}")


if __name__ == "__main__":
    run(app)
