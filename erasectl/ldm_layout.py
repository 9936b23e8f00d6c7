"""diffusers state dicts in the original single-file layout of SD 1.x, SD 2.x and SDXL.

The inverse of diffusers' own single-file conversion, written per block so that it holds for any
``layers_per_block`` and number of blocks (the embedded model has 2 blocks of 1 layer). ``export``
checks every file it writes by loading it back with ``from_single_file``.

Text encoders as each family's original code holds them: SD 1.x's CLIP in the transformers
layout under ``cond_stage_model.transformer.``; SD 2.x's OpenCLIP under ``cond_stage_model.model.``
(fused q/k/v ``in_proj``, ``resblocks``); SDXL's CLIP under ``conditioner.embedders.0.transformer.``
and its OpenCLIP, with the pooled projection, under ``conditioner.embedders.1.model.``.
"""

from __future__ import annotations

import re

import torch

from erasectl.architecture import family

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
XL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
XL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop and pooled-text conditioning
    "add_embedding.linear_2": "label_emb.0.2",
}
_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_OPEN_CLIP_LAYER = [
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
]
_OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _rename(rest: str, pairs: list[tuple[str, str]]) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    per = layers_per_block + 1
    up_has_attention = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for key, tensor in state.items():
        module, _, parameter = key.rpartition(".")
        if module in _UNET_TOP:
            new = f"{_UNET_TOP[module]}.{parameter}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            new = f"input_blocks.{1 + b * per + j}.0.{_rename(rest, _UNET_RESNET)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"input_blocks.{1 + int(m.group(1)) * per + int(m.group(2))}.1.{m.group(3)}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{(int(m.group(1)) + 1) * per}.0.op.{m.group(2)}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m.group(1))}.{_rename(m.group(2), _UNET_RESNET)}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m.group(1)}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m.group(1)) * per + int(m.group(2))}.0.{_rename(m.group(3), _UNET_RESNET)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m.group(1)) * per + int(m.group(2))}.1.{m.group(3)}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m.group(1))
            new = f"output_blocks.{b * per + layers_per_block}.{2 if b in up_has_attention else 1}.conv.{m.group(2)}"
        else:
            raise ValueError(f"no LDM name for UNet parameter {key}")
        out[UNET_PREFIX + new] = tensor
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], num_up_blocks: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            new = f"{m.group(1)}.mid.attn_1.{_rename(m.group(2), _VAE_ATTENTION)}"
            if tensor.dim() == 2:
                tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.downsample.{m.group(2)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"decoder.up.{num_up_blocks - 1 - int(m.group(1))}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            new = f"decoder.up.{num_up_blocks - 1 - int(m.group(1))}.upsample.{m.group(2)}"
        out[VAE_PREFIX + new.replace("conv_shortcut", "nin_shortcut")] = tensor
    return out


def _with_text_model_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 dropped the ``text_model.`` prefix from ``CLIPTextModel``'s keys (not from
    ``CLIPTextModelWithProjection``'s); the original layouts have it."""
    return {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in state.items()}


def text_encoder_to_ldm(state: dict[str, torch.Tensor], prefix: str = TEXT_PREFIX) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in _with_text_model_prefix(state).items()}


def text_encoder_to_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's layout: one fused ``in_proj`` of q, k and v per layer, the projection transposed."""
    out, fused = {}, {}
    for key, tensor in _with_text_model_prefix(state).items():
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = tensor.T.contiguous()  # OpenCLIP computes x @ projection
        elif key in _OPEN_CLIP_TOP:
            out[prefix + _OPEN_CLIP_TOP[key]] = tensor
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = tensor
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            out[f"{prefix}transformer.resblocks.{m.group(1)}.{_rename(m.group(2), _OPEN_CLIP_LAYER)}"] = tensor
        elif not key.endswith("position_ids"):
            raise ValueError(f"no OpenCLIP name for text-encoder parameter {key}")
    for (layer, kind), parts in fused.items():
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return out


def pipeline_to_ldm(pipeline) -> dict[str, torch.Tensor]:

    state = unet_to_ldm(pipeline.unet.state_dict(), pipeline.unet.config.layers_per_block)
    state.update(vae_to_ldm(pipeline.vae.state_dict(), len(pipeline.vae.config.up_block_types)))
    kind = family(pipeline)
    if kind == "sdxl":
        state.update(text_encoder_to_ldm(pipeline.text_encoder.state_dict(), XL_TEXT_PREFIX))
        state.update(text_encoder_to_open_clip(pipeline.text_encoder_2.state_dict(), XL_OPEN_CLIP_PREFIX))
    elif kind == "sd2":
        state.update(text_encoder_to_open_clip(pipeline.text_encoder.state_dict(), OPEN_CLIP_PREFIX))
    else:
        state.update(text_encoder_to_ldm(pipeline.text_encoder.state_dict()))
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
