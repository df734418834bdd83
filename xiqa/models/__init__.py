"""The study's architectures (``build``) and their saliency layer presets (``layers``)."""

from xiqa.models.zoo import ARCHS, ArchSpec, build, estimate_bn_statistics, head, layers, reset_head, spec

__all__ = ["ARCHS", "ArchSpec", "build", "estimate_bn_statistics", "head", "layers", "reset_head", "spec"]
