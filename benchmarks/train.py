"""Training throughput and data loading, every ratio against a baseline measured in the same run.

    python benchmarks/train.py [--arch resnet34] [--size 64] [--images 96] [--batch 16] [--repeats 3]
                               [--device cuda] [--no-mlflow] [--precision-archs resnet34,...]
                               [--jpegs 1000] [--jpeg-size 2000] [--cache-size 600]
                               [--skip loop,augment,precision,load]

Four parts:

1. ``loop``: the `train` stage's loop against a bare PyTorch loop. Same model (fresh copies of
   one initialisation), batch size, images and number of steps. The bare loop is the floor:
   tensors already augmented (once, with the paper's augmentation) and normalised on the
   device, a fixed permutation, SGD steps, nothing else. The stage's loop is
   :func:`xiqa.training.loop.train` as the stage runs it with ``augment: true``: uint8 cache →
   batched augmentation on the device → normalisation, the rich progress bar, a validation pass
   per epoch, and every epoch's metrics logged to a real (temporary) sqlite MLflow store through
   the same callback as the stage. Runs alternate (bare, stage, bare, ...) so that load from
   other processes hits both alike; medians are reported. ``stage/bare`` ≥ 0.9 is the target.
2. ``augment``: seconds to augment one batch (``--aug-batch`` images of ``--aug-size`` px) with
   :func:`xiqa.data.transforms.augment` (one batched call), with torchvision v2 image by image
   (the previous per-sample path) and with ``kornia.augmentation`` (same kinds and strengths;
   skipped when kornia is not installed).
3. ``precision``: images/second of bare training steps per architecture (``--precision-archs``,
   at ``--size``) in fp32 and under bf16 autocast (and fp16 on CUDA), each with the default
   (NCHW) and channels_last layout, alternating, median of ``--repeats``; ratios to fp32 NCHW.
4. ``load``: what a training / evaluation process pays to get a split's images. ``decode``: every
   scan decoded and resized in the process (what ``load_split`` did before the cache, and what
   `prepare` now does once); ``mapped``: ``load_split`` mapping the cache and reading every byte
   (page cache warm: the cache was just written; a cold disk adds its read time). Scans are
   ``--jpegs`` synthetic grayscale JPEGs of ``--jpeg-size`` px (quality 95; a smooth gradient
   with noise, i.e. the size and entropy of a chest film), cached at ``--cache-size`` px.

``--no-mlflow`` drops the MLflow logging from the stage loop (for a machine without MLflow).
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._cli import machine_name


def _split(n: int, size: int, seed: int):
    from xiqa.data.dataset import Split

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 2
    return Split("bench", "train", size, images, labels, tuple(f"{i}" for i in range(n)),
                 torch.full((n, 2), size))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int,
              lr: float, amp: torch.dtype | None = None, channels_last: bool = False) -> float:
    """Seconds for ``epochs`` passes of plain SGD steps over in-memory float tensors on their
    device (``amp``: autocast dtype; ``channels_last``: NHWC model and inputs; CUDA work is
    synchronised before the clock stops)."""
    from xiqa.training.loop import amp_tools, optimiser_step

    dev = x.device
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    model.to(dev, memory_format=layout).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    autocast, scaler = amp_tools(amp, dev)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    _sync(dev)
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            idx = order[i:i + batch].to(dev)
            optimiser_step(model, loss_fn, opt, x[idx], y[idx], autocast, scaler)  # the stage's own step
    _sync(dev)
    return time.perf_counter() - start


def _keep_epoch(logs: list, to_mlflow: bool, log) -> None:
    """The stage loop's ``on_epoch``: keep the epoch's log, and log its metrics to the active MLflow run."""
    logs.append(log)
    if to_mlflow:
        import mlflow

        mlflow.log_metrics(log.metrics(), step=log.epoch)


def part_loop(args, dev: torch.device) -> None:
    """Images/s of the training stage's loop against a bare loop over pre-augmented tensors."""
    from xiqa.data.transforms import augment, standardise
    from xiqa.models import build
    from xiqa.params import Recipe
    from xiqa.training.loop import EpochLog, train

    if not args.no_mlflow:
        from xiqa.tracking.runs import tracked_run
    torch.manual_seed(0)
    init = build(args.arch)
    train_split, val_split = _split(args.images, args.size, 1), _split(args.val, args.size, 2)
    # the floor's inputs: augmented once (same operations), normalised, already on the device
    x = standardise(augment(train_split.images.to(dev), torch.Generator().manual_seed(0)))
    y = train_split.labels.to(dev)
    recipe = Recipe(image_size=args.size, epochs=args.epochs, batch_size=args.batch, lr=0.01,
                    step_size=None, pretrained=False, augment=True)
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

            run = nullcontext() if args.no_mlflow else tracked_run(root, "bench", "bench", recipe.model_dump(), {})
            with run:
                start = time.perf_counter()
                train(copy.deepcopy(init), train_split, val_split, recipe, seed=1, device=str(dev),
                      on_epoch=partial(_keep_epoch, logs, not args.no_mlflow), progress=True)
                _sync(dev)
                stage_total.append(total_images / (time.perf_counter() - start))
            # training-step throughput: images over the epochs' training time (before validation)
            stage_steps.append(total_images / sum(steps_images / log.images_per_second for log in logs))
    b, s, t = statistics.median(bare), statistics.median(stage_steps), statistics.median(stage_total)
    print(f"[loop] {args.arch} {args.size}px, batch {args.batch}, {args.images} images x {args.epochs} "
          f"epochs, augmentation on, {machine_name(dev)}, {args.repeats} alternating repeats (median)"
          + (", stage loop WITHOUT MLflow logging" if args.no_mlflow else ""))
    print(f"  bare loop over pre-augmented tensors on the device {b:8.1f} images/s")
    print(f"  stage loop, training steps                         {s:8.1f} images/s   ratio {s / b:.2f}  "
          "(target >= 0.90)")
    print(f"  stage loop, whole train()                          {t:8.1f} images/s   ratio {t / b:.2f}  "
          f"(+ a {args.val}-image validation pass{'' if args.no_mlflow else ' and MLflow logging'} per epoch)")


def part_precision(args, dev: torch.device) -> None:
    """Images/s of bare training steps per precision and memory layout, as a ratio to fp32 NCHW."""
    from xiqa.data.transforms import standardise
    from xiqa.models import build

    amps = {"fp32": None, "bf16": torch.bfloat16, **({"fp16": torch.float16} if dev.type == "cuda" else {})}
    split = _split(args.images, args.size, 1)
    x, y = standardise(split.images.to(dev)), split.labels.to(dev)
    print(f"[precision] bare training steps, {args.size}px, batch {args.batch}, {args.images} images, "
          f"{machine_name(dev)}, median of {args.repeats} alternating repeats; ratio to fp32 NCHW")
    for arch in args.precision_archs.split(","):
        torch.manual_seed(0)
        init = build(arch)
        rates: dict[tuple[str, bool], list[float]] = {(a, c): [] for a in amps for c in (False, True)}
        for key in rates:  # warm-up: oneDNN / cuDNN pick their kernels per layout and dtype
            bare_loop(copy.deepcopy(init), x[:args.batch * 2], y[:args.batch * 2], args.batch, 1,
                      0.01, amps[key[0]], key[1])
        for _ in range(args.repeats):
            for (name, cl), got in rates.items():
                got.append(len(x) / bare_loop(copy.deepcopy(init), x, y, args.batch, 1, 0.01,
                                              amps[name], cl))
        base = statistics.median(rates[("fp32", False)])
        cells = [f"{name}{' channels_last' if cl else ''} {statistics.median(v):.1f}/s "
                 f"({statistics.median(v) / base:.2f})" for (name, cl), v in rates.items()]
        print(f"  {arch:16s} " + ", ".join(cells))


def part_augment(args, dev: torch.device) -> None:
    """Seconds per augmented batch: ours (one batched call) vs torchvision v2 image by image (the
    old path) vs kornia.augmentation (if installed), same batch, median of ``--repeats``."""
    from xiqa.data.transforms import AFFINE, FLIP_P, JITTER, augment, augmentation

    images = _split(args.aug_batch, args.aug_size, 3).images.to(dev)
    per_image = augmentation()
    runs: dict[str, object] = {
        "batched (xiqa)": lambda g: augment(images, g),
        "torchvision v2 per image": lambda _g: torch.stack([per_image(im) for im in images]),
    }
    try:
        import kornia.augmentation as K

        kornia = K.AugmentationSequential(
            K.ColorJitter(brightness=JITTER["brightness"], contrast=JITTER["contrast"], p=1.0),
            K.RandomAffine(degrees=AFFINE["degrees"], translate=AFFINE["translate"],
                           scale=AFFINE["scale"], resample="nearest", p=1.0),
            K.RandomHorizontalFlip(p=FLIP_P)).to(dev)
        runs["kornia.augmentation"] = lambda _g: kornia(images.float().div(255.0))
    except ImportError:
        print("  (kornia not installed: its column is skipped)")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        fn(torch.Generator().manual_seed(0))  # type: ignore[operator]
    for r in range(args.repeats):
        for name, fn in runs.items():
            _sync(dev)
            start = time.perf_counter()
            fn(torch.Generator().manual_seed(r))  # type: ignore[operator]
            _sync(dev)
            times[name].append(time.perf_counter() - start)
    ours = statistics.median(times["batched (xiqa)"])
    print(f"[augment] one batch of {args.aug_batch} uint8 images {args.aug_size} px, {machine_name(dev)}, "
          f"median of {args.repeats}")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"  {name:26s} {m * 1e3:9.1f} ms/batch   {m / ours:6.1f}x ours")


def _write_jpegs(root: Path, n: int, size: int) -> None:
    """A prepared project with ``n`` synthetic ``size`` px JPEGs split 80/10/10."""
    import numpy as np

    from xiqa.data.images import write_jpeg

    raw, prepared = root / "data/raw/bench", root / "data/prepared/bench"
    (raw / "img").mkdir(parents=True)
    prepared.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 60 + 120 * np.exp(-(((xx - size / 2) / (0.35 * size)) ** 2 + ((yy - size / 2) / (0.45 * size)) ** 2))
    rows = []
    for i in range(n):
        img = (base + rng.normal(0, 12, (size, size))).clip(0, 255).astype(np.uint8)
        name = f"img/{i:05d}.jpg"
        write_jpeg(raw / name, img)
        split = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")
        rows.append((name, split))
    with open(prepared / "splits.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("image_id", "patient_id", "split", "label"))
        w.writerows((name, name, split, i % 2) for i, (name, split) in enumerate(rows))
    with open(prepared / "images.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("image_id", "path", "width", "height"))
        w.writerows((name, name, size, size) for name, _ in rows)


def part_load(args) -> None:
    """Seconds per image of the load path: JPEG decode, then the cached tensors."""
    from xiqa.data import dataset
    from xiqa.data.images import read_scan
    from xiqa.data.transforms import to_cached

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_jpegs(root, args.jpegs, args.jpeg_size)
        paths = sorted((root / "data/raw/bench/img").glob("*.jpg"))
        start = time.perf_counter()
        for p in paths:  # what every process did before the cache
            to_cached(read_scan(p), args.cache_size)
        decode = time.perf_counter() - start
        start = time.perf_counter()
        dataset.write_image_cache(root, "bench", args.cache_size)
        write = time.perf_counter() - start
        mapped = []
        for _ in range(args.repeats):
            dataset._load_split.cache_clear()
            start = time.perf_counter()
            total = 0
            for name in dataset.SPLITS:
                split = dataset.load_split(root, "bench", name, args.cache_size)
                total += int(split.images.sum(dtype=torch.int64) > 0)  # touch every byte
            mapped.append(time.perf_counter() - start)
        m = statistics.median(mapped)
        mib = args.jpegs * args.cache_size ** 2 / 2 ** 20
        print(f"[load] {args.jpegs} synthetic {args.jpeg_size} px JPEGs -> {args.cache_size} px uint8 "
              f"({mib:.0f} MiB cache), CPU, {torch.get_num_threads()} threads")
        print(f"  decode + resize in the process (before)   {decode:8.2f} s   {decode / args.jpegs * 1e3:7.1f} ms/scan")
        print(f"  prepare: write the cache once             {write:8.2f} s")
        print(f"  load_split x3, memory-mapped, every byte  {m:8.3f} s   decode/mapped {decode / m:.0f}x "
              f"(median of {args.repeats}; page cache warm)")


def main() -> None:
    """Parse the options and run the chosen parts."""
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
    ap.add_argument("--precision-archs", default="resnet34,resnet50,efficientnet_b0")
    ap.add_argument("--jpegs", type=int, default=1000)
    ap.add_argument("--jpeg-size", type=int, default=2000)
    ap.add_argument("--cache-size", type=int, default=600)
    ap.add_argument("--aug-batch", type=int, default=32)
    ap.add_argument("--aug-size", type=int, default=224)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: loop, augment, precision, load")
    args = ap.parse_args()
    from xiqa.training.loop import resolve_device

    dev = resolve_device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    if "loop" not in skip:
        part_loop(args, dev)
    if "augment" not in skip:
        part_augment(args, dev)
    if "precision" not in skip:
        part_precision(args, dev)
    if "load" not in skip:
        part_load(args)


if __name__ == "__main__":
    main()
