"""FLUX.1 (``FluxTransformer2DModel``): CLIP pooled and T5 tokens; dev embeds the guidance, schnell takes none.

The denoiser reads latents packed in 2x2 patches (``FluxPipeline._pack_latents``) with their grid
positions (``img_ids``) and the text rows' (``txt_ids``, zeros), and the timestep on a 0 to 1 scale
(the pipeline divides the scheduler's by 1000). FLUX.1-dev is guidance-distilled: the guidance scale
is an input of one pass, never two passes combined; FLUX.1-schnell is timestep-distilled and takes
no guidance (``guidance_embeds`` false).
"""

from __future__ import annotations

import torch

from erasectl.families.base import Rule, TransformerFamily

_DOUBLE, _SINGLE = r"transformer_blocks\.(\d+)\.", r"single_transformer_blocks\.(\d+)\."
# diffusers' names -> Black Forest Labs' (the flux1-dev.safetensors layout); q, k and v (and the
# single blocks' MLP input) are fused there, in this order
RULES: list[Rule] = [
    (r"x_embedder", "img_in", None, False),
    (r"context_embedder", "txt_in", None, False),
    (r"time_text_embed\.timestep_embedder\.linear_1", "time_in.in_layer", None, False),
    (r"time_text_embed\.timestep_embedder\.linear_2", "time_in.out_layer", None, False),
    (r"time_text_embed\.text_embedder\.linear_1", "vector_in.in_layer", None, False),
    (r"time_text_embed\.text_embedder\.linear_2", "vector_in.out_layer", None, False),
    (r"time_text_embed\.guidance_embedder\.linear_1", "guidance_in.in_layer", None, False),
    (r"time_text_embed\.guidance_embedder\.linear_2", "guidance_in.out_layer", None, False),
    (r"proj_out", "final_layer.linear", None, False),
    (r"norm_out\.linear", "final_layer.adaLN_modulation.1", None, False),
    (_DOUBLE + r"norm1\.linear", r"double_blocks.\1.img_mod.lin", None, False),
    (_DOUBLE + r"norm1_context\.linear", r"double_blocks.\1.txt_mod.lin", None, False),
    *[(_DOUBLE + rf"attn\.to_{x}", r"double_blocks.\1.img_attn.qkv", i, False) for i, x in enumerate("qkv")],
    *[(_DOUBLE + rf"attn\.add_{x}_proj", r"double_blocks.\1.txt_attn.qkv", i, False) for i, x in enumerate("qkv")],
    (_DOUBLE + r"attn\.norm_q", r"double_blocks.\1.img_attn.norm.query_norm", None, True),
    (_DOUBLE + r"attn\.norm_k", r"double_blocks.\1.img_attn.norm.key_norm", None, True),
    (_DOUBLE + r"attn\.norm_added_q", r"double_blocks.\1.txt_attn.norm.query_norm", None, True),
    (_DOUBLE + r"attn\.norm_added_k", r"double_blocks.\1.txt_attn.norm.key_norm", None, True),
    (_DOUBLE + r"attn\.to_out\.0", r"double_blocks.\1.img_attn.proj", None, False),
    (_DOUBLE + r"attn\.to_add_out", r"double_blocks.\1.txt_attn.proj", None, False),
    (_DOUBLE + r"ff\.net\.0\.proj", r"double_blocks.\1.img_mlp.0", None, False),
    (_DOUBLE + r"ff\.net\.2", r"double_blocks.\1.img_mlp.2", None, False),
    (_DOUBLE + r"ff_context\.net\.0\.proj", r"double_blocks.\1.txt_mlp.0", None, False),
    (_DOUBLE + r"ff_context\.net\.2", r"double_blocks.\1.txt_mlp.2", None, False),
    (_SINGLE + r"norm\.linear", r"single_blocks.\1.modulation.lin", None, False),
    *[(_SINGLE + rf"attn\.to_{x}", r"single_blocks.\1.linear1", i, False) for i, x in enumerate("qkv")],
    (_SINGLE + r"proj_mlp", r"single_blocks.\1.linear1", 3, False),
    (_SINGLE + r"attn\.norm_q", r"single_blocks.\1.norm.query_norm", None, True),
    (_SINGLE + r"attn\.norm_k", r"single_blocks.\1.norm.key_norm", None, True),
    (_SINGLE + r"proj_out", r"single_blocks.\1.linear2", None, False),
]


def _pipeline_class():
    from diffusers import FluxPipeline

    return FluxPipeline


class Flux(TransformerFamily):
    name = "flux"
    denoiser_class = "FluxTransformer2DModel"
    rules = RULES

    def guidance(self, transformer) -> str:
        return "distilled" if transformer.config.guidance_embeds else "none"

    def sampling_defaults(self, transformer) -> tuple[int, float]:
        # dev: FluxPipeline's defaults; schnell: its model card (4 steps, guidance 0: none is read)
        return (28, 3.5) if transformer.config.guidance_embeds else (4, 0.0)

    def sequence_length(self, pipeline) -> int:
        # FluxPipeline's default is 512; schnell's model card runs 256 (as UCE's FLUX script does)
        return 512 if pipeline.transformer.config.guidance_embeds else 256

    def encode(self, pipeline, prompts):
        tokens, pooled, _ = pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=pipeline.device,
            num_images_per_prompt=1,
            max_sequence_length=self.sequence_length(pipeline),
        )
        return tokens, pooled

    def inputs(self, transformer, latents, timesteps, tokens, pooled, guidance) -> dict:
        batch, channels, height, width = latents.shape
        packer = _pipeline_class()
        image_ids = packer._prepare_latent_image_ids(batch, height // 2, width // 2, latents.device, latents.dtype)
        return {
            "hidden_states": packer._pack_latents(latents, batch, channels, height, width),
            "timestep": timesteps.to(latents.dtype) / 1000,
            "guidance": guidance.float() if transformer.config.guidance_embeds else None,
            "pooled_projections": pooled,
            "encoder_hidden_states": tokens,
            "txt_ids": torch.zeros(tokens.shape[1], 3, device=tokens.device, dtype=latents.dtype),
            "img_ids": image_ids,
        }

    def output(self, transformer, sample, latents):
        height, width = latents.shape[-2:]
        return _pipeline_class()._unpack_latents(sample, height, width, 1)

    def pipeline_latents(self, pipeline, latents, pixels):
        return _pipeline_class()._unpack_latents(latents, pixels, pixels, pipeline.vae_scale_factor)

    def token_streams(self, pipeline) -> list[tuple[str, int, int]]:
        return [("tokenizer_2", 0, self.sequence_length(pipeline))]  # T5 alone; CLIP gives only the pooled vector

    def latent_channels(self, transformer) -> int:
        return transformer.config.in_channels // 4

    def text_maps(self, transformer) -> dict[str, str]:
        # as UCE's FLUX script (uce_flux_edit.py): T5 tokens through context_embedder, CLIP's pooled
        # vector through time_text_embed.text_embedder.linear_1
        return {"context_embedder": "tokens", "time_text_embed.text_embedder.linear_1": "pooled"}

    def sampling_sigmas(self, num_steps: int):
        import numpy as np

        return np.linspace(1.0, 1 / num_steps, num_steps)  # FluxPipeline's

    def training_guidance(self, transformer) -> float:
        return 3.5  # FluxPipeline's guidance_scale default; diffusers' FLUX training scripts' --guidance_scale


FAMILY = Flux()
