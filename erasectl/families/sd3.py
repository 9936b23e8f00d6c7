"""Stable Diffusion 3 and 3.5 (``SD3Transformer2DModel``): two CLIP encoders and T5, classifier-free guidance.

The token rows are the pipeline's own: CLIP-L and CLIP-G penultimate states side by side, padded to
T5's width, then T5's states (zeros when the folder has no T5, as ``StableDiffusion3Pipeline``
runs it); the pooled vector is both CLIPs' projected end-token states (2048 wide on SD3/3.5).
The denoiser reads the timestep on the scheduler's 0 to 1000 scale.
"""

from __future__ import annotations

from erasectl.families.base import Rule, TransformerFamily

_BLOCK, _X, _C = r"transformer_blocks\.(\d+)\.", r"joint_blocks.\1.x_block.", r"joint_blocks.\1.context_block."
# diffusers' names -> Stability AI's MMDiT (the sd3.5_medium.safetensors layout, without its
# "model.diffusion_model." prefix); q, k and v are fused there, in this order
RULES: list[Rule] = [
    (r"pos_embed", "", None, False),
    (r"pos_embed\.proj", "x_embedder.proj", None, False),
    (r"time_text_embed\.timestep_embedder\.linear_1", "t_embedder.mlp.0", None, False),
    (r"time_text_embed\.timestep_embedder\.linear_2", "t_embedder.mlp.2", None, False),
    (r"time_text_embed\.text_embedder\.linear_1", "y_embedder.mlp.0", None, False),
    (r"time_text_embed\.text_embedder\.linear_2", "y_embedder.mlp.2", None, False),
    (r"context_embedder", "context_embedder", None, False),
    (r"proj_out", "final_layer.linear", None, False),
    (r"norm_out\.linear", "final_layer.adaLN_modulation.1", None, False),
    *[(_BLOCK + rf"attn\.to_{x}", _X + "attn.qkv", i, False) for i, x in enumerate("qkv")],
    *[(_BLOCK + rf"attn\.add_{x}_proj", _C + "attn.qkv", i, False) for i, x in enumerate("qkv")],
    *[(_BLOCK + rf"attn2\.to_{x}", _X + "attn2.qkv", i, False) for i, x in enumerate("qkv")],
    (_BLOCK + r"attn\.norm_q", _X + "attn.ln_q", None, False),
    (_BLOCK + r"attn\.norm_k", _X + "attn.ln_k", None, False),
    (_BLOCK + r"attn\.norm_added_q", _C + "attn.ln_q", None, False),
    (_BLOCK + r"attn\.norm_added_k", _C + "attn.ln_k", None, False),
    (_BLOCK + r"attn2\.norm_q", _X + "attn2.ln_q", None, False),
    (_BLOCK + r"attn2\.norm_k", _X + "attn2.ln_k", None, False),
    (_BLOCK + r"attn\.to_out\.0", _X + "attn.proj", None, False),
    (_BLOCK + r"attn\.to_add_out", _C + "attn.proj", None, False),
    (_BLOCK + r"attn2\.to_out\.0", _X + "attn2.proj", None, False),
    (_BLOCK + r"norm1\.linear", _X + "adaLN_modulation.1", None, False),
    (_BLOCK + r"norm1_context\.linear", _C + "adaLN_modulation.1", None, False),
    (_BLOCK + r"ff\.net\.0\.proj", _X + "mlp.fc1", None, False),
    (_BLOCK + r"ff\.net\.2", _X + "mlp.fc2", None, False),
    (_BLOCK + r"ff_context\.net\.0\.proj", _C + "mlp.fc1", None, False),
    (_BLOCK + r"ff_context\.net\.2", _C + "mlp.fc2", None, False),
]


class SD3(TransformerFamily):
    name = "sd3"
    denoiser_class = "SD3Transformer2DModel"
    rules = RULES

    def guidance(self, transformer) -> str:
        return "classifier-free"

    def sampling_defaults(self, transformer) -> tuple[int, float]:
        return 28, 7.0  # StableDiffusion3Pipeline's num_inference_steps and guidance_scale

    def sequence_length(self, pipeline) -> int:
        # StableDiffusion3Pipeline's max_sequence_length default, or less where T5's tokenizer says
        # so (the MMDiT shapes world reads 16 tokens; SD3's own T5 tokenizer allows 512)
        tokenizer = getattr(pipeline, "tokenizer_3", None)
        return 256 if tokenizer is None else min(256, int(tokenizer.model_max_length))

    def encode(self, pipeline, prompts):
        tokens, _, pooled, _ = pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=pipeline.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=self.sequence_length(pipeline),
        )
        return tokens, pooled

    def inputs(self, transformer, latents, timesteps, tokens, pooled, guidance) -> dict:
        return {
            "hidden_states": latents,
            "timestep": timesteps,
            "encoder_hidden_states": tokens,
            "pooled_projections": pooled,
        }

    def token_streams(self, pipeline) -> list[tuple[str, int, int]]:
        clip = pipeline.tokenizer_max_length  # both CLIPs' states side by side, then T5's
        streams = [("tokenizer", 0, clip)]
        if getattr(pipeline, "text_encoder_3", None) is not None:
            streams.append(("tokenizer_3", clip, self.sequence_length(pipeline)))
        return streams

    def swapped_modules(self, transformer) -> tuple[str, ...]:
        # the last block's context adaLN is a final-layer one (context_pre_only): its halves swap too
        return ("norm_out.linear", f"transformer_blocks.{transformer.config.num_layers - 1}.norm1_context.linear")

    def largest_latent(self, transformer) -> int | None:
        # a learned position table, cropped to the image: larger latents have no positions
        return transformer.config.pos_embed_max_size * transformer.config.patch_size

    def latent_channels(self, transformer) -> int:
        return transformer.config.in_channels

    def text_maps(self, transformer) -> dict[str, str]:
        # context_embedder: every token row; time_text_embed.text_embedder.linear_1: the pooled vector
        return {"context_embedder": "tokens", "time_text_embed.text_embedder.linear_1": "pooled"}


FAMILY = SD3()
