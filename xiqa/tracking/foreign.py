"""Load a PyTorch classifier that someone logged with plain ``mlflow.pytorch.log_model`` (issue 26).

MLflow 3 writes a PyTorch model in one of two formats (the ``pytorch`` flavour's ``data`` folder):

- ``pickle`` (``data/model.pth``): the whole ``nn.Module``, loaded by MLflow's own loader
  (:func:`mlflow.pytorch.load_model`), as :func:`xiqa.tracking.lookup.load_model` loads xiqa's
  versions; only a version of the registry the user named is ever unpickled;
- ``pt2``, MLflow 3's default (``data/model.pt2``): a ``torch.export`` program. MLflow's loader
  returns it flat (one graph: module hooks never fire, SPEC 10), so it is loaded here with
  :func:`torch.export.load` after MLflow's own check that the archive holds no pickle, and its
  module hierarchy is restored with :func:`torch.export.unflatten`, so layers have their names
  (``layer4``, ``features.8``) and forward hooks fire. Its activations are graph operations,
  not ``nn.ReLU`` modules, so Guided Backprop cannot run on it (xiqa says so in one sentence);
  its input shape is what it was exported with (static dimensions stay fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xiqa.errors import XiqaError

if TYPE_CHECKING:
    from torch import nn

PICKLE, PT2 = "pickle", "pt2"


@dataclass
class LoadedModel:
    """A logged model ready for saliency: ``module`` in eval mode, its serialisation ``format``
    and, for ``pt2``, the exported input shape (``None`` for a dynamic dimension)."""

    module: nn.Module
    format: str
    input_shape: tuple[int | None, ...] | None = None


def _pt2_input_shape(program) -> tuple[int | None, ...] | None:
    """Shape of the exported program's one tensor input (a dynamic dimension as ``None``)."""
    import torch

    users = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                return tuple(d if isinstance(d, int) else None for d in val.shape)
    return None


def load_logged_model(model_uri: str, device: str = "cpu") -> LoadedModel:
    """The PyTorch model at ``model_uri`` (``models:/NAME/VERSION``), in either MLflow format
    (module doc), on ``device`` in eval mode. A model of another flavour, or one that cannot be
    read, is a :class:`XiqaError` naming the URI."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        flavors = Model.load(str(local / "MLmodel")).flavors
    except (MlflowException, OSError) as err:
        raise XiqaError(f"{model_uri}: cannot read the logged model ({type(err).__name__}: {err})") from None
    if "pytorch" not in flavors:
        raise XiqaError(f"{model_uri}: not a PyTorch model (flavours: {', '.join(sorted(flavors))})")
    data = local / flavors["pytorch"].get("model_data", "data")
    exported = data / "model.pt2"
    try:
        if not exported.is_file():
            module = mlflow.pytorch.load_model(str(local), map_location=device)
            if not isinstance(module, torch.nn.Module):
                raise XiqaError(f"{model_uri}: the logged object is a {type(module).__name__}, not an nn.Module")
            return LoadedModel(module.to(device).eval(), PICKLE)
        check = getattr(mlflow.pytorch, "_validate_pt2_archive_is_pickle_free", None)
        if check is not None:
            check(str(exported))
        program = torch.export.load(str(exported))
        shape = _pt2_input_shape(program)
        module = torch.export.unflatten(program)
    except (MlflowException, OSError, RuntimeError, ImportError, ValueError) as err:
        raise XiqaError(f"{model_uri}: cannot load the model ({type(err).__name__}: {err})") from None
    return LoadedModel(module.to(device).eval(), PT2, shape)
