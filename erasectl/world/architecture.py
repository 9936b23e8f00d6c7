"""Configurations of the embedded model and judge: exactly Stable Diffusion's classes, made tiny."""

from __future__ import annotations

from typing import Any

from erasectl.world.render import IMAGE_SIZE

LATENT_CHANNELS = 4
LATENT_SIZE = IMAGE_SIZE // 4
TEXT_WIDTH = 64


def vae_config() -> dict[str, Any]:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def unet_config() -> dict[str, Any]:
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def text_encoder_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def judge_vision_config() -> dict[str, Any]:
    return dict(
        hidden_size=96,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=4,
        projection_dim=64,
    )


def scheduler_config() -> dict[str, Any]:
    # Stable Diffusion 1.x's noise schedule, so every sampler of the family fits the model.
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


# The MMDiT world (StableDiffusion3Pipeline): two CLIP encoders side by side make the T5 width, as
# SD3's CLIP-L and CLIP-G (768 + 1280) are padded to T5's 4096; prompts are short, so 16 tokens each.
MMDIT_TEXT_LENGTH = 16
MMDIT_CLIP_WIDTH = 64
MMDIT_T5_WIDTH = 2 * MMDIT_CLIP_WIDTH


def mmdit_config() -> dict[str, Any]:
    return dict(
        sample_size=LATENT_SIZE,
        patch_size=1,  # 8 x 8 latents: one token per latent pixel
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=5,
        attention_head_dim=32,
        num_attention_heads=3,
        joint_attention_dim=MMDIT_T5_WIDTH,
        caption_projection_dim=96,  # the blocks' width: both streams are as wide
        pooled_projection_dim=2 * MMDIT_CLIP_WIDTH,
        pos_embed_max_size=LATENT_SIZE,
    )


def mmdit_clip_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> dict[str, Any]:
    return dict(
        text_encoder_config(vocab_size, bos_token_id, eos_token_id, pad_token_id),
        hidden_size=MMDIT_CLIP_WIDTH,
        intermediate_size=4 * MMDIT_CLIP_WIDTH,
        num_hidden_layers=3,  # SD3 reads the penultimate layer's states
        projection_dim=MMDIT_CLIP_WIDTH,
    )


def t5_config(vocab_size: int, pad_token_id: int, eos_token_id: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        d_model=MMDIT_T5_WIDTH,
        d_kv=32,
        d_ff=2 * MMDIT_T5_WIDTH,
        num_layers=2,
        num_heads=4,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=pad_token_id,
    )


def flow_scheduler_config() -> dict[str, Any]:
    # SD3 shifts its schedule by resolution (3.0 at 1024 px, from 1.0 at 256 px); 32 px needs none.
    return dict(num_train_timesteps=1000, shift=1.0)
