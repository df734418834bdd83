# The README's two commands. Both create .venv once (scripts/bootstrap.sh) and reuse it after.
VENV := $(CURDIR)/.venv/bin
export PATH := $(VENV):$(PATH)

.PHONY: study test

study:  ## install, then rebuild the whole study on the embedded phantoms
	bash scripts/bootstrap.sh
	dvc repro

test:  ## install with the test extras, check the import layers, lint, find dead code and type-check, then run the test suite
	bash scripts/bootstrap.sh test
	lint-imports
	ruff check xiqa pipelines benchmarks scripts
	vulture xiqa pipelines benchmarks scripts vulture_whitelist.py --min-confidence 60
	mypy xiqa pipelines
	python -m pytest -n 2 --dist loadfile -q
