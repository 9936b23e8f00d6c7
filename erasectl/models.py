"""Where models come from: the embedded shapes world by default, any diffusers SD pipeline otherwise."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erasectl.architecture import prompt_length
from erasectl.assets import EMBEDDED_MODELS, embedded_model, embedded_pipeline_dir
from erasectl.checkpoint import CHECKPOINT_FILE, ErasedCheckpoint, checkpoint_name
from erasectl.errors import UserError
from erasectl.profiles import profile_of
from erasectl.provenance import quiet_libraries

if TYPE_CHECKING:
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.profiles import PaperProfile

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def resolve_model(model: str | None) -> tuple[str, str | Path]:
    """``(name, source)``: a display name and what the loader receives (a folder, a single file or a hub id)."""
    embedded = embedded_model(model)
    if embedded is not None:
        folder = embedded_pipeline_dir(embedded)
        if not (folder / "model_index.json").exists():
            raise UserError(
                f"the embedded model {embedded} is missing from {folder}; reinstall erasectl or run `{EMBEDDED_MODELS[embedded][2]}`"
            )
        return EMBEDDED_MODELS[embedded][0], folder
    path = Path(model).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "model_index.json").exists():
            raise UserError(
                f"{path} is a folder but not a diffusers pipeline (no model_index.json); pass a pipeline folder"
            )
        if path.is_file() and path.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            raise UserError(
                f"{path} is neither a pipeline folder nor a single-file checkpoint (.safetensors); pass one of those"
            )
        return str(path), path
    if model.startswith((".", "/", "~")) or model.count("/") != 1 or model.endswith(".safetensors"):
        raise UserError(
            f"model path {model} does not exist; pass an existing pipeline folder, a .safetensors file or a hub id like org/name"
        )
    return model, model


@dataclass
class LoadedModel:
    """A loaded pipeline and what erasectl knows of it: the name reports and grids use, what the
    loader was given (``source``; ``model_config`` for a single file), its profile, and the erased
    checkpoint applied to it, if any."""

    pipeline: Any
    name: str
    source: str
    profile: PaperProfile
    model_config: str = ""
    checkpoint: ErasedCheckpoint | None = None


def load_model(
    model: str | None = None,
    device: str = "cpu",
    torch_dtype=None,
    allow_pickle: bool = False,
    config: str | Path | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> LoadedModel:
    """The pipeline ``load_pipeline`` loads, with its name, source and profile."""
    name, source = resolve_model(model)
    pipeline = load_pipeline(model, device, torch_dtype, allow_pickle, config, revision, variant)
    single_file = isinstance(source, Path) and source.is_file()
    return LoadedModel(
        pipeline, name, str(source), model_profile(model, config), str(Path(config).expanduser()) if single_file else ""
    )


def load_base(
    checkpoints: list[ErasedCheckpoint],
    model: str | None,
    model_config,
    drawing,
    device: str = "cpu",
    allow_pickle: bool = False,
    apply: bool = False,
) -> LoadedModel:
    """The model the checkpoints were erased from (or ``model``), checked against each of them and
    set up to draw as ``drawing`` (an ``erasectl.generation.Drawing``) says. With ``apply``, the one
    checkpoint is applied first (in fp32) and names the model."""

    name = model or (checkpoints[0].base_model if checkpoints else None)
    config = model_config or (checkpoints[0].base_config if checkpoints else None)
    loaded = load_model(name, device, None, allow_pickle, config, drawing.revision, drawing.variant)
    for erased in checkpoints:
        erased.check(loaded.pipeline)
    if apply:
        (erased,) = checkpoints
        erased.apply(loaded.pipeline)
        loaded = replace(loaded, name=checkpoint_name(erased.path), checkpoint=erased)
    inference_setup(loaded.pipeline, drawing.dtype, drawing.scheduler, device)
    return loaded


def load_erased_model(
    checkpoint_path,
    model: str | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
    config=None,
    revision: str | None = None,
    variant: str | None = None,
    loaded=None,
) -> LoadedModel:
    """The base named in the checkpoint (or ``model``), with the checkpoint applied; ``loaded``: the
    checkpoint at ``checkpoint_path`` if the caller has read it already."""

    checkpoint = loaded or ErasedCheckpoint.load(checkpoint_path)
    base = load_model(
        model or checkpoint.base_model,
        device=device,
        allow_pickle=allow_pickle,
        config=config or checkpoint.base_config,
        revision=revision,
        variant=variant,
    )
    checkpoint.apply(base.pipeline)
    return replace(base, name=checkpoint_name(checkpoint.path or checkpoint_path), checkpoint=checkpoint)


def load_erased_pipeline(checkpoint_path, *args, **kwargs):
    """``load_erased_model``'s pipeline (the same arguments)."""
    return load_erased_model(checkpoint_path, *args, **kwargs).pipeline


def load_pipeline(
    model: str | None = None,
    device: str = "cpu",
    torch_dtype=None,
    allow_pickle: bool = False,
    config: str | Path | None = None,
    revision: str | None = None,
    variant: str | None = None,
):
    """A ``StableDiffusionPipeline`` (or any diffusers pipeline of the family) ready to sample.

    ``model`` is a diffusers folder, a hub id or a single-file checkpoint; a single file needs
    ``config``, a local diffusers folder of the same family (its configs and tokenizer are read,
    not its weights), so that nothing is fetched from the hub. Only safetensors weights load
    unless ``allow_pickle``: a pickle can run code when loaded. Remote code is never trusted.
    """
    quiet_libraries()
    name, source = resolve_model(model)
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    if revision is not None:
        if isinstance(source, Path):
            raise UserError(f"--revision {revision} is for hub ids; {source} is a local path")
        kwargs["revision"] = revision
    if variant is not None:
        if isinstance(source, Path) and source.is_file():
            raise UserError(f"--variant {variant} picks files in a folder or hub repo; {source} is one file")
        kwargs["variant"] = variant
    if isinstance(source, Path) and source.is_file():
        pipeline = _load_single_file(source, config, allow_pickle, kwargs)
    else:
        pipeline = _load_pretrained(name, source, allow_pickle, kwargs)
    pipeline.set_progress_bar_config(disable=True)
    _bound_prompt_length(pipeline)
    return pipeline.to(device)


def _bound_prompt_length(pipeline) -> None:
    """A tokenizer config may say 8192 tokens (or 1e30 when the field is missing); diffusers pads
    prompts to that and the text encoder's 77 position embeddings then fail. The encoder decides."""

    for tokenizer_name, encoder_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        tokenizer, encoder = getattr(pipeline, tokenizer_name, None), getattr(pipeline, encoder_name, None)
        if tokenizer is not None and encoder is not None:
            tokenizer.model_max_length = prompt_length(encoder, tokenizer)


def model_profile(model: str | None = None, config=None):
    """The erasectl profile of what ``--model`` (and ``--model-config``) loads: read from the
    model folder's marker (a single file's from its config folder), never from its name."""

    _, source = resolve_model(model)
    if isinstance(source, Path) and source.is_file():
        return profile_of(Path(config).expanduser() if config is not None else None)
    return profile_of(source if isinstance(source, Path) else None)


def _load_pretrained(name: str, source: str | Path, allow_pickle: bool, kwargs: dict):
    """A diffusers folder, or a hub id from the cache (or the hub when it is reachable)."""
    from diffusers import DiffusionPipeline

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if isinstance(source, Path) and not allow_pickle:
        for folder in [source, *(p for p in source.iterdir() if p.is_dir())]:
            pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles and not any(folder.glob("*.safetensors")):
                raise UserError(
                    f"{folder} has only pickle weights ({pickles[0].name}), which can run code when loaded; "
                    "pass --allow-pickle if you trust them"
                )
    try:
        return DiffusionPipeline.from_pretrained(
            source,
            local_files_only=isinstance(source, Path) or offline,
            use_safetensors=None if allow_pickle else True,
            **absent_components(source),
            **kwargs,
        )
    except OSError as error:
        if isinstance(source, Path):
            raise UserError(f"cannot load the pipeline in {source}: {error}") from None
        raise UserError(
            f"model {name} is not in the local cache and the hub cannot be reached (HF_HUB_OFFLINE is "
            f"{'set' if offline else 'unset'}); download it on a connected machine or pass a local folder"
        ) from None


def absent_components(source) -> dict:
    """The components a local folder records as absent (``[null, null]`` in ``model_index.json``:
    an SD3 folder saved without T5), passed as None, which is how diffusers loads such a pipeline."""
    index = source / "model_index.json" if isinstance(source, Path) else None
    if index is None or not index.is_file():
        return {}
    entries = json.loads(index.read_text(encoding="utf-8"))
    return {name: None for name, value in entries.items() if value == [None, None]}


def transformer_only(path: Path, index: Path) -> bool:
    """Whether a file holds an SD3 or FLUX transformer alone (ComfyUI's ``diffusion_models`` files,
    erasectl's single-file export of them): the config folder's pipeline has a transformer, and the
    file has no VAE or text encoder in it."""
    from safetensors import safe_open

    if "transformer" not in json.loads(index.read_text()) or path.suffix != ".safetensors":
        return False
    with safe_open(str(path), "pt") as handle:
        return not any(k.startswith(("first_stage_model.", "text_encoders.", "vae.")) for k in handle.keys())


def load_transformer_file(path: Path, config: Path, **kwargs):
    """The transformer of a transformer-only file, with the config folder's transformer config."""
    import diffusers

    _, class_name = json.loads((config / "model_index.json").read_text())["transformer"]
    return getattr(diffusers, class_name).from_single_file(
        str(path), config=str(config), subfolder="transformer", local_files_only=True, **kwargs
    )


def _load_single_file(path: Path, config, allow_pickle: bool, kwargs: dict):
    """A single-file checkpoint, read offline with the configs of ``config``: SD 1.x, 2.x or SDXL
    (the whole pipeline), SD3 or FLUX (the whole pipeline, or the transformer alone, the rest then
    read from ``config``, which must hold their weights)."""
    import diffusers

    if path.suffix != ".safetensors" and not allow_pickle:
        raise UserError(
            f"{path} is a pickle checkpoint, which can run code when loaded; convert it to .safetensors or pass --allow-pickle if you trust it"
        )
    if config is None:
        raise UserError(
            f"{path} is a single-file checkpoint: pass --model-config with a local diffusers folder of the same family "
            "(SD 1.x, 2.x or SDXL; configs and tokenizer are enough) so that it loads without the hub"
        )
    config = Path(config).expanduser()
    index = config / "model_index.json"
    if not index.is_file():
        raise UserError(
            f"--model-config {config} is not a diffusers pipeline folder (no model_index.json); pass one of the checkpoint's family"
        )
    class_name = json.loads(index.read_text()).get("_class_name", "")
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise UserError(
            f"--model-config {config} describes a {class_name or 'unknown'} pipeline, which cannot load a single file; use an SD 1.x, 2.x or SDXL folder"
        )
    try:
        if transformer_only(path, index):
            transformer = load_transformer_file(path, config, **kwargs)
            return pipeline_class.from_pretrained(
                config, transformer=transformer, local_files_only=True, **absent_components(config), **kwargs
            )
        return pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True, **kwargs)
    except Exception as error:  # diffusers raises many types for a file of another family or a broken file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load {path} as a {class_name} with the configs of {config}: {first_line}") from None


SCHEDULER_ALIASES = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
    "ddpm": "DDPMScheduler",
}
DTYPES = ("fp32", "fp16", "bf16")


def inference_setup(pipeline, dtype: str | None = None, scheduler: str | None = None, device: str = "cpu"):
    """After the checkpoints are checked and applied in float32: the sampler and the dtype to draw with.

    ``scheduler`` is a diffusers scheduler class name or an alias (``SCHEDULER_ALIASES``), built from
    the pipeline's own scheduler config, so betas and prediction type stay the model's."""
    import diffusers
    import torch

    if scheduler is not None:
        class_name = SCHEDULER_ALIASES.get(scheduler.lower(), scheduler)
        cls = getattr(diffusers, class_name, None)
        if cls is None or not class_name.endswith("Scheduler"):
            raise UserError(
                f"unknown scheduler {scheduler!r}; pass a diffusers scheduler class or one of {', '.join(SCHEDULER_ALIASES)}"
            )
        pipeline.scheduler = cls.from_config(pipeline.scheduler.config)
    if dtype is not None:
        if dtype not in DTYPES:
            raise UserError(f"--dtype {dtype} is not supported; choose one of {', '.join(DTYPES)}")
        if dtype == "fp16" and not str(device).startswith("cuda"):
            raise UserError("--dtype fp16 needs a GPU (--device cuda); on a CPU use bf16 or fp32")
        pipeline.to(dtype={"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
    return pipeline


def latest_checkpoint(runs_dir: Path = Path("runs")) -> Path:
    """The most recently written erased checkpoint under ``runs_dir``."""

    found = sorted(runs_dir.glob(f"*/{CHECKPOINT_FILE}"), key=lambda p: p.stat().st_mtime) if runs_dir.is_dir() else []
    if not found:
        raise UserError(f"no erased checkpoint found in {runs_dir}/; run `erasectl erase` first or pass --checkpoint")
    return found[-1]
