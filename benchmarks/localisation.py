"""Localisation metrics and MPRT similarities: their cost against the explain call that made the maps.

    python benchmarks/localisation.py [--device cuda] [--batch 8] [--repeats N] [--threads 1]
                                      [--config resnet34:128 ...]

For each configuration (default ResNet-34 and EfficientNet-B0 at 128 and 224 px, batch 8) it
prints, all measured in one run on the same random model and images:

- ``explain``: seconds for one :func:`xiqa.saliency.explain` call, all ten methods, the batch;
- ``evaluate``: what ``evaluate`` does with that batch without the new metrics: explain, smooth
  the ten maps, Pointing Game (hits, peaks, constant maps) on raw and smoothed maps;
- ``metrics``: the four localisation metrics (:func:`xiqa.evaluation.localisation.scores`) of
  those ten methods' maps as ``evaluate`` scores them: the box masks built once, then one call
  per method, on the raw maps and on the smoothed ones (20 calls; smoothing itself is not
  counted, evaluate smooths anyway), over explain and over evaluate (the issue's budget: 10 %);
- ``stacked``: the same 20 map batches in one call (maps stacked along N, masks repeated);
- ``similarity``: Spearman + SSIM (:mod:`xiqa.evaluation.sanity`) of ten methods' maps against
  another set, i.e. the MPRT work per step besides its explain, and ``similarity / explain``.

Times are the minimum over ``--repeats`` runs after a warm-up. The default of one CPU thread is
the steadiest on a shared machine; the ratio moves with the thread count (explain parallelises
better than a sort), so quote it with its thread count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._cli import add_config_option, configs, set_up
from xiqa.evaluation import localisation as L
from xiqa.evaluation import pointing_game as pg
from xiqa.evaluation import sanity as S
from xiqa.models import build, estimate_bn_statistics
from xiqa.saliency import explain, smooth

CONFIGS = (("resnet34", 128), ("efficientnet_b0", 128), ("resnet34", 224), ("efficientnet_b0", 224))


def best_time(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` in seconds, after one warm-up call."""
    times = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def random_boxes(n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One or two boxes per image, 10-40 % of the side: the study's box sizes."""
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 3, (1,), generator=gen))
        wh = torch.randint(size // 10, 2 * size // 5, (k, 2), generator=gen)
        xy = (torch.rand(k, 2, generator=gen) * (size - wh)).long()
        out.append(torch.cat([xy, xy + wh - 1], 1))
    return out


def measure(arch: str, size: int, batch: int, repeats: int, device: str) -> tuple[float, ...]:
    """Seconds for explain, evaluate's work, the metrics per method, stacked, the similarities."""
    torch.manual_seed(0)
    model = estimate_bn_statistics(build(arch), [torch.randn(2, 3, 64, 64) for _ in range(2)]).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    boxes = random_boxes(batch, size, gen)
    maps: dict[str, torch.Tensor] = {}

    def run_explain() -> None:
        maps.update(explain(model, x, arch=arch))

    t_explain = best_time(run_explain, device, repeats)
    smoothed = {m: smooth(v) for m, v in maps.items()}
    in_boxes = [b.to(device) for b in boxes]

    def evaluate_work() -> None:
        """What evaluate does with one batch besides the new metrics: explain, smooth, point."""
        run_explain()
        for v in maps.values():
            for w in (v, smooth(v)):
                pg.hits(w, in_boxes, tolerance=15.0 * size / 224)
                pg.peaks(w)
                pg.is_constant(w)
    other = {m: v.flip(1) for m, v in maps.items()}  # any other set of maps of the same images

    def per_method() -> None:
        masks = L.box_masks(boxes, (size, size), device=device)
        for group in (maps, smoothed):
            for v in group.values():
                L.scores(v, masks)

    def stacked() -> None:
        masks = L.box_masks(boxes, (size, size), device=device)
        every = torch.cat([*maps.values(), *smoothed.values()])
        L.scores(every, masks.repeat(len(maps) * 2, 1, 1))

    def similarity() -> None:
        for m, v in maps.items():
            S.spearman(v, other[m])
            S.ssim(v, other[m])

    return (t_explain, best_time(evaluate_work, device, repeats), best_time(per_method, device, repeats),
            best_time(stacked, device, repeats), best_time(similarity, device, repeats))


def main() -> None:
    """Parse the options and print the timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    add_config_option(parser, "resnet34:600")
    args = parser.parse_args()
    device = args.device
    name = set_up(parser, device, args.threads)
    print(f"# localisation / MPRT similarity cost on {name}; torch {torch.__version__}; batch {args.batch}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'model':<22}{'explain s':>10}{'evaluate s':>11}{'metrics s':>10}{'/explain':>9}{'/evaluate':>10}"
          f"{'stacked s':>10}{'/explain':>9}{'similarity s':>13}{'/explain':>9}")
    for arch, size in configs(parser, args.config, CONFIGS):
        t_explain, t_eval, t_metrics, t_stacked, t_sim = measure(arch, size, args.batch, args.repeats, device)
        print(f"{arch + ' ' + str(size) + ' px':<22}{t_explain:>10.3f}{t_eval:>11.3f}{t_metrics:>10.3f}"
              f"{t_metrics / t_explain:>9.3f}{t_metrics / t_eval:>10.3f}{t_stacked:>10.3f}{t_stacked / t_explain:>9.3f}"
              f"{t_sim:>13.3f}{t_sim / t_explain:>9.3f}", flush=True)

if __name__ == "__main__":
    main()
