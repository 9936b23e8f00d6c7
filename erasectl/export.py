"""Erasures in the files other tools open: a diffusers folder, a PEFT/diffusers LoRA, a kohya LoRA.

A LoRA is extracted from each changed weight's delta by SVD. Its rank is the smallest that keeps
``energy`` of the delta's squared singular values (the share of its Frobenius norm), unless a rank
is given; the kept share is reported per module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from erasectl.architecture import TRANSFORMER_FAMILIES, family, latent_shape, transformer_family
from erasectl.checkpoint import TEXT_ENCODERS, ErasedCheckpoint, component_tensors, is_clip, key_name
from erasectl.errors import UserError
from erasectl.families.base import original_place, swap_halves
from erasectl.files import give_usual_modes, prepare_output_dir, write_atomically
from erasectl.generation import SamplerSettings, generate
from erasectl.ldm_layout import pipeline_to_ldm
from erasectl.model_card import model_card, read_evaluation
from erasectl.models import absent_components, load_pipeline, load_transformer_file, model_profile, resolve_model
from erasectl.profiles import write_marker

FORMATS = ("diffusers", "lora", "kohya")
LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass
class LowRankFactor:
    down: torch.Tensor  # (rank, in) or (rank, in, k, k): lora_A / lora_down
    up: torch.Tensor  # (out, rank) or (out, rank, 1, 1): lora_B / lora_up
    kept_energy: float


def low_rank(delta: torch.Tensor, rank: int | None, energy: float) -> LowRankFactor:
    """``up @ down`` approximates ``delta`` (a Linear or Conv2d weight delta)."""
    matrix = delta.double().reshape(delta.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    squares = s**2
    total = float(squares.sum())
    if rank is None:
        if total == 0:
            rank = 1
        else:
            cumulative = torch.cumsum(squares, 0) / total
            rank = int((cumulative < energy).sum()) + 1
    rank = max(1, min(rank, len(s)))
    root = s[:rank].sqrt()
    down = (root[:, None] * vh[:rank]).float()
    up = (u[:, :rank] * root[None, :]).float()
    if delta.dim() == 4:
        down = down.reshape(rank, *delta.shape[1:])
        up = up.reshape(delta.shape[0], rank, 1, 1)
    kept = float(squares[:rank].sum() / total) if total else 1.0
    return LowRankFactor(down.contiguous(), up.contiguous(), kept)


def _pad(factor: LowRankFactor, rank: int) -> LowRankFactor:
    extra = rank - factor.down.shape[0]
    if extra == 0:
        return factor
    down = torch.cat([factor.down, factor.down.new_zeros((extra, *factor.down.shape[1:]))])
    up = torch.cat([factor.up, factor.up.new_zeros((factor.up.shape[0], extra, *factor.up.shape[2:]))], dim=1)
    return LowRankFactor(down, up, factor.kept_energy)


def lora_factors(pipeline, checkpoint: ErasedCheckpoint, rank: int | None, energy: float) -> dict[str, LowRankFactor]:
    """Per checkpoint key (``unet.<module>.weight``), the low-rank factors of erased - base: a LoRA
    checkpoint's own factors, exactly (no SVD, nothing truncated), or an SVD of a full-weight delta."""
    own = checkpoint.lora_factors()
    if own:
        if rank is not None:
            raise UserError(
                f"this checkpoint is a rank-{own[next(iter(own))][0].shape[0]} LoRA and exports its own factors exactly; drop --rank"
            )
        return {
            key: LowRankFactor(down.float().contiguous(), up.float().contiguous(), 1.0)
            for key, (down, up) in own.items()
        }
    base = component_tensors(pipeline, list(checkpoint.tensors))
    factors = {}
    for key, erased in checkpoint.tensors.items():
        if key.endswith(".bias"):
            continue  # carried beside the factors, see bias_deltas
        if not key.endswith(".weight") or erased.dim() not in (2, 4):
            raise UserError(
                f"{key} is not a Linear or Conv2d weight, which a LoRA cannot carry; export --format diffusers instead"
            )
        factors[key] = low_rank(erased.float() - base[key].float(), rank, energy)
    return factors


def bias_deltas(pipeline, checkpoint: ErasedCheckpoint) -> dict[str, torch.Tensor]:
    """erased - base for the checkpoint's bias vectors (ESD-x trains the output projection's bias)."""
    keys = [k for k in checkpoint.tensors if k.endswith(".bias")]
    base = component_tensors(pipeline, keys)
    return {k: (checkpoint.tensors[k].float() - base[k].float()).contiguous() for k in keys}


def peft_state_dict(factors: dict[str, LowRankFactor]) -> dict[str, dict[str, torch.Tensor]]:
    """Per component, ``<module>.lora_A.weight`` / ``lora_B.weight`` as diffusers' LoRA writer takes them."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, factor in factors.items():
        component, _, name = key.partition(".")
        module = name[: -len(".weight")]
        layers.setdefault(component, {})[f"{module}.lora_A.weight"] = factor.down
        layers[component][f"{module}.lora_B.weight"] = factor.up
    return layers


KOHYA_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}


def kohya_stem(key: str) -> str:
    """``unet.<module>.weight`` (or ``.bias``) -> ``lora_unet_<module_with_underscores>``."""
    component, _, name = key.partition(".")
    return f"{KOHYA_PREFIXES[component]}_{name.rsplit('.', 1)[0].replace('.', '_')}"


def kohya_state_dict(
    factors: dict[str, LowRankFactor], biases: dict[str, torch.Tensor] | None = None, stem_of=kohya_stem
) -> dict[str, torch.Tensor]:
    """kohya-ss names (``lora_unet_<module_with_underscores>.lora_down.weight``), with ``alpha`` equal
    to the rank so that the scale alpha/rank is 1, as AUTOMATIC1111 and ComfyUI apply it; with
    ``biases``, each bias delta as ``<stem>.diff_b``, which ComfyUI adds to the module's bias.
    ``stem_of``: a factor's key -> its stem (FLUX's factors come keyed by their stems)."""
    state = {}
    for key, delta in (biases or {}).items():
        state[f"{stem_of(key)}.diff_b"] = delta
    for key, factor in factors.items():
        stem = stem_of(key)
        state[f"{stem}.lora_down.weight"] = factor.down
        state[f"{stem}.lora_up.weight"] = factor.up
        state[f"{stem}.alpha"] = torch.tensor(float(factor.down.shape[0]))
    return state


def refuse_unreadable_lora(pipeline, checkpoint: ErasedCheckpoint, kind: str, bias_deltas_too: bool) -> None:
    """A LoRA no reader loads, refused before anything is written: T5's deltas (no SD3 or FLUX
    LoRA loader reads a T5 part), an SD3 or FLUX text encoder's deltas in kohya names (the file holds
    the transformer), and bias deltas anywhere but an SD 1.x/2.x/XL kohya file."""
    components = {key.partition(".")[0] for key in checkpoint.target_keys()}
    kind_of = family(pipeline)
    t5 = [c for c in components if c != "unet" and c != "transformer" and not is_clip(getattr(pipeline, c))]
    if t5:
        raise UserError(f"this checkpoint changes T5 ({t5[0]}), which no LoRA reader loads; export --format diffusers")
    transformer = kind_of in TRANSFORMER_FAMILIES.values()
    if kind == "kohya" and transformer and components != {"transformer"}:
        raise UserError(f"--format kohya writes the {kind_of} transformer; this checkpoint changes its text encoder: export --format lora or diffusers")  # fmt: skip
    if kind != "kohya" and bias_deltas_too:
        raise UserError(
            "--bias-deltas is for --format kohya (ComfyUI reads them as .diff_b); a PEFT LoRA has no place for them"
        )
    if transformer and bias_deltas_too:
        raise UserError(
            f"--bias-deltas writes SD 1.x, 2.x and SDXL .diff_b keys; a {kind_of} LoRA carries weight deltas only"
        )


def transformer_kohya_factors(pipeline, factors: dict[str, LowRankFactor]) -> dict[str, LowRankFactor]:
    """An SD3 or FLUX LoRA (factors of one rank, by checkpoint key) under kohya's names for the
    original modules (Stability AI's, ``lora_unet_joint_blocks_0_x_block_attn_qkv``; Black Forest
    Labs', ``lora_unet_double_blocks_0_txt_attn_qkv``), the names ComfyUI maps onto its own
    ``diffusion_model`` keys. Where the original fuses modules (q, k, v; FLUX's single blocks' MLP
    input) their factors are joined, down stacked and up block-diagonal, so that up @ down holds each
    member's own delta in its rows and zero for a member without one; an adaLN projection stored
    with its halves swapped has its up factor's halves swapped as the weight's are."""
    transformer = pipeline.transformer
    found = transformer_family(transformer)
    swapped = set(found.swapped_modules(transformer))
    groups: dict[str, dict] = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear):
            target, order, _ = original_place(name, found.rules)
            groups.setdefault(target, {})[order] = (name, module.out_features)
    own = {}
    for key, factor in factors.items():
        name = key[len("transformer.") : -len(".weight")]
        up = swap_halves(factor.up) if name in swapped else factor.up
        own[name] = LowRankFactor(factor.down, up, factor.kept_energy)
    joined = {}
    for target, members in groups.items():
        stem = f"lora_unet_{target.replace('.', '_')}"
        if None in members:  # a module of its own
            name = members[None][0]
            if name in own:
                joined[stem] = own[name]
            continue
        fused = [members[order] for order in sorted(members)]  # down's rows and up's columns both in this order
        present = [own[name] for name, _ in fused if name in own]
        if not present:
            continue
        rank = present[0].down.shape[0]
        up = torch.zeros(sum(out for _, out in fused), rank * len(present))
        row = column = 0
        for name, out in fused:
            if name in own:
                up[row : row + out, column : column + rank] = own[name].up
                column += rank
            row += out
        downs = torch.cat([factor.down for factor in present])
        joined[stem] = LowRankFactor(downs, up, min(factor.kept_energy for factor in present))
    return joined


def modelspec_architecture(pipeline) -> str:
    """The modelspec architecture id of the pipeline's family (SD 2.x: by resolution and prediction)."""

    kind = family(pipeline)
    if kind == "flux":  # as kohya-ss sd-scripts' modelspec names them
        return "flux-1-dev" if pipeline.transformer.config.guidance_embeds else "flux-1-schnell"
    if kind == "sd3":
        return "stable-diffusion-3"
    if kind == "sdxl":
        return "stable-diffusion-xl-v1-base"
    if kind == "sd2":
        return (
            "stable-diffusion-v2-768-v"
            if pipeline.scheduler.config.prediction_type == "v_prediction"
            else "stable-diffusion-v2-512"
        )
    return "stable-diffusion-v1"


def modelspec_metadata(checkpoint: ErasedCheckpoint, pipeline, title: str, kind: str) -> dict[str, str]:
    """Stability AI's ``modelspec`` keys (read by A1111 and ComfyUI model browsers) and erasectl's own."""
    import json

    architecture = modelspec_architecture(pipeline)
    size = latent_shape(pipeline)[-1] * pipeline.vae_scale_factor
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/{kind}" if kind != "checkpoint" else architecture,
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.description": f"{checkpoint.recipe['method']} erasure of {', '.join(checkpoint.recipe['concepts'])}",
    }
    metadata.update({k: v for k, v in checkpoint.metadata.items() if k.startswith("erasectl.")})
    metadata["erasectl.exported_as"] = json.dumps(kind)
    return metadata


def export_lora(
    checkpoint: ErasedCheckpoint,
    pipeline,
    out: Path,
    kind: str,
    rank: int | None,
    energy: float,
    bias_deltas_too: bool = False,
) -> dict:
    from safetensors.torch import save_file

    factors = lora_factors(pipeline, checkpoint, rank, energy)
    if kind == "kohya":
        # One rank and one alpha for every module, so that alpha / rank = 1 in every reader:
        # diffusers' kohya reader drops per-module alphas (measured: images off by up to 17
        # levels). Smaller factors are padded with zeros, which changes nothing they compute.
        width = max(int(f.down.shape[0]) for f in factors.values())
        factors = {k: _pad(f, width) for k, f in factors.items()}
    if kind == "lora":
        state = {
            f"{component}.{name}": t
            for component, layers in peft_state_dict(factors).items()
            for name, t in layers.items()
        }
        path = out / LORA_FILE
    biases = bias_deltas(pipeline, checkpoint)
    if kind == "kohya" and family(pipeline) in TRANSFORMER_FAMILIES.values():
        state = kohya_state_dict(transformer_kohya_factors(pipeline, factors), stem_of=lambda stem: stem)
    elif kind == "kohya":
        state = kohya_state_dict(factors, biases if bias_deltas_too else None)
    if kind == "kohya":
        path = out / f"{out.name}.safetensors"
    metadata = modelspec_metadata(checkpoint, pipeline, out.name, "lora")
    write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    ranks = {k: int(f.down.shape[0]) for k, f in factors.items()}
    return {
        "file": str(path),
        "ranks": sorted(set(ranks.values())),
        "min_kept_energy": round(min(f.kept_energy for f in factors.values()), 6),
        # A LoRA carries weight deltas; bias deltas only as kohya .diff_b on request. What it leaves out is said, never hidden.
        "bias_deltas": {
            "count": len(biases),
            "max_abs": round(max((float(b.abs().max()) for b in biases.values()), default=0.0), 6),
            "carried": bool(bias_deltas_too and biases),
        },
        "readers": {
            "lora": "diffusers' load_lora_weights and ComfyUI (which maps diffusers' transformer.<module> names for SD3 and FLUX)"
            if family(pipeline) in TRANSFORMER_FAMILIES.values()
            else "diffusers' load_lora_weights only (PEFT names); for ComfyUI and AUTOMATIC1111 export --format kohya",
            "kohya": {
                "sd3": "ComfyUI (lora_unet_ and Stability AI's module names; diffusers has no reader for them)",
                "flux": "ComfyUI and diffusers' load_lora_weights (kohya's names of Black Forest Labs' modules)",
            }.get(
                family(pipeline),
                "AUTOMATIC1111, ComfyUI, kohya sd-scripts, diffusers' load_lora_weights (not with --bias-deltas: diffusers refuses .diff_b keys, and sd-scripts ignores them without a warning; ComfyUI applies them)",
            ),
        }[kind],
    }


def released_text_encoder_keys(state_keys) -> dict[str, str]:
    """Key in memory -> key in the layout released SD folders use (``checkpoint.key_name``).
    transformers 5 saves a ``CLIPTextModel`` without the ``text_model.`` prefix, which
    transformers 4 and ComfyUI's diffusers loader silently skip (a random text encoder)."""
    return {k: key_name("text_encoder", k) for k in state_keys}


def write_released_text_encoders(pipeline, out: Path) -> dict[str, int]:
    """Rewrite each saved text encoder in the released layout and check every key against it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    written = {}
    for component in TEXT_ENCODERS:
        encoder = getattr(pipeline, component, None)
        if encoder is None or not is_clip(encoder):  # FLUX's text_encoder_2 is T5
            continue
        folder = out / component
        files = sorted(folder.glob("*.safetensors"))
        if len(files) != 1 or (folder / "model.safetensors.index.json").exists():
            raise RuntimeError(f"expected one safetensors file in {folder}, found {[f.name for f in files]}")
        names = released_text_encoder_keys(encoder.state_dict())
        with safe_open(files[0], "pt") as handle:
            state = {names.get(k, k): handle.get_tensor(k) for k in handle.keys()}
        write_atomically(files[0], lambda tmp, state=state: save_file(state, str(tmp), metadata={"format": "pt"}))
        check_released_layout(files[0], encoder)
        written[component] = len(state)
    return written


def check_released_layout(path: Path, encoder) -> None:
    """The key check a transformers 4 loader makes: exactly ``text_model.<every tensor>`` (and the
    projection), nothing missing, nothing extra."""
    from safetensors import safe_open

    expected = set(released_text_encoder_keys(encoder.state_dict()).values())
    with safe_open(path, "pt") as handle:
        found = set(handle.keys())
    if found != expected or not all(k.startswith(("text_model.", "text_projection.")) for k in found):
        raise RuntimeError(
            f"{path} is not in the released text-encoder layout: missing {sorted(expected - found)[:3]}, extra {sorted(found - expected)[:3]}"
        )


def export_diffusers(pipeline, out: Path) -> dict:
    pipeline.save_pretrained(out, safe_serialization=True)
    write_vocabulary_files(pipeline, out)
    found = {"folder": str(out), "text_encoder_tensors": write_released_text_encoders(pipeline, out)}
    give_usual_modes(out)
    return found


def write_vocabulary_files(pipeline, out: Path) -> None:
    """Each BPE tokenizer's ``vocab.json`` and ``merges.txt`` beside its ``tokenizer.json``: what the
    slow ``CLIPTokenizer`` of transformers 4 (which many tools still pin) reads."""
    for name in ("tokenizer", "tokenizer_2"):
        tokenizer = getattr(pipeline, name, None)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and type(backend.model).__name__ == "BPE" and (out / name).is_dir():
            backend.model.save(str(out / name))


def export_transformer_file(checkpoint: ErasedCheckpoint, pipeline, out: Path) -> dict:
    """SD3's or FLUX's transformer alone, in its original layout (ComfyUI's ``models/diffusion_models``;
    diffusers' ``from_single_file``): the family's ``original_layout``."""
    from safetensors.torch import save_file

    path = out / f"{out.name}.safetensors"
    state = {
        k: v.contiguous()
        for k, v in transformer_family(pipeline.transformer).original_layout(pipeline.transformer).items()
    }
    metadata = modelspec_metadata(checkpoint, pipeline, out.name, "checkpoint")
    write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    return {
        "file": str(path),
        "tensors": len(state),
        "holds": "the transformer alone (models/diffusion_models in ComfyUI)",
    }


def export_single_file(checkpoint: ErasedCheckpoint, pipeline, out: Path) -> dict:
    from safetensors.torch import save_file

    if family(pipeline) in TRANSFORMER_FAMILIES.values():
        return export_transformer_file(checkpoint, pipeline, out)
    if type(pipeline).__name__ not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise UserError(
            f"single-file export supports SD 1.x, 2.x and SDXL pipelines; this is a {type(pipeline).__name__}: export --format diffusers"
        )
    path = out / f"{out.name}.safetensors"
    state = pipeline_to_ldm(pipeline)
    metadata = modelspec_metadata(checkpoint, pipeline, out.name, "checkpoint")
    write_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    return {"file": str(path)}


def _load_lora_as_consumers_do(pipeline, path: Path) -> None:
    """diffusers' ``load_lora_weights`` for the factors; ``.diff_b`` bias deltas (which diffusers
    refuses) added to each module's bias, as ComfyUI applies them."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    biases = {k[: -len(".diff_b")]: v for k, v in state.items() if k.endswith(".diff_b")}
    factors = {k: v for k, v in state.items() if not k.endswith(".diff_b")}
    pipeline.load_lora_weights(factors, adapter_name="erasure")
    if biases:
        modules = {kohya_stem(f"unet.{name}.bias"): module for name, module in pipeline.unet.named_modules() if name}
        with torch.no_grad():
            for stem, delta in biases.items():
                target = modules[stem]
                bias = target.base_layer.bias if hasattr(target, "base_layer") else target.bias
                bias.add_(delta.to(bias.dtype))


def _load_kohya_as_comfyui_does(pipeline, path: Path, config_folder) -> None:
    """An SD3 kohya LoRA applied as ComfyUI applies it (diffusers has no reader for these names):
    ComfyUI names each of its ``diffusion_model.<key>.weight`` tensors ``lora_unet_<key with "_"
    for ".">`` (``comfy/lora.py``, ``model_lora_keys_unet``) and adds alpha / rank x up @ down to
    it; the patched original-layout transformer is then read by diffusers' own single-file converter."""
    import tempfile

    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    weights = transformer_family(pipeline.transformer).original_layout(pipeline.transformer)
    by_stem = {
        "lora_unet_" + key[: -len(".weight")].replace(".", "_"): key for key in weights if key.endswith(".weight")
    }
    for down_key in [k for k in state if k.endswith(".lora_down.weight")]:
        stem = down_key[: -len(".lora_down.weight")]
        down, up = state[down_key].float(), state[f"{stem}.lora_up.weight"].float()
        scale = float(state[f"{stem}.alpha"]) / down.shape[0] if f"{stem}.alpha" in state else 1.0
        key = by_stem[stem]
        weights[key] = (weights[key].float() + scale * up @ down).to(weights[key].dtype)
    with tempfile.TemporaryDirectory() as folder:
        patched = Path(folder) / "transformer.safetensors"
        save_file({k: v.contiguous() for k, v in weights.items()}, str(patched))
        pipeline.transformer = load_transformer_file(patched, Path(config_folder))


def verify_export(
    kind: str, result: dict, erased_pipeline, config_folder, load_base, seeds: list[int], prompts: list[str], steps: int
) -> dict:
    """Load the export with its consumer's loader and draw the same images as erasectl's own path."""
    import numpy as np

    pipeline_class = type(erased_pipeline)
    comfyui_rule = kind == "kohya" and family(erased_pipeline) == "sd3"  # diffusers has no reader for these names
    if kind == "diffusers":
        folder = Path(result["folder"])
        reloaded = pipeline_class.from_pretrained(folder, local_files_only=True, **absent_components(folder))
    elif kind == "single-file" and getattr(erased_pipeline, "transformer", None) is not None:
        reloaded = load_base()
        reloaded.transformer = load_transformer_file(Path(result["file"]), Path(config_folder))
    elif kind == "single-file":
        reloaded = pipeline_class.from_single_file(result["file"], config=str(config_folder), local_files_only=True)
    elif comfyui_rule:
        reloaded = load_base()
        _load_kohya_as_comfyui_does(reloaded, Path(result["file"]), config_folder)
    else:
        reloaded = load_base()
        _load_lora_as_consumers_do(reloaded, Path(result["file"]))
    reloaded.set_progress_bar_config(disable=True)
    if kind in ("diffusers", "single-file"):
        mismatched = [
            f"{component}.{name}"
            for component in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
            if getattr(erased_pipeline, component, None) is not None
            for name, tensor in getattr(erased_pipeline, component).state_dict().items()
            if not torch.equal(tensor, getattr(reloaded, component).state_dict()[name])
        ]
        if mismatched:
            raise RuntimeError(f"{kind} export does not reload bit-identically: {mismatched[:3]}")
    settings = SamplerSettings(steps=steps)
    ours = generate(erased_pipeline, prompts, seeds, settings)
    theirs = generate(reloaded, prompts, seeds, settings)
    difference = max(
        int(np.abs(np.asarray(a.image, dtype=np.int16) - np.asarray(b.image, dtype=np.int16)).max())
        for a, b in zip(ours, theirs)
    )
    return {
        "loader": {
            "diffusers": "from_pretrained",
            "single-file": "from_single_file",
            "lora": "load_lora_weights",
            "kohya": "ComfyUI's lora_unet_ key rule, then from_single_file" if comfyui_rule else "load_lora_weights",
        }[kind],
        "max_pixel_difference": difference,
        "images_compared": len(ours),
    }


@dataclass
class ExportRequest:
    format: str  # diffusers, lora, kohya or single-file
    model: str | None = None  # the base; None: the checkpoint's
    model_config: str | None = None
    rank: int | None = None
    energy: float = 0.999
    bias_deltas: bool = False
    verify: bool = True
    allow_pickle: bool = False
    evaluation: Path | None = None  # an evaluate run of this checkpoint, for the model card


def export_checkpoint(erased, request: ExportRequest, out: Path, force: bool = False) -> dict:
    """Write ``erased`` (an ``ErasedCheckpoint``) in ``request.format`` into ``out`` and, with
    ``request.verify``, reload it with its consumer's loader and compare images; returns the summary."""

    name, source = resolve_model(request.model or erased.base_model)
    model_config = request.model_config or erased.base_config
    evaluation = read_evaluation(request.evaluation, erased) if request.evaluation is not None else None

    def load_base():
        return load_pipeline(name, allow_pickle=request.allow_pickle, config=model_config)

    pipeline = load_base()
    if request.format in ("lora", "kohya"):  # before anything is written
        refuse_unreadable_lora(pipeline, erased, request.format, request.bias_deltas)
    base = None
    if request.format in ("lora", "kohya"):
        base = load_base()
        erased.check(base)
    erased.apply(pipeline)
    prepare_output_dir(out, force)
    profile = model_profile(name, model_config)
    if request.format == "diffusers":
        result = export_diffusers(pipeline, out)
        write_marker(out, profile)
    elif request.format == "single-file":
        result = export_single_file(erased, pipeline, out)
    else:
        result = export_lora(erased, base, out, request.format, request.rank, request.energy, request.bias_deltas)
    result["format"] = request.format
    if request.verify:
        prompts = profile.verification_prompts(erased.recipe["concepts"])
        result["verification"] = verify_export(
            request.format, result, pipeline, model_config or source, load_base, seeds=[0, 1], prompts=prompts, steps=25
        )
    card = model_card(erased, request.format, name, evaluation)
    result["model_card"] = str(write_atomically(out / "README.md", lambda tmp: tmp.write_text(card)))
    return result
