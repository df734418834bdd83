"""The study's architectures (``build``) and their saliency layer presets (``layers``).

The names are loaded on first use (PEP 562), so that ``xiqa.models.weights`` can be imported
without torch: a ``randomise`` stage that finds no ImageNet weights skips without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ARCH_SPECS", "ArchSpec", "build", "estimate_bn_statistics", "head", "layers", "reset_head", "spec"]

if TYPE_CHECKING:
    from xiqa.models.zoo import ARCH_SPECS, ArchSpec, build, estimate_bn_statistics, head, layers, reset_head, spec


def __getattr__(name: str):
    if name in __all__:
        from xiqa.models import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'xiqa.models' has no attribute {name!r}")
