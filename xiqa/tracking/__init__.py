"""MLflow: the project's tracking store (store.py) and the model registry (registry.py)."""
