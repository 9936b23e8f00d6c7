"""Our own small sampling loop over a scheduler: partial sampling to an intermediate x_t.

ESD needs x_t drawn by sampling *under the concept* and stopped part-way. diffusers pipelines give
only final images (or latents), so, rather than patching them, we step the scheduler ourselves,
with the same arithmetic as ``StableDiffusionPipeline.__call__`` (unconditional rows first,
``scale_model_input`` before every UNet call), so a state is the one the pipeline would reach.
"""

from __future__ import annotations

import torch

from erasectl.diffusion import restart


def guided_noise(
    predict, model_input, t, conditional, unconditional, guidance: float, kind: str = "classifier-free"
) -> torch.Tensor:
    """The guided prediction as the family's pipeline forms it: classifier-free (both branches in
    one batched call, in the pipeline's order), or one pass under the text for a distilled
    transformer (FLUX: ``conditional`` carries the guidance value it reads, set by the caller)."""
    batch = model_input.shape[0]
    if kind != "classifier-free":
        return predict(
            model_input, t.reshape(1).to(model_input.device).expand(batch), conditional.expand(batch, -1, -1)
        )
    both = predict(
        torch.cat([model_input, model_input]),
        t.reshape(1).to(model_input.device).expand(2 * batch),
        torch.cat([unconditional.expand(batch, -1, -1), conditional.expand(batch, -1, -1)]),
    )
    without, with_concept = both.chunk(2)
    return without + guidance * (with_concept - without)


@torch.no_grad()
def sample_trajectory(
    predict,
    scheduler,
    noise,
    conditional,
    unconditional,
    guidance: float,
    stop: int | None = None,
    kind: str = "classifier-free",
):
    """Sample from ``noise`` (standard normal; scaled by the scheduler's ``init_noise_sigma``) for
    ``stop`` steps (all by default). ``predict(model_input, timesteps, conditioning)`` is the UNet.

    Returns ``(states, timesteps)``: ``states[i]`` is the UNet's input at step ``i`` (the latent
    after ``scale_model_input``, which is the latent itself for DDIM and PNDM) and ``timesteps[i]``
    its timestep, for every step up to and including ``stop`` that the schedule has. ``kind``: how
    the model is guided (``erasectl.families.GUIDANCE_KINDS``).
    """
    restart(scheduler)
    schedule = scheduler.timesteps
    stop = len(schedule) if stop is None else stop
    latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # a flow sampler starts at the noise
    states = []
    for index, t in enumerate(schedule[: stop + 1]):
        model_input = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
        states.append(model_input)
        if index == stop:
            break
        prediction = guided_noise(predict, model_input, t, conditional, unconditional, guidance, kind)
        latents = scheduler.step(prediction, t, latents).prev_sample
    return states, schedule[: len(states)]
