"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).

The trained UNet is pulled toward negatively guided noise from its frozen copy (their eq. 4):

    eps_theta(x_t, c, t)  <-  eps*(x_t, t) - eta * (eps*(x_t, c, t) - eps*(x_t, t))

with x_t drawn by partial DDIM sampling under the concept c.

Two modes:
- ``faithful`` reproduces the paper's reference loop: one sample per iteration, x_t sampled from
  fresh noise with the model being trained (start guidance 3, 50 DDIM steps) and stopped at a
  random step, the DDPM timestep drawn as the reference code does, lr 1e-5, 1000 iterations.
- ``fast`` (the default) learns the same target but batches: it samples a bank of full
  trajectories with the current model, refreshed every ``trajectory_reuse`` iterations, trains on
  ``batch_size`` (trajectory, step) pairs per iteration with the timestep the state truly has, and
  computes both frozen predictions in one UNet call.
- ``straightforward`` learns exactly what ``fast`` learns, computed the plain way, as a baseline
  for ``benchmarks/esd_speed.py``: fresh x_t sampled for every iteration, one UNet call per text
  condition, gradients for every UNet parameter, the explicit (non-fused) attention.

On small models the concept's strongest attribute can absorb the negative guidance (the shapes
world loses *colour* rather than *circle*); ``preserve_unconditional`` keeps the trained model's
unconditional prediction equal to the frozen one, which prevents that.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from erasectl.architecture import encode_prompts
from erasectl.distributed import batch_part, check_batch, gather_parts, world
from erasectl.methods.common import ErasureResult, MethodConfig, Progress, Stopwatch, TrainedUNet, distance, unet_calls
from erasectl.parameter_groups import select_parameters
from erasectl.run_state import RunControl, StepHook
from erasectl.sampling import ddim_scheduler, sample_trajectory

PARAMETER_GROUPS = ("esd-x", "esd-u", "esd-all", "esd-x-strict")
MODES = ("fast", "faithful", "straightforward")
FAITHFUL = dict(batch_size=1, trajectory_reuse=1, ddim_steps=50, start_guidance=3.0, lr=1e-5, steps=1000, negative_guidance=1.0)


@dataclass
class ESDConfig(MethodConfig):
    steps: int = field(default=200, metadata={"help": "Training iterations (the paper: 1000)."})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate (the paper: 1e-5)."})
    parameter_group: str = field(default="esd-x", metadata={"help": "esd-x (cross-attention), esd-u (all but cross-attention), esd-all, esd-x-strict (cross-attention K/V)."})
    negative_guidance: float = field(default=0.5, metadata={"help": "eta, the strength of the negative guidance target (the paper: 1.0)."})
    start_guidance: float = field(default=3.0, metadata={"help": "Guidance scale when sampling x_t under the concept."})
    ddim_steps: int = field(default=25, metadata={"help": "DDIM steps of the x_t trajectories (the paper: 50)."})
    batch_size: int = field(default=8, metadata={"help": "x_t samples per iteration (the paper: 1)."})
    trajectory_reuse: int = field(default=10, metadata={"help": "Iterations each bank of sampled trajectories serves (1: sample anew every iteration)."})
    preserve_unconditional: float = field(default=1.0, metadata={"help": "Weight of the term keeping the unconditional prediction unchanged (0: off)."})
    preserve_weight: float = field(default=1.0, metadata={"help": "Weight of the term keeping the --preserve concepts' predictions unchanged."})
    mode: str = field(default="fast", metadata={"help": "fast; faithful (the paper's loop and hyper-parameters); straightforward (fast's target, computed the plain way: a benchmark baseline)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameter_group not in PARAMETER_GROUPS:
            raise ValueError(f"unknown parameter group {self.parameter_group!r} for esd; choose one of {', '.join(PARAMETER_GROUPS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.negative_guidance > 0:
            raise ValueError(f"negative_guidance (eta) must be positive, got {self.negative_guidance}")
        for name in ("ddim_steps", "batch_size", "trajectory_reuse"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if min(self.preserve_unconditional, self.preserve_weight, self.start_guidance) < 0:
            raise ValueError("preserve_unconditional, preserve_weight and start_guidance must be 0 or more")


def for_several_concepts(config: ESDConfig, count: int, chosen: set[str]) -> ESDConfig:
    """``config`` with fast mode's defaults for ``count`` concepts at once, 200 iterations per
    concept at lr 2e-4, for whichever of steps and lr the user did not choose.

    Measured on the embedded model (circle and triangle, 32 images per shape): 200 iterations at
    lr 1e-4 left 22% circles and 100% triangles; 400 at lr 1e-4 left 22% triangles; 400 at lr 2e-4
    left none of either, other shapes at 88% or more.
    """
    if config.mode != "fast" or count <= 1:
        return config
    scaled = {"steps": 200 * count, "lr": 2e-4}
    return replace(config, **{k: v for k, v in scaled.items() if k not in chosen})


def faithful_config(**overrides) -> ESDConfig:
    return ESDConfig(**{**FAITHFUL, "preserve_unconditional": 0.0, "mode": "faithful", **overrides})


def reference_timestep(step_index: int, ddim_steps: int, generator: torch.Generator, train_steps: int = 1000) -> int:
    """The reference code's DDPM timestep for a state reached after ``step_index`` DDIM steps.

    It draws from the bin of width 1000/ddim_steps that *rises* with the index, although the state
    after more denoising steps is less noisy: we keep that for faithfulness, and use the state's
    true timestep in fast mode.
    """
    low = round(step_index / ddim_steps * train_steps)
    high = max(low + 1, round((step_index + 1) / ddim_steps * train_steps))
    return int(torch.randint(low, high, (1,), generator=generator))


@dataclass(frozen=True)
class Shortcuts:
    """fast mode's savings, each of which leaves the learned target unchanged (switchable one by
    one so that the benchmark can measure each)."""

    reuse_trajectories: bool = True  # a bank of trajectories serves trajectory_reuse iterations
    batched_calls: bool = True  # one UNet call for all text conditions at the same x_t
    group_gradients_only: bool = True  # autograd only for the trained parameter group
    fused_attention: bool = True  # PyTorch's scaled_dot_product_attention

    @classmethod
    def for_mode(cls, mode: str) -> "Shortcuts":
        if mode == "fast":
            return cls()
        # faithful keeps the reference's separate calls; straightforward drops every saving.
        return cls(False, False, mode == "faithful", mode == "faithful")


def _sample_states(unet, scheduler, noise, conditional, unconditional, guidance, stops: torch.Tensor) -> torch.Tensor:
    """Fresh x_t for each sample: its trajectory stopped after ``stops[i]`` DDIM steps."""
    states, _ = sample_trajectory(unet, scheduler, noise, conditional, unconditional, guidance, stop=int(stops.max()) + 1)
    stacked = torch.stack(states)
    return stacked[stops, torch.arange(len(stops))]


def erase(
    pipeline,
    concepts: list[str],
    config: ESDConfig,
    prompts: list[str],
    progress: Progress | None = None,
    preserve_prompts: list[str] | None = None,
    control: RunControl | None = None,
    shortcuts: Shortcuts | None = None,
) -> ErasureResult:
    """Erase ``concepts``; ``prompts`` are the concept prompts x_t is sampled under (one or more per
    concept); the predictions for ``preserve_prompts`` are kept at the frozen model's."""
    watch = Stopwatch()
    shortcuts = shortcuts or Shortcuts.for_mode(config.mode)
    if world()[1] > 1:
        if config.mode == "faithful":
            raise ValueError("faithful mode trains on one sample per iteration, which cannot be split over processes; run it in one process")
        check_batch(config.batch_size, "--batch-size")
    torch.manual_seed(config.seed)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    unet = pipeline.unet
    device = unet.device
    model = TrainedUNet(unet, select_parameters(unet, config.parameter_group, PARAMETER_GROUPS))
    if not shortcuts.group_gradients_only:
        unet.requires_grad_(True)  # autograd through every weight; only the group is stepped
    if not shortcuts.fused_attention:
        from diffusers.models.attention_processor import AttnProcessor

        previous_processors = unet.attn_processors
        unet.set_attn_processor(AttnProcessor())
    unet.train()
    optimizer = torch.optim.Adam(model.trained.values(), lr=config.lr)
    conditional = encode_prompts(pipeline, prompts)
    unconditional = encode_prompts(pipeline, [""])
    preserved = encode_prompts(pipeline, preserve_prompts) if preserve_prompts else None
    scheduler = ddim_scheduler(pipeline, config.ddim_steps)
    latent_shape = (
        unet.config.in_channels,
        unet.config.sample_size,
        unet.config.sample_size,
    )
    hook = StepHook(control, config, model.trained, optimizer, generator)
    start, losses, extras = hook.resume()
    bank_states, bank_prompts = extras.get("bank_states"), extras.get("bank_prompts")
    try:
        for step in range(start, config.steps):
            if config.mode == "faithful":
                which = torch.randint(0, len(prompts), (1,), generator=generator)
                stop = int(torch.randint(0, config.ddim_steps, (1,), generator=generator))
                noise = torch.randn((1, *latent_shape), generator=generator).to(device)
                unet.eval()
                states, _ = sample_trajectory(unet, scheduler, noise, conditional[which], unconditional, config.start_guidance, stop=stop)
                unet.train()
                latents = states[-1]
                timesteps = torch.tensor([reference_timestep(stop, config.ddim_steps, generator)], device=device)
                hidden = conditional[which]
            elif not shortcuts.reuse_trajectories:
                which = torch.randint(0, len(prompts), (config.batch_size,), generator=generator)
                stops = torch.randint(0, config.ddim_steps, (config.batch_size,), generator=generator)
                noise = torch.randn((config.batch_size, *latent_shape), generator=generator).to(device)
                unet.eval()
                latents = _sample_states(unet, scheduler, noise, conditional[which], unconditional, config.start_guidance, stops)
                unet.train()
                timesteps = scheduler.timesteps[stops].to(device)
                hidden = conditional[which]
            else:
                if step % config.trajectory_reuse == 0:
                    bank_prompts = torch.randint(0, len(prompts), (config.batch_size,), generator=generator)
                    noise = torch.randn((config.batch_size, *latent_shape), generator=generator).to(device)
                    part = batch_part(config.batch_size)  # each process samples its part of the bank
                    unet.eval()
                    states, _ = sample_trajectory(unet, scheduler, noise[part], conditional[bank_prompts[part]], unconditional, config.start_guidance)
                    unet.train()
                    bank_states = gather_parts(torch.stack(states[:-1]), dim=1)  # (steps, batch, ...): the state entering each step
                pick_step = torch.randint(0, config.ddim_steps, (config.batch_size,), generator=generator)
                pick_traj = torch.randint(0, config.batch_size, (config.batch_size,), generator=generator)
                latents = bank_states[pick_step, pick_traj]
                timesteps = scheduler.timesteps[pick_step].to(device)
                hidden = conditional[bank_prompts[pick_traj]]
            batch = latents.shape[0]
            part = batch_part(batch)  # this process's part under data parallelism; all of it in one process
            latents, timesteps, hidden = latents[part], timesteps[part], hidden[part]
            uncond = unconditional.expand(len(latents), -1, -1)
            # Frozen predictions: the concept's and the unconditional one (the target's), then the
            # preserved prompts'. Each kept term: (weight, trained condition, its frozen prediction's
            # index); the unconditional one reuses the target's, computed once.
            conditions, keep = [hidden, uncond], []
            if config.preserve_unconditional > 0:
                keep.append((config.preserve_unconditional, uncond, 1))
            if preserved is not None:
                pick = torch.randint(0, len(preserved), (batch,), generator=generator)
                keep.append((config.preserve_weight, preserved[pick][part], len(conditions)))
                conditions.append(keep[-1][1])
            batched = shortcuts.batched_calls
            frozen = unet_calls(model.frozen, latents, timesteps, conditions, batched)
            target = frozen[1] - config.negative_guidance * (frozen[0] - frozen[1])
            trained = unet_calls(model, latents, timesteps, [hidden] + [h for _, h, _ in keep], batched)
            loss = distance(trained[0], target, config.loss)
            for (weight, _, index), prediction in zip(keep, trained[1:]):
                loss = loss + weight * distance(prediction, frozen[index], config.loss)
            hook.finish_step(loss, step, losses, progress, {"bank_states": bank_states, "bank_prompts": bank_prompts}, share=len(latents) / batch)
    finally:  # the pipeline is the caller's: leave it as it came, also when a step raises
        unet.eval()
        if not shortcuts.group_gradients_only:
            unet.zero_grad(set_to_none=True)
            unet.requires_grad_(False)
            for parameter in model.trained.values():
                parameter.requires_grad_(True)
        if not shortcuts.fused_attention:
            unet.set_attn_processor(previous_processors)
    erased, base = model.checkpoint_tensors()
    return ErasureResult(erased, base, losses, watch.seconds())


Config = ESDConfig
ACCEPTS_ANCHOR = False
NEEDS_ANCHOR = False


def run(pipeline, request, config: ESDConfig, progress: Progress | None = None, control: RunControl | None = None) -> ErasureResult:
    prompts = [template.format(concept) for concept in request.concepts for template in request.templates(concept, "esd")]
    kept = [template.format(concept) for concept in request.preserve for template in request.templates(concept, "esd")]
    return erase(pipeline, request.concepts, config, prompts, progress, kept, control)
