"""Saliency engine: speed and memory against named baselines, every ratio measured in one run.

    python benchmarks/saliency.py [--device cuda] [--batch 8] [--repeats N] [--no-memory]

For ResNet-34 and EfficientNet-B0 at 224 px and ResNet-34 at 600 px (batch 8) it prints

- ``ours``: seconds per image for all ten methods together (``xiqa.saliency.explain``);
- ``bare``: one forward + two input-gradient backward passes of the same model, nothing else
  (the floor for any method set that needs a plain and a guided gradient), and ours / bare;
- ``library``: what a user of existing libraries would run: Captum once per method
  (LayerGradCam, GuidedBackprop, GuidedGradCam, InputXGradient) plus NormGrad by hooks, one
  forward + backward per layer per VIL (single and multi), and library / ours, both measured on
  the library batch so that batch-size efficiency does not favour either.

and, on one image at 224 px, the peak memory of NormGrad conv3x3 multi from captured tensors: the
closed form against an explicit outer-product implementation (one layer at a time). On CUDA this
is ``torch.cuda.max_memory_allocated`` above the tensors already held; on CPU it is the growth of
the peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) of a fresh
process that has loaded the captured tensors, so allocator caching cannot hide anything.

Times are the minimum over ``--repeats`` runs after a warm-up (the minimum is the least disturbed
by other processes on a shared machine). On CPU the library baseline runs on ``--library-batch``
images (default 2) to keep the run to minutes; ours is timed again on that batch for its ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._cli import add_config_option, configs, set_up
from xiqa.models import build, estimate_bn_statistics, layers
from xiqa.models.zoo import get_module
from xiqa.saliency import METHODS, capture, explain
from xiqa.saliency import methods as M

CONFIGS = (("resnet34", 224), ("efficientnet_b0", 224), ("resnet34", 600))


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` in seconds."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def bare(model, x, target) -> None:
    """One forward and two input-gradient backward passes: the floor."""
    xr = x.detach().requires_grad_(True)
    score = model(xr).gather(1, target[:, None]).sum()
    torch.autograd.grad(score, [xr], retain_graph=True)
    torch.autograd.grad(score, [xr])


def hooked_normgrad(model, x, target, name: str, vil: str):
    """NormGrad at one layer for one VIL the way a hook-based script computes it: one forward,
    one backward, per layer per VIL."""
    module = get_module(model, name)
    kept = {}
    if name.endswith(":input"):
        handle = module.register_forward_pre_hook(lambda _m, a: kept.__setitem__("a", a[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _a, o: kept.__setitem__("a", o))
    try:
        score = model(x.detach().requires_grad_(True)).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score, [kept["a"]])
    return M.normalise(M.upsample(M.VILS[vil](kept["a"].detach(), grad), x.shape[-2:]))


def library(model, arch: str, x, target) -> None:
    """Captum once per method plus NormGrad by hooks per layer per VIL."""
    from captum.attr import GuidedBackprop, GuidedGradCam, InputXGradient, LayerAttribution, LayerGradCam

    preset = layers(arch)
    name = preset["gradcam"][0]
    layer = get_module(model, name)
    on_input = name.endswith(":input")
    size = x.shape[-2:]
    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True,
                                               attribute_to_layer_input=on_input)
    M.normalise(LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")[:, 0])
    M.normalise(GuidedBackprop(model).attribute(x, target=target).abs().sum(1))
    M.normalise(GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="bilinear",
                                                      attribute_to_layer_input=on_input).abs().sum(1))
    M.normalise(InputXGradient(model).attribute(x, target=target).abs().sum(1))
    for vil in M.VILS:
        hooked_normgrad(model, x, target, preset["single"][0], vil)
        M.combine_layers([hooked_normgrad(model, x, target, n, vil) for n in preset["multi"]])


# --------------------------------------------------------------------------- memory
def conv3x3_multi(acts: dict, grads: dict, names, size, explicit: bool) -> torch.Tensor:
    """NormGrad conv3x3 multi from captured tensors, closed form or explicit outer products."""
    def layer_map(name):
        A, G = acts[name], grads[name]
        if not explicit:
            return M.normgrad_conv3x3(A, G)
        n, c, h, w = A.shape
        patches = torch.nn.functional.unfold(A, 3, padding=1)  # [N, 9C, hw]
        outer = torch.einsum("ncp,nkp->npck", G.reshape(n, G.shape[1], h * w), patches)  # [N, hw, C, 9C]
        return torch.linalg.vector_norm(outer.flatten(2), dim=2).reshape(n, h, w)

    return M.combine_layers(M.normalise(M.upsample(layer_map(n), size)) for n in names)[0]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(path: str, explicit: bool) -> None:
    """Run in a fresh process: peak RSS growth (MiB) of conv3x3 multi over the loaded tensors."""
    torch.set_num_threads(1)
    saved = torch.load(path, weights_only=True)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kb("VmRSS")
    conv3x3_multi(saved["acts"], saved["grads"], saved["names"], saved["size"], explicit)
    print((_rss_kb("VmHWM") - before) / 1024)


def peak_memory_mib(model, arch: str, size: int, device: str, explicit: bool) -> float:
    """Peak memory (MiB) of NormGrad conv3x3 multi on one image, closed form or ``explicit`` outer products."""
    x = torch.randn(1, 3, size, size, device=device)
    names = list(layers(arch)["multi"])
    cap = capture(model, x, names)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        conv3x3_multi(cap.activations, cap.gradients, names, (size, size), explicit)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "captured.pt")
        torch.save({"acts": cap.activations, "grads": cap.gradients, "names": names, "size": [size, size]}, path)
        out = subprocess.run([sys.executable, __file__, "--_memory-child", path, str(int(explicit))],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main
def main() -> None:
    """Parse the options and print the speed and memory tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--library-batch", type=int, default=None,
                        help="images for the library baseline (default: --batch on CUDA, 2 on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5 on CUDA, 2 on CPU")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is steadiest on a shared machine")
    parser.add_argument("--no-memory", action="store_true")
    add_config_option(parser, "resnet50:224")
    parser.add_argument("--_memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        memory_child(args._memory_child[0], bool(int(args._memory_child[1])))
        return
    warnings.simplefilter("ignore")  # Captum warns about its hooks on every call
    device = args.device
    name = set_up(parser, device, args.threads)
    lib_batch = args.library_batch or (args.batch if device == "cuda" else 2)
    print(f"# saliency benchmark on {name}; torch {torch.__version__}; batch {args.batch}, "
          f"library baseline batch {lib_batch}; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'model':<22}{'ours s/img':>11}{'bare s/img':>11}{'ours/bare':>10}"
          f"{'| at batch':>10}{'library s/img':>14}{'ours s/img':>11}{'library/ours':>13}")
    grid = configs(parser, args.config, CONFIGS)
    for arch, size in grid:
        torch.manual_seed(0)
        model = build(arch)
        estimate_bn_statistics(model, [torch.randn(2, 3, 64, 64) for _ in range(2)])  # SPEC 10
        model.to(device)
        repeats = args.repeats or (5 if device == "cuda" else 2)
        x = torch.randn(args.batch, 3, size, size, device=device)
        with torch.no_grad():
            target = model(x).argmax(1)
        xl, tl = x[:lib_batch], target[:lib_batch]
        # warm up each path once on a small batch (allocator, kernel selection)
        explain(model, x[:1], arch=arch)
        bare(model, x[:1], target[:1])
        ours_t = bare_t = float("inf")
        for _ in range(repeats):  # interleaved so that load from other processes hits both alike
            ours_t = min(ours_t, best_time(partial(explain, model, x, METHODS, arch=arch), device, 1))
            bare_t = min(bare_t, best_time(partial(bare, model, x, target), device, 1))
        # the library baseline and ours again, both on the library batch (same batch efficiency)
        lib_t = best_time(partial(library, model, arch, xl, tl), device, max(1, repeats - 1))
        small_t = best_time(partial(explain, model, xl, METHODS, arch=arch), device, repeats)
        ours, bare_i = ours_t / args.batch, bare_t / args.batch
        lib, small = lib_t / lib_batch, small_t / lib_batch
        label = f"{arch} @ {size}"
        print(f"{label:<22}{ours:>11.4f}{bare_i:>11.4f}{ours / bare_i:>10.2f}"
              f"{lib_batch:>10d}{lib:>14.4f}{small:>11.4f}{lib / small:>13.1f}", flush=True)
        del model, x
    if not args.no_memory:
        what = "CUDA max_memory_allocated" if device == "cuda" else "peak RSS growth of a fresh process"
        print(f"\n# peak memory of NormGrad conv3x3 multi on one image ({what}), MiB")
        print(f"{'model':<22}{'closed form':>12}{'outer products':>16}{'ratio':>8}")
        for arch, size in grid:
            if size > 300:
                continue  # the explicit version needs several GiB per layer at 600 px
            torch.manual_seed(0)
            model = estimate_bn_statistics(build(arch), [torch.randn(2, 3, 64, 64) for _ in range(2)]).to(device)
            ours_m = peak_memory_mib(model, arch, size, device, explicit=False)
            explicit_m = peak_memory_mib(model, arch, size, device, explicit=True)
            ratio = explicit_m / max(ours_m, 1e-9)
            print(f"{arch + ' @ ' + str(size):<22}{ours_m:>12.1f}{explicit_m:>16.1f}{ratio:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
