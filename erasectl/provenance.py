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


def weights_sha256(modules: dict) -> str:
    """sha256 over every tensor of ``modules`` ({name: torch module}), each with its name, dtype and
    shape, in name order: the same weights give the same hash however they were loaded."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for component, module in sorted(modules.items()):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{component}.{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy
    return digest.hexdigest()


def file_sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def pipeline_modules(pipeline) -> dict:
    """The pipeline's weighted components (denoiser, text encoders, VAE) by name."""
    import torch

    return {name: part for name, part in pipeline.components.items() if isinstance(part, torch.nn.Module)}
