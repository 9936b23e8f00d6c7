"""Stable Diffusion 3 and 3.5 (``SD3Transformer2DModel``): two CLIP encoders and T5, classifier-free guidance.

The token rows are the pipeline's own: CLIP-L and CLIP-G penultimate states side by side, padded to
T5's width, then T5's states (zeros when the folder has no T5, as ``StableDiffusion3Pipeline``
runs it); the pooled vector is both CLIPs' projected end-token states (2048 wide on SD3/3.5).
The denoiser reads the timestep on the scheduler's 0 to 1000 scale.
"""

from __future__ import annotations

from erasectl.families.base import TransformerFamily


class SD3(TransformerFamily):
    name = "sd3"
    denoiser_class = "SD3Transformer2DModel"

    def guidance(self, transformer) -> str:
        return "classifier-free"

    def sampling_defaults(self, transformer) -> tuple[int, float]:
        return 28, 7.0  # StableDiffusion3Pipeline's num_inference_steps and guidance_scale

    def sequence_length(self, pipeline) -> int:
        return 256  # StableDiffusion3Pipeline's max_sequence_length default

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

    def latent_channels(self, transformer) -> int:
        return transformer.config.in_channels

    def text_maps(self, transformer) -> dict[str, str]:
        # context_embedder: every token row; time_text_embed.text_embedder.linear_1: the pooled vector
        return {"context_embedder": "tokens", "time_text_embed.text_embedder.linear_1": "pooled"}


FAMILY = SD3()
