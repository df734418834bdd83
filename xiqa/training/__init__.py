"""Training: the loop (loop.py, no MLflow inside) and its metrics (metrics.py)."""
