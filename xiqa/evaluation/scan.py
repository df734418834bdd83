"""``xiqa explain``'s science: one scan through one model, without MLflow.

:func:`explain_scan` preprocesses the scan exactly as evaluation does
(:func:`xiqa.data.transforms.preprocess`), then predicts, explains the predicted class, smooths
(optional) and plays the Pointing Game with the evaluate stage's scoring core
(:func:`xiqa.evaluation.scoring.score_batch`), given boxes in the scan's own pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from xiqa.schema import SMOOTH_KERNEL, SMOOTH_SIGMA


@dataclass
class MethodVerdict:
    """One method's map of the audited scan: its peak and, given boxes, hit or miss."""
    method: str
    peak: tuple[int, int]  # (x, y) in input pixels
    peak_original: tuple[int, int]  # (x, y) in the scan's pixels (centre of the input pixel)
    hit: bool | None  # None: no boxes given
    constant: bool


@dataclass
class ScanResult:
    """The prediction for one audited scan and every method's verdict."""
    predicted: int
    probability: float  # of the predicted class
    probability_positive: float  # of class 1, the quality problem
    image_size: int
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


def explain_scan(model: torch.nn.Module, arch: str, gray: np.ndarray, image_size: int,
                 boxes: np.ndarray | None = None, methods: Sequence[str] | None = None, *,
                 tolerance: float, smooth: bool = True, layers: Mapping[str, Sequence[str]] | None = None,
                 smooth_sigma: float = SMOOTH_SIGMA, smooth_kernel: int = SMOOTH_KERNEL,
                 ) -> tuple[ScanResult, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Predict and explain one 2-D scan; ``tolerance`` is τ in input pixels, ``smooth_sigma`` and
    ``smooth_kernel`` (input pixels) the smoothing (``evaluate.smooth_*`` in params.yaml). Returns
    ``(ScanResult, maps {method: float32 [S, S]}, uint8 input [S, S], boxes in input pixels
    float64 [B, 4])``."""
    from functools import partial

    from xiqa import saliency
    from xiqa.data.transforms import preprocess
    from xiqa.evaluation import pointing_game as pg
    from xiqa.evaluation.scoring import score_batch

    methods = list(saliency.check_methods(methods))
    h, w = gray.shape
    cached, inputs = preprocess(gray, image_size)  # uint8 [1, S, S], float32 [3, S, S]
    model.eval()
    device = next(model.parameters()).device  # explain on the model's device, score on the CPU
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    in_boxes = pg.scale_boxes(torch.as_tensor(boxes), (w, h), (image_size, image_size)) if len(boxes) else \
        torch.zeros((0, 4), dtype=torch.long)
    scored = score_batch(model, arch, inputs[None].to(device), [in_boxes], methods, tolerance=tolerance,
                         smoothing=(smooth,), layers=layers,
                         smooth=partial(saliency.smooth, sigma=smooth_sigma, kernel_size=smooth_kernel))
    probs = torch.softmax(scored.logits, dim=1)[0]
    predicted = int(scored.target[0])  # the arg-max class, the one explained
    result = ScanResult(predicted, float(probs[predicted]), float(probs[1]) if len(probs) > 1 else float("nan"),
                        image_size, float(tolerance))
    out_maps = {}
    for m in methods:
        out_maps[m] = scored.maps[smooth][m][0].numpy()
        peak = scored.peaks[smooth][m][0].tolist()
        hit = bool(scored.hits[smooth][m][0] == 1.0) if len(boxes) else None
        orig = (int(min(w - 1, max(0, round((peak[0] + 0.5) * w / image_size - 0.5)))),
                int(min(h - 1, max(0, round((peak[1] + 0.5) * h / image_size - 0.5)))))
        result.verdicts.append(MethodVerdict(m, (int(peak[0]), int(peak[1])), orig, hit,
                                             bool(scored.constant[smooth][m][0])))
    return result, out_maps, cached[0].numpy(), in_boxes.numpy().astype(np.float64)
