"""The diffusion-transformer families, one module each (see ``erasectl.families.base``), found by
the class name of a pipeline's denoiser."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from erasectl.families.base import GUIDANCE_KINDS, TransformerFamily

__all__ = ["GUIDANCE_KINDS", "TransformerFamily", "by_denoiser_class", "of"]


@cache
def by_denoiser_class() -> dict[str, TransformerFamily]:
    """Every family module's ``FAMILY``, by its denoiser's class name."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            family = importlib.import_module(f"{__name__}.{module.name}").FAMILY
            found[family.denoiser_class] = family
    return found


def of(denoiser) -> TransformerFamily | None:
    """The family of a denoising network, or None for a UNet."""
    classes = by_denoiser_class()  # by the class or a base (FSDP2 subclasses a sharded module's class)
    return next((classes[k.__name__] for k in type(denoiser).__mro__ if k.__name__ in classes), None)
