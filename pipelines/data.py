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

from pipelines._common import params, run, stage_app
from xiqa.data import lvot, objectcxr, phantoms
from xiqa.errors import XiqaError
from xiqa.paths import raw_dir

app = stage_app(__doc__.split("\n\n")[0])


@app.command()
def main(dataset: str = typer.Option(..., help="objectcxr or lvot"),
         progress: bool = typer.Option(True, help="show progress bars")) -> None:
    """Generate phantoms or import a real dataset into data/raw/<dataset>/."""
    root, p = params()
    if dataset not in ("objectcxr", "lvot"):
        raise XiqaError(f"--dataset must be objectcxr or lvot, got {dataset!r}")
    cfg = p.data.dataset(dataset)
    module = objectcxr if dataset == "objectcxr" else lvot
    target = raw_dir(root, dataset)
    if cfg.source == "phantom":
        with tempfile.TemporaryDirectory(prefix="xiqa-phantom-") as tmp:
            if dataset == "objectcxr":
                phantoms.write_objectcxr(tmp, cfg.n_images, cfg.min_size, cfg.max_size,
                                         p.data.seed, progress=progress)
            else:
                phantoms.write_lvot(tmp, cfg.n_patients, cfg.slices_per_patient, cfg.size,
                                    p.data.seed, progress=progress)
            df = module.import_dataset(tmp, target, progress=progress)
    else:
        source = Path(cfg.source).expanduser()
        source = source if source.is_absolute() else root / source
        if not source.exists():
            raise XiqaError(f"params.yaml: data.{dataset}.source: {source} does not exist")
        df = module.import_dataset(source, target, progress=progress)
    if dataset == "lvot":
        for line in lvot.problems(df):
            typer.echo(f"xiqa: warning: {line}", err=True)
    typer.echo(f"data: {dataset}: {len(df)} images ({int(df['label'].sum())} positive) "
               f"-> {target.relative_to(root)}")


if __name__ == "__main__":
    run(app)
