"""Which UNet parameters each method trains, by diffusers module names.

Stable Diffusion's UNets name cross-attention ``attn2`` (its key/value projections ``attn2.to_k``,
``attn2.to_v`` read the text embeddings) and self-attention ``attn1``, in SD 1.x, 2.x and SDXL alike.
"""

from __future__ import annotations

import torch

from erasectl.errors import UserError


def _cross_attention(name: str) -> bool:
    return ".attn2." in name


def _cross_attention_key_value(name: str) -> bool:
    return ".attn2.to_k." in name or ".attn2.to_v." in name


PARAMETER_GROUPS = {
    # ESD (Gandikota et al. 2023), section 3.3 and the reference code's train_method values.
    "esd-x": _cross_attention,
    "esd-x-strict": _cross_attention_key_value,
    "esd-u": lambda name: not _cross_attention(name),
    "esd-all": lambda name: True,
    # Concept Ablation (Kumari et al. 2023): cross-attention K/V (their default), all of it, or everything.
    "kv": _cross_attention_key_value,
    "xattn": _cross_attention,
    "full": lambda name: True,
}


def select_parameters(unet: torch.nn.Module, group: str, allowed: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """Mark the group's parameters trainable (all others frozen) and return them by name."""
    if group not in allowed:
        raise UserError(f"unknown parameter group {group!r}; choose one of {', '.join(allowed)}")
    chosen = {}
    for name, parameter in unet.named_parameters():
        keep = PARAMETER_GROUPS[group](name)
        parameter.requires_grad_(keep)
        if keep:
            chosen[name] = parameter
    if not chosen:
        raise UserError(f"parameter group {group!r} matches no parameter of this UNet")
    return chosen
