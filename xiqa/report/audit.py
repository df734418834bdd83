"""``xiqa explain``'s input and output around :func:`xiqa.evaluation.scan.explain_scan`: the
``--boxes`` text, the registered model, and the overlay figure (the same drawing the report's
figures use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xiqa.errors import XiqaError

if TYPE_CHECKING:
    from xiqa.evaluation.scan import ScanResult


def parse_boxes(text: str | None) -> np.ndarray:
    """``"x0,y0,x1,y1;x0,y0,x1,y1"`` (inclusive, the scan's pixels) → float ``[B, 4]``.

    Spaces and a trailing ``;`` are allowed; anything else malformed is a :class:`XiqaError`
    quoting the box."""
    if text is None or not text.strip():
        return np.zeros((0, 4))
    out = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        try:
            values = [float(v) for v in part.replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise XiqaError(f"--boxes: {part!r} is not four numbers x0,y0,x1,y1")
        x0, y0, x1, y1 = values
        if x1 < x0 or y1 < y0 or min(values) < 0:
            raise XiqaError(f"--boxes: {part!r} needs 0 <= x0 <= x1 and 0 <= y0 <= y1")
        out.append(values)
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def audit_figure(result: ScanResult, maps: dict[str, np.ndarray], image: np.ndarray, boxes: np.ndarray,
                 title: str = ""):
    """One row: the scan with its boxes, then each method's overlay (peak cross, hit colour)."""
    from xiqa import schema as S
    from xiqa.report.figures import Panel, overlay_grid

    panels = [Panel(image, None, boxes)]
    for v in result.verdicts:
        panels.append(Panel(image, maps[v.method], boxes, v.peak, v.hit))
    columns = ["scan"] + [S.method_label(v.method) for v in result.verdicts]
    label = f"class {result.predicted} p={result.probability:.2f}"
    return overlay_grid([(label, panels)], columns, title)


def load_registered(ref: str, device: str = "cpu"):
    """``(model, arch, image_size, version)`` of a registry reference ``NAME@ALIAS`` /
    ``NAME/VERSION``; the arch and input size come from the version's tags."""
    import mlflow

    from xiqa.tracking import lookup

    client = mlflow.MlflowClient()
    mv = lookup.model_version(client, ref)
    arch = mv.tags.get("arch")
    size = mv.tags.get("image_size")
    if not arch or not size:
        raise XiqaError(f"model {ref!r} (version {mv.version}) lacks the 'arch' / 'image_size' tags "
                        "that xiqa registers; it was not registered by xiqa")
    model = lookup.load_model(f"models:/{mv.name}/{mv.version}", device)
    return model, arch, int(size), mv
