"""Our own small DDIM loop over the pipeline's scheduler: partial sampling to an intermediate x_t.

ESD needs x_t drawn by sampling *under the concept* and stopped part-way. diffusers pipelines give
only final images (or latents), so, rather than patching them, we step the scheduler ourselves.
"""

from __future__ import annotations

import torch

from erasectl.architecture import predict_noise


def ddim_scheduler(pipeline, num_steps: int):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(num_steps)
    return scheduler


def guided_noise(unet, latents, timesteps, conditional, unconditional, guidance: float) -> torch.Tensor:
    """Classifier-free guided noise prediction, both branches in one batched UNet call."""
    batch = latents.shape[0]
    both = predict_noise(
        unet,
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        torch.cat([conditional.expand(batch, -1, -1), unconditional.expand(batch, -1, -1)]),
    )
    with_concept, without = both.chunk(2)
    return without + guidance * (with_concept - without)


@torch.no_grad()
def sample_trajectory(unet, scheduler, latents, conditional, unconditional, guidance: float, stop: int | None = None):
    """Run DDIM from ``latents`` for ``stop`` steps (all by default).

    Returns ``(states, timesteps)``: ``states[i]`` is the latent *entering* step ``i``, whose
    noise level is ``timesteps[i]``; ``states`` has ``stop + 1`` entries, the last being the final one.
    """
    stop = len(scheduler.timesteps) if stop is None else stop
    states = [latents]
    for t in scheduler.timesteps[:stop]:
        t_batch = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
        noise = guided_noise(unet, latents, t_batch, conditional, unconditional, guidance)
        latents = scheduler.step(noise, t, latents).prev_sample
        states.append(latents)
    return states, scheduler.timesteps[:stop]
