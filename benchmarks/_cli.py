"""The command-line pieces the benchmarks share: the ``--config ARCH:SIZE`` option, the device and
thread set-up, and the machine's name for each benchmark's header line."""

from __future__ import annotations

import argparse

import torch


def add_config_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--config ARCH:SIZE`` (repeatable), replacing a benchmark's default configurations."""
    parser.add_argument("--config", action="append", metavar="ARCH:SIZE",
                        help=f"replace the default configurations (repeatable), e.g. {example}")


def configs(parser: argparse.ArgumentParser, specs: list[str] | None,
            default: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """The ``--config`` values as (arch, size), or ``default`` when none was given; a value that is
    not ``ARCH:SIZE`` with a whole size is a parser error naming it."""
    if not specs:
        return list(default)
    out = []
    for spec in specs:
        arch, _, size = spec.partition(":")
        if not arch or not size.isdigit():
            parser.error(f"--config {spec!r}: expected ARCH:SIZE, e.g. resnet34:224")
        out.append((arch, int(size)))
    return out


def machine_name(device: str | torch.device) -> str:
    """The GPU's name, or ``CPU, <n> threads``: what a benchmark's numbers were measured on."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"CPU, {n} thread{'' if n == 1 else 's'}"


def set_up(parser: argparse.ArgumentParser, device: str, threads: int | None) -> str:
    """Set torch's CPU threads (0 or None keeps torch's default), refuse ``--device cuda`` without a
    CUDA device, and return :func:`machine_name`."""
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    return machine_name(device)
