"""Names vulture (``make test``) reports as unused but that are used where it cannot see.

Each entry is read by a framework, a file format, or the tests; a name that is really unused is
deleted instead of listed here. This file is only parsed by vulture, never imported.
"""

from typing import Any

from xiqa.cli import _root, audit, grid_run, models_list, models_pull
from xiqa.data.images import write_dicom
from xiqa.evaluation.pointing_game import MetricInfo
from xiqa.evaluation.stats import Summary
from xiqa.params import Params
from xiqa.report.readme import END, START, current_section
from xiqa.schema import ARCHS, RANDOM_CONDITIONS
from xiqa.training.runs import randomise_model, train_model

_: Any = None

# Typer calls its commands and the app callback
_root, audit, grid_run, models_list, models_pull  # noqa: B018

# pydantic reads ``model_config`` and calls the validators (xiqa/params.py)
Params.model_config  # noqa: B018
_._check_source  # noqa: B018
_._sizes_ordered  # noqa: B018
_._fractions_sum_to_one  # noqa: B018
_._archs_of_models  # noqa: B018
_._unique_seeds  # noqa: B018

# autograd calls torch.autograd.Function.forward (xiqa/saliency/capture.py)
_.forward  # noqa: B018

# torch reads the flag (xiqa/training/loop.py)
_.benchmark  # noqa: B018

# DICOM elements written by pydicom (xiqa/data/images.py write_dicom, which the tests use to make
# DICOM input)
write_dicom  # noqa: B018
_.file_meta, _.MediaStorageSOPClassUID, _.TransferSyntaxUID, _.SOPClassUID, _.SOPInstanceUID  # noqa: B018
_.SamplesPerPixel, _.BitsAllocated, _.BitsStored, _.HighBit, _.PixelRepresentation, _.PixelData  # noqa: B018

# the module-level __getattr__ is Python's lazy attribute hook (xiqa/models/__init__.py)
_.__getattr__  # noqa: B018

# fields and public names that the tests and docs read (tests/evaluation, tests/report, tests/training,
# tests/test_names.py)
MetricInfo.higher_is_better, MetricInfo.needs, MetricInfo.unit, Summary.n_seeds  # noqa: B018
START, END, current_section, ARCHS, RANDOM_CONDITIONS, randomise_model, train_model  # noqa: B018
