"""The forward process and what the UNet predicts, for every scheduler a pipeline may carry.

A pipeline's scheduler is a *sampler* (PNDM in SD 1.x folders, Euler in SDXL's, DPM-Solver++ in
many fine-tunes). Training noise must come from the model's *training* process instead: DDPM with
the same betas, whatever the sampler; ``add_noise`` of a sampler is either keyed to its own
inference timesteps (Euler raises for an arbitrary t) or returns x0 + sigma eps, which is not the
UNet's input scale. Targets follow the model's ``prediction_type``: epsilon (SD 1.x, SDXL) or
v_prediction (SD 2.x 768-v), as diffusers' own training scripts do.

The diffusion transformers (SD3, FLUX) are trained by flow matching instead (:class:`FlowMatching`):
x_t = (1 - sigma) x0 + sigma eps, the denoiser predicts the velocity eps - x0, and the timestep it
reads is 1000 sigma, with sigma drawn from the scheduler's own table (SD3's shifted by its
``shift`` 3.0; FLUX's unshifted at training, as diffusers' FLUX training script draws it).
"""

from __future__ import annotations

import torch

from erasectl.errors import UserError

PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")


def flow_matching(pipeline) -> bool:
    """Whether the pipeline's model is a flow-matching one (its scheduler is a FlowMatch* one)."""
    return type(pipeline.scheduler).__name__.startswith("FlowMatch")


def prediction_type(pipeline) -> str:
    """What the denoiser predicts, from the scheduler config; a ``sample`` model is refused."""
    if flow_matching(pipeline):
        return "flow"
    kind = pipeline.scheduler.config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise UserError(
            f"this model predicts {kind!r}; erasectl's methods need an epsilon or v_prediction model (SD 1.x, 2.x, SDXL)"
        )
    return kind


class FlowMatching:
    """A flow-matching model's training process (see the module docstring), with DDPMScheduler's
    ``add_noise`` signature: ``timesteps`` on the scheduler's 0 to 1000 scale."""

    def __init__(self, config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.config = config
        self.timesteps = FlowMatchEulerDiscreteScheduler.from_config(config).timesteps.float()

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sigma = (timesteps.float() / self.config.num_train_timesteps).view(-1, *[1] * (clean.dim() - 1))
        return ((1 - sigma) * clean.float() + sigma * noise.float()).to(clean.dtype)


def training_scheduler(pipeline):
    """The model's training process: DDPM with the pipeline's betas and prediction type, or flow matching."""
    from diffusers import DDPMScheduler

    if prediction_type(pipeline) == "flow":
        return FlowMatching(pipeline.scheduler.config)
    return DDPMScheduler.from_config(pipeline.scheduler.config)


def draw_timesteps(scheduler, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` training timesteps, uniform over the training process's table."""
    index = torch.randint(0, scheduler.config.num_train_timesteps, (count,), generator=generator)
    return scheduler.timesteps[index] if isinstance(scheduler, FlowMatching) else index


def noise_target(scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What a perfect denoiser outputs at ``add_noise(clean, noise, t)``: eps, v = alpha_t eps - sigma_t x0,
    or a flow's velocity eps - x0."""
    if isinstance(scheduler, FlowMatching):
        return noise - clean
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return noise


def sampling_scheduler(pipeline, num_steps: int, kind: str = "own", latent_size: int = 0):
    """A fresh scheduler for sampling ``num_steps``: the pipeline's own class (``own``) or DDIM
    built from the same config (``ddim``). Fresh, because multistep samplers keep state.

    A flow-matching model always gets its own (Euler, deterministic as DDIM is), with the sigmas its
    family's pipeline passes (FLUX: linspace(1, 1/n, n)). One with dynamic shifting (FLUX) gets the
    shift its pipeline computes for ``latent_size`` latents as a fixed one, exp(mu): the same
    sigmas, since the exponential time shift with exponent 1 is the static shift by exp(mu)."""
    from diffusers import DDIMScheduler

    if flow_matching(pipeline):
        return _flow_sampler(pipeline, num_steps, latent_size)
    cls = type(pipeline.scheduler) if kind == "own" else DDIMScheduler
    scheduler = cls.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(num_steps)
    return scheduler


def _flow_sampler(pipeline, num_steps: int, latent_size: int):
    import math

    from erasectl.architecture import denoiser, transformer_family

    config = pipeline.scheduler.config
    found = transformer_family(denoiser(pipeline))
    sigmas = found.sampling_sigmas(num_steps) if found is not None else None
    if not config.get("use_dynamic_shifting", False):
        scheduler = type(pipeline.scheduler).from_config(config)
    else:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        tokens = (latent_size // 2) ** 2  # FLUX's 2x2 patches
        mu = calculate_shift(
            tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift
        )
        scheduler = type(pipeline.scheduler).from_config(config, use_dynamic_shifting=False, shift=math.exp(mu))
    if sigmas is None:
        scheduler.set_timesteps(num_steps)
        return scheduler
    scheduler.set_timesteps(sigmas=sigmas)
    scheduler.erasectl_restart = lambda: scheduler.set_timesteps(sigmas=sigmas)  # what restart() calls
    return scheduler


def restart(scheduler) -> None:
    """Start a sampling scheduler's schedule afresh (multistep samplers keep state), with the
    timesteps ``sampling_scheduler`` set."""
    again = getattr(scheduler, "erasectl_restart", None)
    if again is not None:
        again()
    else:
        scheduler.set_timesteps(scheduler.num_inference_steps)
