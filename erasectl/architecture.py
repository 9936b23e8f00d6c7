"""What differs between the Stable Diffusion families for an erasure method, in one place.

Every method sees one *conditioning* tensor per prompt, shaped like the UNet's
``encoder_hidden_states`` and built the way the family's own pipeline builds it (SD 1.x: CLIP
ViT-L last layer; SD 2.x: OpenCLIP; SDXL: both encoders' penultimate layers side by side).

SDXL also conditions on the pooled embedding of its second encoder and six size/crop numbers
("added conditioning", ``text_time``). So that batching, indexing and ``torch.cat`` in the methods
stay family-blind, those are packed into extra rows after the token rows, and unpacked right
before the UNet call by :func:`unet_inputs`. Parameter groups are named in
``erasectl.parameter_groups``: ``attn2`` is cross-attention in every family.
"""

from __future__ import annotations

import math

import torch

from erasectl.errors import UserError

FAMILIES = ("sd1", "sd2", "sdxl")
# Diffusion transformers (MMDiT, flow matching) by their denoiser's class: loaded and drawn from;
# the erasure methods do not support them yet, and refuse them in one line.
TRANSFORMER_FAMILIES = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
TIME_IDS = 6  # original height and width, crop top and left, target height and width


def has_added_conditioning(unet) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def denoiser(pipeline):
    """The pipeline's denoising network: its UNet, or its transformer (SD3, FLUX)."""
    return pipeline.transformer if getattr(pipeline, "unet", None) is None else pipeline.unet


def family(pipeline) -> str:
    """``sd3`` or ``flux`` (a diffusion transformer), ``sdxl`` (two text encoders, added
    conditioning), ``sd2`` (OpenCLIP width 1024 or linear projections in the transformer blocks) or
    ``sd1``."""
    if getattr(pipeline, "unet", None) is None:
        name = type(getattr(pipeline, "transformer", None)).__name__
        if name not in TRANSFORMER_FAMILIES:
            raise UserError(f"{type(pipeline).__name__} ({name}) is not a model family erasectl knows; it reads SD 1.x, 2.x, SDXL, SD3 and FLUX pipelines")  # fmt: skip
        return TRANSFORMER_FAMILIES[name]
    if getattr(pipeline, "text_encoder_2", None) is not None or has_added_conditioning(pipeline.unet):
        return "sdxl"
    return "sd2" if pipeline.unet.config.use_linear_projection else "sd1"


def _extra_width(unet) -> int:
    """Width of the pooled text embedding plus the six time ids."""
    pooled = unet.config.projection_class_embeddings_input_dim - TIME_IDS * unet.config.addition_time_embed_dim
    return pooled + TIME_IDS


def _extra_rows(unet) -> int:
    return math.ceil(_extra_width(unet) / unet.config.cross_attention_dim)


def differentiable_conditioning(pipeline, prompts: list[str]) -> torch.Tensor:
    """Conditioning of each prompt as the family's pipeline builds it (see the module docstring),
    with gradients to whatever in the text encoders requires them (an attack's token embedding);
    ``encode_prompts`` is the same without."""
    if not has_added_conditioning(pipeline.unet):
        embeds, _ = pipeline.encode_prompt(prompts, pipeline.device, 1, False)
        return embeds
    embeds, _, pooled, _ = pipeline.encode_prompt(
        prompts, device=pipeline.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    size = pipeline.default_sample_size * pipeline.vae_scale_factor
    time_ids = torch.tensor([size, size, 0, 0, size, size], dtype=embeds.dtype, device=embeds.device).expand(
        len(prompts), TIME_IDS
    )
    extra = torch.cat([pooled.to(embeds.dtype), time_ids], dim=1)
    width = embeds.shape[-1]
    rows = _extra_rows(pipeline.unet)
    packed = torch.zeros(len(prompts), rows * width, dtype=embeds.dtype, device=embeds.device)
    packed[:, : extra.shape[1]] = extra
    return torch.cat([embeds, packed.view(len(prompts), rows, width)], dim=1)


encode_prompts = torch.no_grad()(differentiable_conditioning)


def token_rows(unet, conditioning: torch.Tensor) -> torch.Tensor:
    """The token part of a conditioning tensor: what cross-attention's key and value read."""
    if not has_added_conditioning(unet):
        return conditioning
    return conditioning[:, : -_extra_rows(unet)]


def unet_inputs(unet, conditioning: torch.Tensor) -> dict:
    """Keyword arguments of ``unet(latents, timesteps, **...)`` for a batch of conditioning."""
    if not has_added_conditioning(unet):
        return {"encoder_hidden_states": conditioning}
    rows = _extra_rows(unet)
    extra = conditioning[:, -rows:].reshape(len(conditioning), -1)[:, : _extra_width(unet)]
    return {
        "encoder_hidden_states": conditioning[:, :-rows],
        "added_cond_kwargs": {"text_embeds": extra[:, :-TIME_IDS], "time_ids": extra[:, -TIME_IDS:]},
    }


def predict_noise(unet, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
    return unet(latents, timesteps, **unet_inputs(unet, conditioning)).sample


def prompt_length(text_encoder, tokenizer) -> int:
    """Tokens per prompt: the text encoder's position embeddings bound it, whatever the tokenizer
    config says (some say 8192, or 1e30 when the field is missing); an encoder without them (T5's
    relative positions) leaves the tokenizer's."""
    positions = getattr(text_encoder.config, "max_position_embeddings", None)
    if positions is None:
        return int(tokenizer.model_max_length)
    return min(int(tokenizer.model_max_length), int(positions))


@torch.no_grad()
def pooled_text_embeddings(pipeline, phrases: list[str], batch_size: int = 256) -> torch.Tensor:
    """The first text encoder's pooled embedding of each phrase, L2-normalised, in batches.

    Each batch is padded to its longest phrase, not to the prompt length: the encoder is causal,
    so the end token's state does not see the padding after it, and short phrases cost a few
    positions instead of 77.
    """
    tokenizer, encoder = pipeline.tokenizer, pipeline.text_encoder
    length = prompt_length(encoder, tokenizer)
    found = []
    for start in range(0, len(phrases), batch_size):
        tokens = tokenizer(
            phrases[start : start + batch_size],
            padding="longest",
            max_length=length,
            truncation=True,
            return_tensors="pt",
        )
        pooled = encoder(tokens.input_ids.to(encoder.device)).pooler_output
        found.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(found) if found else torch.zeros(0)


def over_length(pipeline, prompts: list[str]) -> list[str]:
    """The prompts with more tokens (start and end included) than the text encoder reads."""
    tokenizer = pipeline.tokenizer
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False).input_ids]
    return [prompt for prompt, length in zip(prompts, lengths) if length > tokenizer.model_max_length]
