"""Training throughput: the `train` stage's loop against a bare PyTorch loop, in one run.

Same model (fresh copies of one initialisation), batch size, images and number of steps. The
bare loop is the floor: pre-normalised float tensors already in memory, a fixed permutation,
SGD steps, nothing else. The stage's loop is :func:`xiqa.training.loop.train` as the stage runs
it: uint8 cache → per-sample v2 augmentation → normalisation, the rich progress bar, a
validation pass per epoch, and every epoch's metrics logged to a real (temporary) sqlite MLflow
store through the same callback as the stage. Runs alternate (bare, stage, bare, stage, ...) so
that load from other processes hits both alike; the medians are reported.

    python benchmarks/train.py [--arch resnet34] [--size 64] [--images 96] [--batch 16] [--repeats 3]
                               [--device cuda] [--no-mlflow]

``--no-mlflow`` drops the MLflow logging from the stage loop (for a machine without MLflow, such
as a bare GPU box); the output says so.

Reports images/second of training steps (`stage/bare` ≥ 0.9 is the target: data loading,
augmentation and logging cost little) and the whole `train()` call including validation.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def _split(n: int, size: int, seed: int):
    from xiqa.data.dataset import Split

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 2
    return Split("bench", "train", size, images, labels, tuple(f"{i}" for i in range(n)),
                 torch.full((n, 2), size))


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
              lr: float) -> float:
    """Seconds for ``epochs`` passes of plain SGD steps over in-memory float tensors (on the
    tensors' device; CUDA work is synchronised before the clock stops)."""
    model.to(x.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet34")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--val", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-mlflow", action="store_true", help="do not log the stage loop's epochs to MLflow")
    args = ap.parse_args()
    from contextlib import nullcontext

    from xiqa.data.transforms import normalise
    from xiqa.models import build
    from xiqa.params import Recipe
    from xiqa.training.loop import EpochLog, resolve_device, train

    dev = resolve_device(args.device)
    if not args.no_mlflow:
        import mlflow

        from xiqa.tracking.store import tracked_run

    torch.manual_seed(0)
    init = build(args.arch)
    train_split, val_split = _split(args.images, args.size, 1), _split(args.val, args.size, 2)
    x, y = normalise(train_split.images).to(dev), train_split.labels.to(dev)
    recipe = Recipe(image_size=args.size, epochs=args.epochs, batch_size=args.batch, lr=0.01,
                    step_size=None, pretrained=False)
    # images per epoch: the stage drops a last batch of one (BatchNorm cannot train on it)
    steps_images = args.images - (1 if args.images % args.batch == 1 else 0)
    total_images = steps_images * args.epochs

    bare_loop(copy.deepcopy(init), x, y, args.batch, 1, 0.01)  # warm-up (allocator, oneDNN)
    bare, stage_steps, stage_total = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for _ in range(args.repeats):
            bare.append(total_images / bare_loop(copy.deepcopy(init), x, y, args.batch, args.epochs, 0.01))
            logs: list[EpochLog] = []

            def on_epoch(log: EpochLog) -> None:
                logs.append(log)
                if not args.no_mlflow:
                    mlflow.log_metrics(log.metrics(), step=log.epoch)

            run = nullcontext() if args.no_mlflow else tracked_run(root, "bench", "bench", recipe.model_dump(), {})
            with run:
                start = time.perf_counter()
                train(copy.deepcopy(init), train_split, val_split, recipe, seed=1, device=args.device,
                      on_epoch=on_epoch)
                stage_total.append(total_images / (time.perf_counter() - start))
            # training-step throughput: images over the epochs' training time (before validation)
            stage_steps.append(total_images / sum(steps_images / log.images_per_second for log in logs))
    b, s, t = statistics.median(bare), statistics.median(stage_steps), statistics.median(stage_total)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch} {args.size}px, batch {args.batch}, {args.images} images x {args.epochs} epochs, "
          f"{where}, {args.repeats} alternating repeats (median)"
          + (", stage loop WITHOUT MLflow logging" if args.no_mlflow else ""))
    print(f"  bare PyTorch loop            {b:8.1f} images/s")
    print(f"  stage loop, training steps   {s:8.1f} images/s   ratio {s / b:.2f}  (target >= 0.90)")
    print(f"  stage loop, whole train()    {t:8.1f} images/s   ratio {t / b:.2f}  "
          f"(+ a {args.val}-image validation pass{'' if args.no_mlflow else ' and MLflow logging'} per epoch)")


if __name__ == "__main__":
    main()
