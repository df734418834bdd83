"""The study's grid on a Ray cluster (SPEC 8): one Ray task per out-of-date cell of the matrix
stages ``train``, ``randomise``, ``evaluate`` and ``sanity``; DVC's run cache and the MLflow
tracking store are where the tasks meet. ``dvc repro`` stays the one-command path: nothing here
runs unless ``xiqa grid run`` is called, and Ray is imported only then.

The driver (:func:`~xiqa.grid.driver.run_grid`):

1. refuses uncommitted changes (every task clones the driver's commit), a project without a
   DVC remote, and, with a cluster address, the embedded sqlite store (other machines cannot
   write to it);
2. runs the cells' upstream stages (``data@<ds>``, ``prepare@<ds>``) here and pushes their
   outputs and run cache to the remote;
3. asks ``dvc status`` which cells are out of date (a cell whose input cell is out of date is
   too);
4. submits one Ray task per such cell, with the tasks of its input cells as arguments, so that
   Ray starts a cell only once its inputs are in the remote; each reserves
   ``gpus_per_cell`` GPUs when ``device: cuda`` (Ray sets ``CUDA_VISIBLE_DEVICES``), else one
   CPU; a failed task, or one whose node died, is retried up to ``max_retries`` times;
5. pulls the run cache and runs ``dvc repro --pull``, which restores every cell from it
   without running it (checked) and runs what remains (``report``), so that ``dvc.lock`` has
   one writer and the result is the study a sequential ``dvc repro`` gives.

A task (:func:`~xiqa.grid.node.run_cell`, on any node) clones the repository at the driver's commit into a
scratch folder, restores its input stages from the remote's run cache (never runs them: an
input that is not there is an error), runs ``dvc repro --pull --single-item <cell>`` with the
driver's ``MLFLOW_TRACKING_URI``, pushes the cell's outputs and the run cache, and deletes the
clone. Its commands run under a small supervisor that dies with the Ray worker and takes the
stage with it (SIGTERM, so that the stage's MLflow run ends KILLED and keeps no model version);
a stage killed harder than that (a machine lost) is marked KILLED by the retry, which knows
from Ray which nodes are gone (:mod:`xiqa.tracking.owners`, ``XIQA_NODES_GONE``) and which runs
an earlier attempt of its cell started (``XIQA_GRID_CELL``: one token per cell and grid run,
the same for each retry); a ``randomise`` cell killed after some of its seeds has those seeds'
runs marked KILLED and their versions deleted the same way, so each seed is registered once.

- :mod:`~xiqa.grid.plan`       the cells to run, from DVC's pipeline graph and ``dvc status``
- :mod:`~xiqa.grid.checks`     what the driver checks first: a clean commit, a DVC remote, a store
                               every task can reach
- :mod:`~xiqa.grid.node`       one cell on a node: clone, restore its inputs, repro, push
- :mod:`~xiqa.grid.supervise`  the supervisor every node command runs under
- :mod:`~xiqa.grid.driver`     the Ray driver: submit the tasks, show the live table, finish here
- ``python -m xiqa.grid``      what a task runs on its node (``supervise CMD...``, ``restore STAGE...``)
"""
