"""``xiqa explain``: one scan through one registered model, for an audit.

Reads the scan (PNG/JPEG/NPY/DICOM, :func:`xiqa.data.images.read_scan`), preprocesses it exactly
as evaluation does (:func:`xiqa.data.transforms.preprocess`), predicts and explains the predicted
class with the requested methods in one forward pass, smooths the maps (as the study's
comparisons do; optional) and, given boxes in the scan's own pixels, plays the Pointing Game. The overlay is the
same drawing the report's figures use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from xiqa.errors import XiqaError
from xiqa.schema import SMOOTH_KERNEL, SMOOTH_SIGMA


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


@dataclass
class MethodVerdict:
    """One method's map of the audited scan: its peak and, given boxes, hit or miss."""
    method: str
    peak: tuple[int, int]  # (x, y) in input pixels
    peak_original: tuple[int, int]  # (x, y) in the scan's pixels (centre of the input pixel)
    hit: bool | None  # None: no boxes given
    constant: bool


@dataclass
class AuditResult:
    """The prediction for one audited scan and every method's verdict."""
    predicted: int
    probability: float  # of the predicted class
    probability_positive: float  # of class 1, the quality problem
    image_size: int
    original_size: tuple[int, int]  # (width, height)
    tolerance: float  # Pointing Game τ in input pixels
    verdicts: list[MethodVerdict] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The result as the lines ``xiqa explain`` prints."""
        verdict = "problem present" if self.predicted == 1 else "no problem"
        out = [f"prediction: class {self.predicted} ({verdict}), probability {self.probability:.3f} "
               f"(class 1: {self.probability_positive:.3f})"]
        for v in self.verdicts:
            tail = "" if v.hit is None else ("  hit" if v.hit else "  miss")
            flag = "  (constant map)" if v.constant else ""
            out.append(f"{v.method:<26} peak x={v.peak_original[0]} y={v.peak_original[1]} "
                       f"(input {v.peak[0]},{v.peak[1]}){tail}{flag}")
        return out


def audit_scan(model: torch.nn.Module, arch: str, gray: np.ndarray, image_size: int,
               boxes: np.ndarray | None = None, methods: Sequence[str] | None = None, *,
               tolerance: float, smooth: bool = True, layers: Mapping[str, Sequence[str]] | None = None,
               smooth_sigma: float = SMOOTH_SIGMA, smooth_kernel: int = SMOOTH_KERNEL,
               ) -> tuple[AuditResult, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Predict and explain one 2-D scan; ``tolerance`` is τ in input pixels, ``smooth_sigma`` and
    ``smooth_kernel`` (input pixels) the smoothing (``evaluate.smooth_*`` in params.yaml). Returns
    ``(AuditResult, maps {method: float32 [S, S]}, uint8 input [S, S], boxes in input pixels
    float64 [B, 4])``."""
    from xiqa import saliency
    from xiqa.data.transforms import preprocess
    from xiqa.evaluation import pointing_game as pg

    methods = list(saliency.check_methods(methods))
    h, w = gray.shape
    cached, inputs = preprocess(gray, image_size)  # uint8 [1, S, S], float32 [3, S, S]
    model.eval()
    device = next(model.parameters()).device  # explain on the model's device, score on the CPU
    info: dict[str, torch.Tensor] = {}
    maps = saliency.explain(model, inputs[None].to(device), methods, arch=arch, layers=layers, info=info)
    probs = torch.softmax(info["logits"].float(), dim=1)[0].cpu()
    predicted = int(info["target"][0])  # the arg-max class, the one explained
    maps = {m: v.detach().float().cpu() for m, v in maps.items()}
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    in_boxes = pg.scale_boxes(torch.as_tensor(boxes), (w, h), (image_size, image_size)) if len(boxes) else \
        torch.zeros((0, 4), dtype=torch.long)
    result = AuditResult(predicted, float(probs[predicted]), float(probs[1]) if len(probs) > 1 else float("nan"),
                         image_size, (w, h), float(tolerance))
    out_maps = {}
    for m in methods:
        mp = maps[m].detach().float()
        if smooth:
            mp = saliency.smooth(mp, smooth_sigma, smooth_kernel)
        out_maps[m] = mp[0].numpy()
        peak = pg.peaks(mp)[0].tolist()
        hit = None
        if len(boxes):
            hit = bool(pg.hits(mp, [in_boxes], tolerance=tolerance)[0] == 1.0)
        orig = (int(min(w - 1, max(0, round((peak[0] + 0.5) * w / image_size - 0.5)))),
                int(min(h - 1, max(0, round((peak[1] + 0.5) * h / image_size - 0.5)))))
        result.verdicts.append(MethodVerdict(m, (int(peak[0]), int(peak[1])), orig, hit,
                                             bool(pg.is_constant(mp)[0])))
    return result, out_maps, cached[0].numpy(), in_boxes.numpy().astype(np.float64)


def audit_figure(result: AuditResult, maps: dict[str, np.ndarray], image: np.ndarray, boxes: np.ndarray,
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

    from xiqa.tracking import registry

    client = mlflow.MlflowClient()
    mv = registry.model_version(client, ref)
    arch = mv.tags.get("arch")
    size = mv.tags.get("image_size")
    if not arch or not size:
        raise XiqaError(f"model {ref!r} (version {mv.version}) lacks the 'arch' / 'image_size' tags "
                        "that xiqa registers; it was not registered by xiqa")
    model = registry.load_model(f"models:/{mv.name}/{mv.version}", device)
    return model, arch, int(size), mv
