"""The DVC stages: one thin Typer module per stage of dvc.yaml."""
