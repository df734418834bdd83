"""MLflow: the project's tracking store and the model registry.

- :mod:`~xiqa.tracking.store`       which store, created once, reached; its experiments
- :mod:`~xiqa.tracking.runs`        the life cycle of one run (FINISHED, FAILED, KILLED; complete)
- :mod:`~xiqa.tracking.owners`      who started a run, and reaping the runs of dead owners
- :mod:`~xiqa.tracking.provenance`  the project's git commit, as runs record it
- :mod:`~xiqa.tracking.registry`    registering models, their aliases and weights hash, the data's MD5
- :mod:`~xiqa.tracking.lookup`      looking registered models up, loading (weights verified), listing, pulling
- :mod:`~xiqa.tracking.foreign`     models logged by other tools, for the audit
"""
