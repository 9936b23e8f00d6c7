"""What differs between the Stable Diffusion families for an erasure method, in one place.

Every method sees one *conditioning* tensor per prompt, shaped like the UNet's
``encoder_hidden_states`` and built the way the family's own pipeline builds it (SD 1.x: CLIP
ViT-L last layer; SD 2.x: OpenCLIP; SDXL: both encoders' penultimate layers side by side).

SDXL also conditions on the pooled embedding of its second encoder and six size/crop numbers
("added conditioning", ``text_time``). So that batching, indexing and ``torch.cat`` in the methods
stay family-blind, those are packed into extra rows after the token rows, and unpacked right
before the UNet call by :func:`unet_inputs`. Parameter groups are named in
``erasectl.parameter_groups``: ``attn2`` is cross-attention in every family.

The diffusion transformers (SD3, FLUX: ``erasectl.families``, a module each) are packed the same
way: their T5 and CLIP token rows, then rows carrying the pooled vector and the guidance value a
distilled model takes as an input. :func:`predict_noise` calls any denoiser with such a tensor.
"""

from __future__ import annotations

import math

import torch

from erasectl import families
from erasectl.errors import UserError

FAMILIES = ("sd1", "sd2", "sdxl")
# Diffusion transformers (MMDiT, flow matching) by their denoiser's class.
TRANSFORMER_FAMILIES = {name: found.name for name, found in families.by_denoiser_class().items()}
TIME_IDS = 6  # original height and width, crop top and left, target height and width


def has_added_conditioning(unet) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def denoiser(pipeline):
    """The pipeline's denoising network: its UNet, or its transformer (SD3, FLUX)."""
    return pipeline.transformer if getattr(pipeline, "unet", None) is None else pipeline.unet


def component_name(module) -> str:
    """The denoiser's component name in a pipeline and in checkpoint keys: ``unet`` or ``transformer``."""
    return "unet" if families.of(module) is None else "transformer"


def transformer_family(module) -> families.TransformerFamily | None:
    """The diffusion-transformer family of a denoiser, or None for a UNet."""
    return families.of(module)


def family(pipeline) -> str:
    """``sd3`` or ``flux`` (a diffusion transformer), ``sdxl`` (two text encoders, added
    conditioning), ``sd2`` (OpenCLIP width 1024 or linear projections in the transformer blocks) or
    ``sd1``."""
    if getattr(pipeline, "unet", None) is None:
        found = families.of(getattr(pipeline, "transformer", None))
        if found is None:
            name = type(getattr(pipeline, "transformer", None)).__name__
            raise UserError(f"{type(pipeline).__name__} ({name}) is not a model family erasectl knows; it reads SD 1.x, 2.x, SDXL, SD3 and FLUX pipelines")  # fmt: skip
        return found.name
    if getattr(pipeline, "text_encoder_2", None) is not None or has_added_conditioning(pipeline.unet):
        return "sdxl"
    return "sd2" if pipeline.unet.config.use_linear_projection else "sd1"


UNET_SAMPLING = (25, 7.5)  # erasectl's steps and guidance on SD 1.x, 2.x and XL


def sampling_defaults(pipeline, steps: int | None = None, guidance: float | None = None) -> tuple[int, float]:
    """(steps, guidance) to draw with: those given, else the family's pipeline's defaults."""
    module = denoiser(pipeline)
    found = families.of(module)
    own = UNET_SAMPLING if found is None else found.sampling_defaults(module)
    return own[0] if steps is None else steps, own[1] if guidance is None else guidance


def call_options(pipeline) -> dict:
    """What every pipeline call passes besides the prompt and sampler: a transformer family's T5
    length, the one its erasures encode with (the pipelines' own defaults differ: FLUX's 512 for
    schnell, and SD3's 256 for a T5 that reads fewer)."""
    found = families.of(denoiser(pipeline))
    return {} if found is None else {"max_sequence_length": found.sequence_length(pipeline)}


def guidance_kind(module) -> str:
    """How the denoiser is guided when sampling (``erasectl.families.GUIDANCE_KINDS``)."""
    found = families.of(module)
    return "classifier-free" if found is None else found.guidance(module)


def _extra_width(module) -> int:
    """UNet: the width of the pooled text embedding plus the six time ids; transformer: the pooled
    vector plus one guidance value."""
    if families.of(module) is not None:
        return module.config.pooled_projection_dim + 1
    pooled = module.config.projection_class_embeddings_input_dim - TIME_IDS * module.config.addition_time_embed_dim
    return pooled + TIME_IDS


def _extra_rows(module) -> int:
    width = module.config.joint_attention_dim if families.of(module) is not None else module.config.cross_attention_dim
    return math.ceil(_extra_width(module) / width)


def _packed(tokens: torch.Tensor, extra: torch.Tensor, rows: int) -> torch.Tensor:
    """``tokens`` with ``rows`` more rows holding ``extra`` (zero-padded)."""
    width = tokens.shape[-1]
    packed = torch.zeros(len(tokens), rows * width, dtype=tokens.dtype, device=tokens.device)
    packed[:, : extra.shape[1]] = extra.to(tokens.dtype)
    return torch.cat([tokens, packed.view(len(tokens), rows, width)], dim=1)


def differentiable_conditioning(pipeline, prompts: list[str]) -> torch.Tensor:
    """Conditioning of each prompt as the family's pipeline builds it (see the module docstring),
    with gradients to whatever in the text encoders requires them (an attack's token embedding);
    ``encode_prompts`` is the same without."""
    module = denoiser(pipeline)
    found = families.of(module)
    if found is not None:
        tokens, pooled = found.encode(pipeline, prompts)
        guidance = torch.full((len(prompts), 1), found.training_guidance(module), device=tokens.device)
        return _packed(
            tokens, torch.cat([pooled.to(tokens.dtype), guidance.to(tokens.dtype)], dim=1), _extra_rows(module)
        )
    if not has_added_conditioning(module):
        embeds, _ = pipeline.encode_prompt(prompts, pipeline.device, 1, False)
        return embeds
    embeds, _, pooled, _ = pipeline.encode_prompt(
        prompts, device=pipeline.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    size = pipeline.default_sample_size * pipeline.vae_scale_factor
    time_ids = torch.tensor([size, size, 0, 0, size, size], dtype=embeds.dtype, device=embeds.device).expand(
        len(prompts), TIME_IDS
    )
    return _packed(embeds, torch.cat([pooled.to(embeds.dtype), time_ids], dim=1), _extra_rows(module))


encode_prompts = torch.no_grad()(differentiable_conditioning)


def token_rows(module, conditioning: torch.Tensor) -> torch.Tensor:
    """The token part of a conditioning tensor: what cross-attention's key and value (a
    transformer's ``context_embedder``) read."""
    if families.of(module) is None and not has_added_conditioning(module):
        return conditioning
    return conditioning[:, : -_extra_rows(module)]


def _extra(module, conditioning: torch.Tensor) -> torch.Tensor:
    rows = _extra_rows(module)
    return conditioning[:, -rows:].reshape(len(conditioning), -1)[:, : _extra_width(module)]


def pooled_rows(module, conditioning: torch.Tensor) -> torch.Tensor:
    """A transformer's pooled text vector of each prompt in a conditioning tensor."""
    return _extra(module, conditioning)[:, :-1]


def with_guidance(module, conditioning: torch.Tensor, value: float) -> torch.Tensor:
    """The conditioning with the guidance value a distilled transformer reads set to ``value``
    (unchanged for any other denoiser)."""
    if families.of(module) is None or guidance_kind(module) != "distilled":
        return conditioning
    changed = conditioning.clone()
    row, column = divmod(_extra_width(module) - 1, conditioning.shape[-1])
    changed[:, -_extra_rows(module) + row, column] = value
    return changed


def unet_inputs(unet, conditioning: torch.Tensor) -> dict:
    """Keyword arguments of ``unet(latents, timesteps, **...)`` for a batch of conditioning."""
    if not has_added_conditioning(unet):
        return {"encoder_hidden_states": conditioning}
    rows = _extra_rows(unet)
    extra = _extra(unet, conditioning)
    return {
        "encoder_hidden_states": conditioning[:, :-rows],
        "added_cond_kwargs": {"text_embeds": extra[:, :-TIME_IDS], "time_ids": extra[:, -TIME_IDS:]},
    }


def denoiser_inputs(module, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor) -> dict:
    """Keyword arguments of the denoiser's ``forward`` for latents (B, C, H, W), the scheduler's
    timesteps and a batch of conditioning."""
    found = families.of(module)
    if found is None:
        return {"sample": latents, "timestep": timesteps, **unet_inputs(module, conditioning)}
    extra = _extra(module, conditioning)
    return found.inputs(module, latents, timesteps, token_rows(module, conditioning), extra[:, :-1], extra[:, -1])


def predict_noise(module, latents, timesteps, conditioning, parameters: dict | None = None) -> torch.Tensor:
    """The denoiser's output (eps, v or a flow's velocity) in the latents' layout; ``parameters``:
    tensors to use in place of the module's own, by name (``torch.func.functional_call``)."""
    inputs = denoiser_inputs(module, latents, timesteps, conditioning)
    if parameters is None:
        sample = module(**inputs).sample
    else:
        sample = torch.func.functional_call(module, parameters, (), inputs, strict=False).sample
    found = families.of(module)
    return sample if found is None else found.output(module, sample, latents)


def token_streams(pipeline) -> list[tuple[object, int, int]]:
    """The token rows' parts, each made by one tokenizer: ``(tokenizer, first row, rows)``. SD 1.x,
    2.x and XL have one (SDXL's two encoders share positions); SD3 has CLIP's then T5's; FLUX T5's."""
    found = families.of(denoiser(pipeline))
    if found is None:
        return [(pipeline.tokenizer, 0, int(pipeline.tokenizer.model_max_length))]
    return [(getattr(pipeline, name), first, rows) for name, first, rows in found.token_streams(pipeline)]


def text_projections(module, reads: str = "tokens") -> list[tuple[str, torch.nn.Module]]:
    """The linear maps whose input is text alone, by module name: on a UNet every cross-attention
    key and value projection (``reads`` tokens); on a transformer its family's ``text_maps`` that
    read ``reads`` (``tokens`` or ``pooled``)."""
    found = families.of(module)
    if found is None:
        if reads != "tokens":
            return []
        return [(n, m) for n, m in module.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    maps = found.text_maps(module)
    return [(n, m) for n, m in module.named_modules() if maps.get(n) == reads]


def latent_shape(pipeline, pixels: int = 0) -> tuple[int, int, int]:
    """(channels, height, width) of the latents of a square image ``pixels`` wide (0: the model's own size)."""
    module = denoiser(pipeline)
    found = families.of(module)
    channels = module.config.in_channels if found is None else found.latent_channels(module)
    if not pixels:
        size = module.config.sample_size if found is None else pipeline.default_sample_size
        return channels, size, size
    scale = getattr(pipeline, "vae_scale_factor", 8)
    size = pixels // scale
    if found is not None:
        size -= size % 2  # even, as FLUX's 2x2 patches need
        largest = found.largest_latent(module)
        if largest is not None and size > largest:
            raise UserError(
                f"--sample-size {pixels} is larger than this {found.name} transformer draws ({largest * scale} px at most): lower it, or 0 for the model's own size"
            )
    return channels, size, size


def latents_of(pipeline, latents: torch.Tensor, pixels: int) -> torch.Tensor:
    """What ``pipeline(..., output_type="latent")`` returned, as (B, C, H, W) latents."""
    found = families.of(denoiser(pipeline))
    return latents if found is None else found.pipeline_latents(pipeline, latents, pixels)


def encode_images(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training latents of images in [-1, 1]: a draw from the VAE's posterior, shifted (SD3, FLUX)
    and scaled as the family's pipeline does."""
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.sample(generator=generator).float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] of training latents (the inverse of :func:`encode_images`'s scaling)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + shift).sample


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
        output = encoder(tokens.input_ids.to(encoder.device))
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:  # CLIPTextModelWithProjection (SD3's first encoder): its projected end token
            pooled = output.text_embeds
        found.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(found) if found else torch.zeros(0)


def over_length(pipeline, prompts: list[str]) -> list[str]:
    """The prompts with more tokens (start and end included) than the text encoder reads."""
    tokenizer = pipeline.tokenizer
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False).input_ids]
    return [prompt for prompt, length in zip(prompts, lengths) if length > tokenizer.model_max_length]
