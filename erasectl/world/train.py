"""Train the embedded shapes-world model and its CLIP judge from scratch, on a CPU, seeded.

Stages (each saved, so an interrupted run resumes at the stage it stopped in):
1. render the data set;
2. the VAE (``AutoencoderKL``) on the rendered images;
3. the latents of every image, and the VAE's ``scaling_factor`` (1 / their standard deviation);
4. the UNet and the text encoder together, on captions drawn fresh each step (full, partial,
   synonym, generic and empty ones, the last for classifier-free guidance);
5. the judge (``CLIPModel``) with a loss in which every true caption must beat every false one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from erasectl.assets import embedded_pipeline_dir
from erasectl.errors import ConfigError
from erasectl.judge import image_embeddings, text_embeddings
from erasectl.world import architecture
from erasectl.world.render import render_dataset
from erasectl.world.tokenizer import write_tokenizer
from erasectl.world.vocabulary import Label, all_captions, caption_is_true

Progress = Callable[[str, int, int, dict], None]
JUDGE_IMAGE_MEAN = [0.2, 0.2, 0.2]
JUDGE_IMAGE_STD = [0.3, 0.3, 0.3]


@dataclass
class WorldTrainingConfig:
    seed: int = 0
    n_images: int = 60_000
    vae_steps: int = 1_500
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    unet_steps: int = 4_000
    unet_batch_size: int = 128
    unet_lr: float = 1e-3
    transformer_steps: int = 4_000
    transformer_batch_size: int = 128
    transformer_lr: float = 5e-4
    empty_caption_share: float = 0.1
    ema_decay: float = 0.999
    judge_steps: int = 2_000
    judge_batch_size: int = 128
    judge_lr: float = 5e-4

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "seed" and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")


def random_caption(label: Label, rng: np.random.Generator, empty_share: float) -> str:
    if rng.random() < empty_share:
        return ""
    noun = rng.choice(["shape", "synonym", "generic"], p=[0.6, 0.25, 0.15])
    return label.caption(colour=bool(rng.random() < 0.75), style=bool(rng.random() < 0.4), noun=str(noun))


def cosine_lr(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def report_stage(progress: Progress | None, stage: str, step: int, total: int, **logs: float) -> None:
    if progress is not None:
        progress(stage, step, total, logs)


def train_vae(images: np.ndarray, config: WorldTrainingConfig, progress: Progress | None = None):
    from diffusers import AutoencoderKL

    torch.manual_seed(config.seed)
    vae = AutoencoderKL(**architecture.vae_config())
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, config.vae_steps))
    rng = np.random.default_rng(config.seed + 1)
    for step in range(config.vae_steps):
        batch = _to_tensor(images[rng.integers(0, len(images), config.vae_batch_size)])
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        recon = F.mse_loss(reconstruction, batch) + 0.5 * F.l1_loss(reconstruction, batch)
        loss = recon + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        report_stage(progress, "vae", step + 1, config.vae_steps, loss=recon.item())
    return vae.eval()


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        dist = vae.encode(_to_tensor(images[start : start + batch_size])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    labels: list[Label],
    tokenizer,
    scaling_factor: float,
    config: WorldTrainingConfig,
    progress: Progress | None = None,
):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(config.seed + 2)
    unet = UNet2DConditionModel(**architecture.unet_config())
    text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(tokenizer)))
    noise_scheduler = DDPMScheduler.from_config(architecture.scheduler_config())
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    ema = EMAModel(parameters, decay=config.ema_decay)
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, config.unet_steps, 200))
    rng = np.random.default_rng(config.seed + 3)
    generator = torch.Generator().manual_seed(config.seed + 4)
    for step in range(config.unet_steps):
        index = rng.integers(0, len(labels), config.unet_batch_size)
        captions = [random_caption(labels[i], rng, config.empty_caption_share) for i in index]
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        index_t = torch.from_numpy(index)
        eps_latent = torch.randn(latent_mean[index_t].shape, generator=generator)
        latents = (latent_mean[index_t] + latent_std[index_t] * eps_latent) * scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text_encoder(ids).last_hidden_state).sample
        loss = F.mse_loss(prediction, noise)
        denoiser_step(loss, parameters, optimizer, scheduler, ema)
        report_stage(progress, "unet", step + 1, config.unet_steps, loss=loss.item())
    ema.copy_to(parameters)
    return unet.eval(), text_encoder.eval()


def denoiser_step(loss: torch.Tensor, parameters: list, optimizer, schedule, ema) -> None:
    """One step of a world model's training: clipped gradients, the learning-rate schedule, the EMA."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    schedule.step()
    ema.step(parameters)


def _text_config(tokenizer) -> dict:
    return architecture.text_encoder_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def judge_image_tensor(images: np.ndarray) -> torch.Tensor:
    """Images as the judge's ``CLIPImageProcessor`` would hand them over."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(JUDGE_IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(JUDGE_IMAGE_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def all_true_caption_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Each true pair must beat every false one of its row: softplus(logsumexp(false) - true).

    Plain CLIP loss treats the other true captions of a batch as negatives, and with many images
    sharing a colour it learns colour alone. Here true captions never compete with each other.
    """
    false_lse = torch.logsumexp(logits.masked_fill(truth, float("-inf")), dim=1, keepdim=True)
    per_pair = F.softplus(false_lse - logits)
    return (per_pair * truth).sum() / truth.sum()


def train_judge(
    images: np.ndarray, labels: list[Label], tokenizer, config: WorldTrainingConfig, progress: Progress | None = None
):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(config.seed + 5)
    judge = CLIPModel(
        CLIPConfig(
            text_config=_text_config(tokenizer),
            vision_config=architecture.judge_vision_config(),
            projection_dim=architecture.judge_vision_config()["projection_dim"],
        )
    )
    captions = all_captions()
    text_inputs = tokenizer(captions, padding=True, return_tensors="pt")
    truth_table = {label: torch.tensor([caption_is_true(c, label) for c in captions]) for label in set(labels)}
    optimizer = torch.optim.AdamW(judge.parameters(), lr=config.judge_lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, config.judge_steps))
    rng = np.random.default_rng(config.seed + 6)
    generator = torch.Generator().manual_seed(config.seed + 7)
    for step in range(config.judge_steps):
        index = rng.integers(0, len(labels), config.judge_batch_size)
        pixels = judge_image_tensor(images[index])
        # Generated images are softer and noisier than renders: blur and noise half of each batch.
        blurred = F.avg_pool2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        soften = (torch.rand(len(index), 1, 1, 1, generator=generator) < 0.5).float()
        pixels = soften * (0.5 * pixels + 0.5 * blurred) + (1 - soften) * pixels
        pixels = pixels + 0.05 * torch.randn(pixels.shape, generator=generator)
        image_embeds = image_embeddings(judge, pixels)
        text_embeds = text_embeddings(judge, text_inputs.input_ids, text_inputs.attention_mask)
        logits = judge.logit_scale.exp() * image_embeds @ text_embeds.T
        truth = torch.stack([truth_table[labels[i]] for i in index])
        loss = all_true_caption_loss(logits, truth) + all_true_caption_loss(logits.T, truth.T)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            judge.logit_scale.clamp_(0, math.log(100))
        report_stage(progress, "judge", step + 1, config.judge_steps, loss=loss.item())
    return judge.eval()


@dataclass
class SharedStages:
    """What both worlds' models train on: the data set, the VAE and the latents' distributions."""

    work: Path
    images: np.ndarray
    labels: list[Label]
    vae: object
    latents: tuple[torch.Tensor, torch.Tensor]  # the VAE posterior's mean and std of every image


def shared_stages(out_dir: Path, config: WorldTrainingConfig, progress: Progress | None, own_vae: bool) -> SharedStages:
    """The data, the VAE (trained, or with ``own_vae`` False the UNet world's shipped one) and the
    latents, each loaded from ``out_dir/stages`` when an earlier run saved it."""
    from diffusers import AutoencoderKL

    work = out_dir / "stages"
    work.mkdir(parents=True, exist_ok=True)
    images, labels = render_dataset(config.n_images, seed=config.seed)
    report_stage(progress, "data", 1, 1)

    vae_dir = work / "vae"
    if (vae_dir / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(vae_dir)
    else:
        vae = (
            train_vae(images, config, progress)
            if own_vae
            else AutoencoderKL.from_pretrained(embedded_pipeline_dir() / "vae")
        )
        vae.save_pretrained(vae_dir)

    latents_file = work / "latents.pt"
    if latents_file.exists():
        latent_mean, latent_std = torch.load(latents_file)
    else:
        latent_mean, latent_std = encode_latents(vae, images)
        torch.save((latent_mean, latent_std), latents_file)
    vae.register_to_config(scaling_factor=float(1.0 / latent_mean.std()))
    return SharedStages(work, images, labels, vae, (latent_mean, latent_std))


def train_world(out_dir: str | Path, config: WorldTrainingConfig, progress: Progress | None = None) -> dict[str, Path]:
    """Run every stage; return the folders of the pipeline and the judge."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    out_dir = Path(out_dir)
    started = time.time()
    stages = shared_stages(out_dir, config, progress, own_vae=True)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(stages.work / "tokenizer"))
    images, labels, vae = stages.images, stages.labels, stages.vae
    latent_mean, latent_std = stages.latents
    scaling_factor = vae.config.scaling_factor

    pipeline_dir = out_dir / "shapes-sd"
    if not (pipeline_dir / "model_index.json").exists():
        unet, text_encoder = train_unet(latent_mean, latent_std, labels, tokenizer, scaling_factor, config, progress)
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=DDIMScheduler(**architecture.scheduler_config()),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.save_pretrained(pipeline_dir, safe_serialization=True)
        # The BPE files too, so that any transformers version's CLIPTokenizer reads the folder.
        write_tokenizer(pipeline_dir / "tokenizer")

    judge_dir = out_dir / "shapes-judge"
    if not (judge_dir / "config.json").exists():
        judge = train_judge(images, labels, tokenizer, config, progress)
        judge.save_pretrained(judge_dir, safe_serialization=True)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": architecture.IMAGE_SIZE},
            crop_size={"height": architecture.IMAGE_SIZE, "width": architecture.IMAGE_SIZE},
            image_mean=JUDGE_IMAGE_MEAN,
            image_std=JUDGE_IMAGE_STD,
        )
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(judge_dir)
        write_tokenizer(judge_dir)

    write_recipe(out_dir / "training.json", config, started)
    return {"pipeline": pipeline_dir, "judge": judge_dir}


def write_recipe(path: Path, config: WorldTrainingConfig, started: float) -> None:
    recipe = {"config": asdict(config), "wall_time_s": round(time.time() - started, 1)}
    path.write_text(json.dumps(recipe, indent=2) + "\n")
