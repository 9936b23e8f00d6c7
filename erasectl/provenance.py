"""What every artifact records about how it was made (library versions), and the libraries kept quiet."""

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


def quiet_libraries() -> None:
    """Loading bars and notices of diffusers and transformers would break our one-line contract."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
