"""Erased-weight checkpoints: one ``.safetensors`` file with only the changed tensors.

Keys are diffusers state-dict names prefixed by their component (``unet.down_blocks...``,
``transformer.transformer_blocks...``). The
metadata carries the recipe (method, concepts, every hyper-parameter, versions, wall time), the
base model it was made from, and a fingerprint of the base tensors it replaces: applying it to
another base is refused rather than silently producing a different model.

A LoRA erasure (``--lora-rank``) stores its factors instead of weights: ``<module>.lora_down.weight``
(rank x in) and ``<module>.lora_up.weight`` (out x rank, the scale folded in); applying it writes
W0 + up @ down into ``<module>.weight``, and its fingerprint is of those W0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from erasectl.errors import UserError
from erasectl.files import write_atomically
from erasectl.provenance import versions

FORMAT = "erasectl.erased-weights"
FORMAT_VERSION = "1"
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")  # SD3's third and FLUX's second are T5
CHECKPOINT_FILE = "erased.safetensors"  # what `erasectl erase` writes in its run folder
LORA_DOWN, LORA_UP = ".lora_down.weight", ".lora_up.weight"


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file a user named: the file itself, or ``erase``'s run folder holding it."""
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        raise UserError(
            f"{path} is a folder without {CHECKPOINT_FILE}; pass the .safetensors file that `erasectl erase` wrote, or its run folder"
        )
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist; pass the .safetensors file that `erasectl erase` wrote, or its run folder"
        )
    return path


def checkpoint_name(path) -> str:
    """How grids and reports name an erased model: its run folder, or the file's stem."""
    path = Path(path)
    return path.parent.name if path.name == CHECKPOINT_FILE else path.stem


def lora_merged(w0: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """W0 + up @ down, formed in float32 and returned in W0's dtype and device."""
    return (w0.float() + up.to(w0.device).float() @ down.to(w0.device).float()).to(w0.dtype)


def is_clip(encoder) -> bool:
    return type(encoder).__name__.startswith("CLIP")


def key_name(component: str, name: str, encoder=None) -> str:
    """A parameter's name in checkpoints: the module's own, but for a CLIP text encoder the layout
    of released SD folders (transformers 4's): every tensor under ``text_model.``, the pooled
    projection as ``text_projection.``. transformers 5 names a ``CLIPTextModel``'s tensors without
    the prefix; one key for both keeps a checkpoint (and what is exported from it) readable by
    either and by kohya-style readers. ``encoder``: the module, when it may be T5 (its names stay)."""
    if component not in TEXT_ENCODERS or name.startswith(("text_model.", "text_projection.")):
        return name
    if encoder is not None and not is_clip(encoder):
        return name
    return f"text_model.{name}"


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes and float32 bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def component_tensors(pipeline, keys: list[str]) -> dict[str, torch.Tensor]:
    """The pipeline's current tensors for checkpoint ``keys`` (``component.name``)."""
    found = {}
    states = {}
    for key in keys:
        component, _, name = key.partition(".")
        if component not in COMPONENTS or getattr(pipeline, component, None) is None:
            raise UserError(
                f"checkpoint key {key!r} names no component of this pipeline; it was made for another model"
            )
        if component not in states:
            states[component] = {
                key_name(component, k, getattr(pipeline, component)): v
                for k, v in getattr(pipeline, component).state_dict().items()
            }
        if name not in states[component]:
            raise UserError(
                f"checkpoint key {key!r} is not a parameter of this pipeline's {component}; it was made for another model"
            )
        found[key] = states[component][name]
    return found


@torch.no_grad()
def assign_tensors(pipeline, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (checkpoint keys) into the pipeline's parameters, in place."""
    modules: dict[str, dict[str, torch.nn.Parameter]] = {}
    for key, tensor in tensors.items():
        component, _, name = key.partition(".")
        if component not in modules:
            module = getattr(pipeline, component)
            modules[component] = {key_name(component, n, module): p for n, p in module.named_parameters()}
        target = modules[component][name]
        target.copy_(tensor.to(target.dtype))


@dataclass
class ErasedCheckpoint:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    path: Path | None = None  # the file it was loaded from (``load`` resolves a run folder to it)

    @property
    def recipe(self) -> dict:
        return json.loads(self.metadata.get("erasectl.recipe", "{}"))

    @property
    def base_model(self) -> str:
        return self.metadata["erasectl.base_model"]

    @property
    def base_config(self) -> str | None:
        """The local config folder a single-file base was loaded with, if any."""
        return self.metadata.get("erasectl.base_model_config") or None

    def save(self, path: Path) -> Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.tensors.items()}
        return write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=self.metadata))

    @classmethod
    def load(cls, path: str | Path) -> ErasedCheckpoint:
        from safetensors import SafetensorError, safe_open

        path = checkpoint_file(path)
        if path.suffix in (".ckpt", ".pt", ".bin", ".pth", ".pkl"):
            raise UserError(
                f"{path} is a pickle file, which can run code when loaded; erasectl reads .safetensors checkpoints only"
            )
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise UserError(
                f"{path} is not a readable safetensors file ({error}); it may be truncated or corrupt"
            ) from None
        if metadata.get("erasectl.format") != FORMAT:
            raise UserError(f"{path} is a safetensors file but not an erasectl checkpoint (no erasectl metadata)")
        bad = [k for k in tensors if k.partition(".")[0] not in COMPONENTS]
        if bad or not tensors:
            raise UserError(
                f"{path} has unexpected keys ({', '.join(bad[:3]) or 'none at all'}); it is not an erasectl checkpoint"
            )
        return cls(tensors, metadata, path)

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """A LoRA checkpoint's ``(down, up)`` per weight key (``<component>.<module>.weight``); empty otherwise."""
        return {
            f"{key[: -len(LORA_DOWN)]}.weight": (tensor, self.tensors[f"{key[: -len(LORA_DOWN)]}{LORA_UP}"])
            for key, tensor in self.tensors.items()
            if key.endswith(LORA_DOWN)
        }

    def target_keys(self) -> list[str]:
        """The model's tensors this checkpoint replaces."""
        factors = self.lora_factors()
        plain = [k for k in self.tensors if not k.endswith((LORA_DOWN, LORA_UP))]
        return sorted([*plain, *factors])

    def weights(self, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The erased tensors by ``target_keys``, given the ``base`` ones (a LoRA's W0 + up @ down)."""
        found = {k: v for k, v in self.tensors.items() if not k.endswith((LORA_DOWN, LORA_UP))}
        for key, (down, up) in self.lora_factors().items():
            found[key] = lora_merged(base[key], down, up)
        return found

    def check(self, pipeline, check_base: bool = True) -> None:
        """Refuse a pipeline this checkpoint was not made from: missing keys, shapes, fingerprint."""
        base = component_tensors(pipeline, self.target_keys())
        shapes = {k: tuple(v.shape) for k, v in self.tensors.items() if not k.endswith((LORA_DOWN, LORA_UP))}
        shapes.update({k: (up.shape[0], down.shape[1]) for k, (down, up) in self.lora_factors().items()})
        for key, shape in shapes.items():
            if tuple(base[key].shape) != shape:
                raise UserError(
                    f"checkpoint tensor {key} has shape {shape}, the model's has {tuple(base[key].shape)}; it was made for another model"
                )
        if check_base and fingerprint(base) != self.metadata.get("erasectl.base_fingerprint"):
            raise UserError(
                f"this checkpoint was made from {self.base_model}, and the model given has different weights "
                "where it applies; pass the base it was made from with --model"
            )

    def apply(self, pipeline, check_base: bool = True) -> None:
        """Replace the pipeline's tensors by the erased ones, after checking the base matches."""
        self.check(pipeline, check_base)
        assign_tensors(pipeline, self.weights(component_tensors(pipeline, self.target_keys())))


def make_checkpoint(
    trained: dict[str, torch.Tensor],
    base_tensors: dict[str, torch.Tensor],
    recipe: dict,
    base_model: str,
    base_model_config: str = "",
) -> ErasedCheckpoint:
    """``base_model_config``: the config folder a single-file base model loads with."""
    metadata = {
        "erasectl.format": FORMAT,
        "erasectl.format_version": FORMAT_VERSION,
        "erasectl.base_model": base_model,
        "erasectl.base_fingerprint": fingerprint(base_tensors),
        "erasectl.base_model_config": base_model_config,
        "erasectl.method": recipe["method"],
        "erasectl.concepts": json.dumps(recipe["concepts"]),
        "erasectl.anchor": recipe.get("anchor") or "",
        "erasectl.steps": str(recipe["steps"]),
        "erasectl.wall_time_s": str(recipe["wall_time_s"]),
        "erasectl.recipe": json.dumps(recipe),
        "erasectl.versions": json.dumps(versions()),
    }
    return ErasedCheckpoint(dict(trained), metadata)


def model_loaders(base, base_name: str, checkpoints: list[ErasedCheckpoint]) -> list[tuple]:
    """``(name, load, info)`` for the base and each loaded checkpoint, named after the file it was
    read from. One pipeline serves them all: the base tensors are kept and swapped back in between
    models."""

    keys = sorted({key for erased in checkpoints for key in erased.target_keys()})
    originals = {k: v.clone() for k, v in component_tensors(base, keys).items()}

    def loader(tensors: dict | None):
        def load():
            assign_tensors(base, originals)
            if tensors:
                assign_tensors(base, tensors)
            return base

        return load

    models = [("base", loader(None), {"model": base_name})]
    for erased in checkpoints:
        models.append(
            (
                checkpoint_name(erased.path),
                loader(erased.weights(originals)),
                {"checkpoint": str(erased.path), "recipe": erased.recipe},
            )
        )
    return models
