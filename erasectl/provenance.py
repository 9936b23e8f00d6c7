"""What every artifact records about how it was made."""

from __future__ import annotations

from importlib import metadata

import erasectl

_PACKAGES = ("torch", "diffusers", "transformers", "torchmetrics")


def versions() -> dict[str, str]:
    found = {"erasectl": erasectl.__version__}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
