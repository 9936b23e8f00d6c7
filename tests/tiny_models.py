"""Tiny, randomly initialised pipelines of the SD families, built from configs (as diffusers'
own pipeline tests do), for tests that need the structure of a real model, not its weights."""

import torch

from erasectl.world.tokenizer import t5_tokenizer, write_tokenizer


def tiny_pipeline(folder, family: str, scheduler_class: str = "DDIMScheduler"):
    """A randomly initialised pipeline with the family's structure at a tiny width: SD 2.x has
    linear projections, v-prediction and GELU; SDXL two text encoders (the second with a
    projection for the pooled embedding) and added size/crop conditioning."""
    import diffusers
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(folder / "tok"))
    sd2, xl = family == "sd2", family == "sdxl"

    def text_config(width):
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_act="quick_gelu" if family == "sd1" else "gelu",
            projection_dim=width,
        )

    # SDXL's two encoders differ in width (768 and 1280 in the real one; single-file loading
    # tells them apart by it), and the UNet attends to both, concatenated.
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D") if not xl else ("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if not xl else ("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32 + 48 if xl else 32,
        attention_head_dim=(2, 4) if sd2 or xl else 8,
        use_linear_projection=sd2 or xl,
        norm_num_groups=16,
        **(
            dict(
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=48 + 6 * 8,
                transformer_layers_per_block=(1, 2),
            )
            if xl
            else {}
        ),
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=16,
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction" if sd2 else "epsilon",
    )
    if xl:
        pipeline = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config(32)),
            text_encoder_2=CLIPTextModelWithProjection(text_config(48)),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config(32)),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if scheduler_class != "DDIMScheduler":
        pipeline.scheduler = getattr(diffusers, scheduler_class).from_config(scheduler.config)
    pipeline.save_pretrained(folder / family)
    return folder / family


def tiny_transformer_pipeline(folder, family: str):
    """A randomly initialised pipeline of a diffusion-transformer family at a tiny width:
    ``sd3`` (two CLIP encoders with projections and T5, an MMDiT, flow matching), ``sd3-no-t5``
    (the same saved without T5, as SD3 is often run) or
    ``flux-dev`` / ``flux-schnell`` (CLIP pooled and T5, dual- and single-stream blocks, rotary
    positions; dev embeds the guidance scale)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
    )

    from erasectl.world.vocabulary import COLOURS, SHAPES, STYLES

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(folder / "tok"))
    t5_tok = t5_tokenizer(["a", "an", "of", "photo", "shape", *SHAPES, *COLOURS, *STYLES])

    def clip(width, projection):
        config = CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=width,
        )  # fmt: skip
        return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)

    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )  # fmt: skip
    )
    sd3 = family.startswith("sd3")
    scheduler = (
        FlowMatchEulerDiscreteScheduler(shift=3.0)
        if sd3
        else FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    )  # as SD3's and FLUX.1's scheduler configs
    if sd3:
        vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=16, norm_num_groups=16,
                            sample_size=16, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                            use_post_quant_conv=False)  # fmt: skip
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=32 + 32, out_channels=16,
            pos_embed_max_size=16,
        )  # fmt: skip
        pipeline = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=clip(32, True), tokenizer=tokenizer,
            text_encoder_2=clip(32, True), tokenizer_2=tokenizer,
            text_encoder_3=None if family == "sd3-no-t5" else t5,
            tokenizer_3=None if family == "sd3-no-t5" else t5_tok,
        )  # fmt: skip
    else:
        vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=16,
                            sample_size=16, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False,
                            use_post_quant_conv=False)  # fmt: skip
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=family == "flux-dev", axes_dims_rope=(2, 2, 4),
        )  # fmt: skip
        pipeline = FluxPipeline(
            scheduler=scheduler, vae=vae, text_encoder=clip(32, False), tokenizer=tokenizer, text_encoder_2=t5,
            tokenizer_2=t5_tok, transformer=transformer,
        )  # fmt: skip
    pipeline.save_pretrained(folder / family)
    return folder / family
