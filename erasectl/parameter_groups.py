"""Which UNet parameters each method trains, by diffusers module names.

Stable Diffusion's UNets name cross-attention ``attn2`` (its key/value projections ``attn2.to_k``,
``attn2.to_v`` read the text embeddings) and self-attention ``attn1``, in SD 1.x, 2.x and SDXL alike.

ESD's groups follow the authors' diffusers script (``esd_sd.py``, ``get_esd_trainable_parameters``):
only the weights and biases of ``Linear`` and ``Conv2d`` modules are candidates, never a norm.
ESD-u also leaves out what the paper-era CompVis script's ``noxattn`` rule left out: the time
embedding (``time_embed``; SDXL's added-conditioning embedding with it) and the output head
(``out.``: ``conv_out``; ``conv_norm_out`` is a norm). Concept Ablation's groups follow its
``create_custom_diffusion``: ``kv`` is its ``cross-attn``, ``attn`` its ``attn`` (every attention
projection, self and cross: ``to_q``, ``to_k``, ``to_v``, ``to_out``), ``full`` its ``full-weight``;
``xattn`` (all of cross-attention) is erasectl's own.

``text-encoder`` trains the text encoders instead of the UNet: the ``Linear`` projections of every
transformer layer of each of the pipeline's text encoders (SDXL: both), AdvUnlearn's
``text_encoder_full`` (``train-scripts/utils/util.py``, ``param_choices``) without its layer norms,
so that a LoRA export carries the whole change; the token and position embeddings stay frozen, as
theirs.

The diffusion transformers (SD3, FLUX) have no cross-attention: text and image tokens meet in joint
attention. The same group names mean the nearest thing there (``MMDIT_GROUPS``): the *text path*
is the dual-stream blocks' text-stream attention projections (``add_q_proj``, ``add_k_proj``,
``add_v_proj``, ``to_add_out``: the only attention weights that act on text tokens alone), so
``esd-x`` and ``xattn`` train it, and ``esd-x-strict`` and ``kv`` its key and value projections,
the keys and values text contributes (EraseAnything's LoRA trains ``add_q_proj`` and
``add_k_proj``, tomguluson92/EraseAnything ``train_flux_lora.py``). ``esd-u`` trains every other
projection of the blocks (FLUX's single-stream blocks, whose ``to_k``/``to_v`` read text and image
alike, among them), leaving out the input embedders and the output head as on the UNet; ``attn``
is every attention projection of both streams.
"""

from __future__ import annotations

import torch

from erasectl.architecture import denoiser, transformer_family
from erasectl.checkpoint import TEXT_ENCODERS, is_clip, key_name
from erasectl.errors import UserError

_OUTSIDE_ESD_U = ("time_embedding.", "add_embedding.", "conv_out.")


def _projection(module: torch.nn.Module) -> bool:
    return isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))


def _cross_attention(name: str) -> bool:
    return ".attn2." in name


def _cross_attention_key_value(name: str) -> bool:
    return ".attn2.to_k." in name or ".attn2.to_v." in name


# Each rule: (parameter's full name, the module that owns it) -> trained?
PARAMETER_GROUPS = {
    "esd-x": lambda name, module: _projection(module) and _cross_attention(name),
    "esd-x-strict": lambda name, module: _projection(module) and _cross_attention_key_value(name),
    "esd-u": lambda name, module: (
        _projection(module) and not _cross_attention(name) and not name.startswith(_OUTSIDE_ESD_U)
    ),
    "esd-all": lambda name, module: _projection(module),
    "kv": lambda name, module: _cross_attention_key_value(name),
    "xattn": lambda name, module: _cross_attention(name),
    "attn": lambda name, module: any(f".{part}" in name for part in ("to_q.", "to_k.", "to_v.", "to_out.")),
    "full": lambda name, module: True,
}


_TEXT_PATH = (".attn.add_q_proj.", ".attn.add_k_proj.", ".attn.add_v_proj.", ".attn.to_add_out.")
_TEXT_KEY_VALUE = (".attn.add_k_proj.", ".attn.add_v_proj.")
_ATTENTION = (".attn.to_q.", ".attn.to_k.", ".attn.to_v.", ".attn.to_out.", *_TEXT_PATH)


def _in_blocks(name: str) -> bool:
    return name.startswith(("transformer_blocks.", "single_transformer_blocks."))


def _text_path(name: str) -> bool:
    return name.startswith("transformer_blocks.") and any(part in name for part in _TEXT_PATH)


MMDIT_GROUPS = {
    "esd-x": lambda name, module: _projection(module) and _text_path(name),
    "esd-x-strict": lambda name, module: _text_path(name) and any(part in name for part in _TEXT_KEY_VALUE),
    "esd-u": lambda name, module: _projection(module) and _in_blocks(name) and not _text_path(name),
    "esd-all": lambda name, module: _projection(module),
    "kv": lambda name, module: _text_path(name) and any(part in name for part in _TEXT_KEY_VALUE),
    "xattn": lambda name, module: _text_path(name),
    "attn": lambda name, module: _in_blocks(name) and any(part in name for part in _ATTENTION),
    "full": lambda name, module: True,
}


def group_members(unet: torch.nn.Module, group: str) -> list[str]:
    """Names of the parameters ``group`` trains, in ``named_parameters`` order."""
    rule = (PARAMETER_GROUPS if transformer_family(unet) is None else MMDIT_GROUPS)[group]
    owners = {}
    for module_name, module in unet.named_modules():
        for parameter_name, _ in module.named_parameters(recurse=False):
            owners[f"{module_name}.{parameter_name}" if module_name else parameter_name] = module
    return [name for name, _ in unet.named_parameters() if rule(name, owners[name])]


TEXT_ENCODER_GROUP = "text-encoder"


def _encoder_layer(component: str, module_name: str, encoder) -> bool:
    """A Linear of a transformer layer: CLIP's ``text_model.encoder.layers.``, T5's ``encoder.block.``."""
    if is_clip(encoder):
        return key_name(component, module_name, encoder).startswith("text_model.encoder.layers.")
    return module_name.startswith("encoder.block.")


def select_text_encoder_parameters(pipeline) -> dict[str, torch.nn.Parameter]:
    """The ``text-encoder`` group, under checkpoint keys (``text_encoder.text_model.<name>``; T5's,
    SD3's third encoder and FLUX's second, under its own names): every other parameter of the
    text encoders and the whole denoiser frozen."""

    denoiser(pipeline).requires_grad_(False)
    chosen = {}
    for component in TEXT_ENCODERS:
        encoder = getattr(pipeline, component, None)
        if encoder is None:
            continue
        encoder.requires_grad_(False)
        for module_name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and _encoder_layer(component, module_name, encoder):
                for parameter_name, parameter in module.named_parameters(recurse=False):
                    parameter.requires_grad_(True)
                    chosen[f"{component}.{key_name(component, f'{module_name}.{parameter_name}', encoder)}"] = parameter
    if not chosen:
        raise UserError("this pipeline has no text encoder layers to train; choose a denoiser parameter group")
    return chosen


def lora_targets(unet: torch.nn.Module, group: str, allowed: tuple[str, ...]) -> list[str]:
    """The ``Linear`` modules whose weight ``group`` trains, by name: where LoRA adapters go (a
    group's biases, norms and convolutions are not adapted)."""
    if group not in allowed:
        raise UserError(f"unknown parameter group {group!r}; choose one of {', '.join(allowed)}")
    members = set(group_members(unet, group))
    found = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and f"{n}.weight" in members]
    if not found:
        raise UserError(
            f"parameter group {group!r} has no Linear layer in this {type(unet).__name__} for LoRA adapters"
        )
    return found


def select_parameters(unet: torch.nn.Module, group: str, allowed: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """Mark the group's parameters trainable (all others frozen) and return them by name."""
    if group not in allowed:
        raise UserError(f"unknown parameter group {group!r}; choose one of {', '.join(allowed)}")
    members = set(group_members(unet, group))
    if not members:
        raise UserError(f"parameter group {group!r} matches no parameter of this {type(unet).__name__}")
    chosen = {}
    for name, parameter in unet.named_parameters():
        parameter.requires_grad_(name in members)
        if name in members:
            chosen[name] = parameter
    return chosen
