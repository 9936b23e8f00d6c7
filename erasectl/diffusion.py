"""The forward process and what the UNet predicts, for every scheduler a pipeline may carry.

A pipeline's scheduler is a *sampler* (PNDM in SD 1.x folders, Euler in SDXL's, DPM-Solver++ in
many fine-tunes). Training noise must come from the model's *training* process instead: DDPM with
the same betas, whatever the sampler; ``add_noise`` of a sampler is either keyed to its own
inference timesteps (Euler raises for an arbitrary t) or returns x0 + sigma eps, which is not the
UNet's input scale. Targets follow the model's ``prediction_type``: epsilon (SD 1.x, SDXL) or
v_prediction (SD 2.x 768-v), as diffusers' own training scripts do.
"""

from __future__ import annotations

import torch

from erasectl.errors import UserError

PREDICTION_TYPES = ("epsilon", "v_prediction")


def prediction_type(pipeline) -> str:
    """What the UNet predicts, from the scheduler config; a ``sample`` model is refused."""
    kind = pipeline.scheduler.config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise UserError(
            f"this model predicts {kind!r}; erasectl's methods need an epsilon or v_prediction model (SD 1.x, 2.x, SDXL)"
        )
    return kind


def training_scheduler(pipeline):
    """The model's training process (DDPM with the pipeline's betas and prediction type)."""
    from diffusers import DDPMScheduler

    prediction_type(pipeline)
    return DDPMScheduler.from_config(pipeline.scheduler.config)


def noise_target(scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What a perfect UNet outputs at ``add_noise(clean, noise, t)``: eps, or v = alpha_t eps - sigma_t x0."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return noise


def sampling_scheduler(pipeline, num_steps: int, kind: str = "own"):
    """A fresh scheduler for sampling ``num_steps``: the pipeline's own class (``own``) or DDIM
    built from the same config (``ddim``). Fresh, because multistep samplers keep state."""
    from diffusers import DDIMScheduler

    cls = type(pipeline.scheduler) if kind == "own" else DDIMScheduler
    scheduler = cls.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(num_steps)
    return scheduler
