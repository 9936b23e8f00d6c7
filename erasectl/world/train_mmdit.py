"""Train the shapes world's second model, an SD3-style MMDiT (``StableDiffusion3Pipeline``), on a CPU.

It draws the same world as the UNet model, decodes with the same VAE (so both share latents and the
judge) and is trained on the same captions; what differs is everything SD3 changes: two CLIP text
encoders with projections and a T5 encoder, joint attention over text and image tokens, adaLN on the
pooled CLIP vector, and flow matching. The objective is diffusers' SD3 training example's: sigmas
drawn from a logit-normal density (Esser et al. 2024, section 3.1), x_t = (1 - sigma) x0 + sigma
noise, velocity target noise - x0, unweighted MSE.

Stages, each saved (an interrupted run resumes at the stage it stopped in): the data set, the VAE
(copied from the UNet world), the latents, the transformer with its three text encoders.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from erasectl.assets import embedded_judge_dir
from erasectl.profiles import write_marker
from erasectl.world import architecture
from erasectl.world.profile import MMDiTWorldProfile
from erasectl.world.tokenizer import t5_tokenizer, write_tokenizer
from erasectl.world.train import cosine_lr, denoiser_step, random_caption, report_stage, shared_stages, write_recipe

MMDIT_FOLDER = "shapes-mmdit"


def mmdit_pipeline(vae, seed: int, tokenizer_dir: Path):
    """A randomly initialised ``StableDiffusion3Pipeline`` of the world's shapes around ``vae``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel

    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(tokenizer_dir, architecture.MMDIT_TEXT_LENGTH))
    tokenizer_3 = t5_tokenizer(max_length=architecture.MMDIT_TEXT_LENGTH)
    clip = architecture.mmdit_clip_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    vae.register_to_config(shift_factor=0.0)  # SD3's pipeline reads the field
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**architecture.mmdit_config()),
        scheduler=FlowMatchEulerDiscreteScheduler(**architecture.flow_scheduler_config()),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**clip)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**clip)),
        tokenizer_2=tokenizer,
        text_encoder_3=T5EncoderModel(T5Config(**architecture.t5_config(len(tokenizer_3), 0, 1))),
        tokenizer_3=tokenizer_3,
    )


def logit_normal_sigmas(count: int, generator: torch.Generator) -> torch.Tensor:
    """sigma = sigmoid(u), u ~ N(0, 1): the SD3 paper's default timestep density (section 3.1)."""
    return torch.sigmoid(torch.randn(count, generator=generator))


def train_transformer(pipeline, latent_mean, latent_std, labels, config, progress=None):
    """Train the pipeline's transformer and text encoders together in place (EMA weights at the end)."""
    from diffusers.training_utils import EMAModel

    modules = [pipeline.transformer, pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3]
    parameters = [p for module in modules for p in module.parameters()]
    for module in modules:
        module.train()
    ema = EMAModel(parameters, decay=config.ema_decay)
    optimizer = torch.optim.AdamW(parameters, lr=config.transformer_lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, config.transformer_steps, 200))
    rng = np.random.default_rng(config.seed + 13)
    generator = torch.Generator().manual_seed(config.seed + 14)
    scaling = pipeline.vae.config.scaling_factor
    steps, batch, timesteps_count = config.transformer_steps, config.transformer_batch_size, 1000
    for step in range(steps):
        index = rng.integers(0, len(labels), batch)
        captions = [random_caption(labels[i], rng, config.empty_caption_share) for i in index]
        tokens, _, pooled, _ = pipeline.encode_prompt(
            captions, None, None, do_classifier_free_guidance=False, max_sequence_length=architecture.MMDIT_TEXT_LENGTH
        )
        picked = torch.from_numpy(index)
        draw = torch.randn(latent_mean[picked].shape, generator=generator)
        clean = (latent_mean[picked] + latent_std[picked] * draw) * scaling  # the VAE's shift is 0
        noise = torch.randn(clean.shape, generator=generator)
        sigmas = logit_normal_sigmas(batch, generator)
        noisy = (1 - sigmas.view(-1, 1, 1, 1)) * clean + sigmas.view(-1, 1, 1, 1) * noise
        velocity = pipeline.transformer(
            hidden_states=noisy,
            timestep=sigmas * timesteps_count,
            encoder_hidden_states=tokens,
            pooled_projections=pooled,
        ).sample
        loss = F.mse_loss(velocity, noise - clean)
        denoiser_step(loss, parameters, optimizer, schedule, ema)
        report_stage(progress, "transformer", step + 1, steps, loss=loss.item())
    ema.copy_to(parameters)
    for module in modules:
        module.eval()
    return pipeline


def train_mmdit_world(out_dir: str | Path, config, progress=None) -> dict[str, Path]:
    """Run every stage (the shared ones load when ``out_dir`` has them); return the folders of the
    pipeline and of the judge, which is the UNet world's."""
    out_dir = Path(out_dir)
    started = time.time()
    stages = shared_stages(out_dir, config, progress, own_vae=False)
    pipeline_dir = out_dir / MMDIT_FOLDER
    if not (pipeline_dir / "model_index.json").exists():
        pipeline = mmdit_pipeline(stages.vae, config.seed + 12, stages.work / "tokenizer-mmdit")
        train_transformer(pipeline, *stages.latents, stages.labels, config, progress)
        pipeline.save_pretrained(pipeline_dir, safe_serialization=True)
        for name in ("tokenizer", "tokenizer_2"):  # the BPE files too, as the UNet world's folder has them
            write_tokenizer(pipeline_dir / name, architecture.MMDIT_TEXT_LENGTH)
        write_marker(pipeline_dir, MMDiTWorldProfile())
    write_recipe(out_dir / "training-mmdit.json", config, started)
    return {"pipeline": pipeline_dir, "judge": embedded_judge_dir()}
