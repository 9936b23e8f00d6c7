"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).

The trained UNet is pulled toward negatively guided predictions of the frozen base UNet (their eq. 4):

    eps_theta(x_t, c, t)  <-  eps*(x_t, t) - eta * (eps*(x_t, c, t) - eps*(x_t, t))

with x_t drawn by partial sampling under the concept c. The same linear combination holds for a
v-prediction UNet (v is linear in eps at a fixed x_t), so the target is the UNet's own output type.
The authors' scripts call eta ``negative_guidance`` on the other side of the difference: their
``eps*(c) - ng (eps*(c) - eps*())`` is this target with eta = ng - 1 (their default 2 is eta 1).

Three modes:
- ``faithful`` is the authors' current diffusers script (``esd_sd.py``): each iteration samples
  one x_t from fresh noise with the frozen base UNet and the model's own scheduler (PNDM for SD 1.x,
  Euler for SDXL) under guidance 3, stops it before a random step k of 50, labels it with that
  step's timestep, and trains one sample. Its defaults are that script's (see ``ESDConfig``).
- ``fast`` learns the same target but batches: a bank of DDIM trajectories (sampled by the model
  being trained, as the paper-era CompVis script did) serves ``trajectory_reuse`` iterations,
  ``batch_size`` (trajectory, step) pairs are trained per iteration, and the frozen predictions
  come from one UNet call.
- ``straightforward`` learns exactly what ``fast`` learns, computed the plain way, as a baseline
  for ``benchmarks/esd_speed.py``: fresh x_t sampled for every iteration, one UNet call per text
  condition, gradients for every UNet parameter, the explicit (non-fused) attention.

``--parameter-group text-encoder`` trains the text encoders instead of the UNet (AdvUnlearn's
choice, ``erasectl.methods.advunlearn``): the trained prediction takes its conditioning through
the trained encoders, every frozen one the encodings made before training (x_t is then sampled by
the frozen model in every mode, since the UNet is unchanged and its conditioning frozen).

``preserve_unconditional`` (erasectl's, off in the paper's settings) keeps the trained model's
unconditional prediction equal to the frozen one: on small models the concept's strongest
attribute can otherwise absorb the negative guidance (the shapes world loses colour, not circle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erasectl.architecture import differentiable_conditioning, encode_prompts
from erasectl.checkpoint import TEXT_ENCODERS
from erasectl.diffusion import prediction_type, sampling_scheduler
from erasectl.distributed import batch_part, check_batch, gather_parts, world
from erasectl.errors import ConfigError, UserError
from erasectl.methods.base import ErasureResult, Method, MethodConfig, Progress, Stopwatch, setting
from erasectl.methods.common import distance, modules_restored, trained_model, unet_calls
from erasectl.parameter_groups import TEXT_ENCODER_GROUP
from erasectl.run_state import RunControl, StepHook
from erasectl.sampling import sample_trajectory

UNET_GROUPS = ("esd-x", "esd-u", "esd-all", "esd-x-strict")
PARAMETER_GROUPS = (*UNET_GROUPS, TEXT_ENCODER_GROUP)
MODES = ("fast", "faithful", "straightforward")
REFERENCE = "ESD's diffusers script esd_sd.py (rohitgandikota/erasing), argparse defaults"
# What --mode fast changes when the defaults are the paper's: its batching, nothing it learns.
FAST_MODE = {"batch_size": 8, "trajectory_reuse": 10, "ddim_steps": 25}


@dataclass
class ESDConfig(MethodConfig):
    """Defaults: the authors' diffusers script, which real models get (the embedded world's own
    measured set lives in ``erasectl.world.defaults``)."""

    steps: int = setting(200, "Training iterations.", f"{REFERENCE}: --iterations 200 (the paper, section 4: 1000)")
    lr: float = setting(5e-5, "Adam learning rate.", f"{REFERENCE}: --lr 5e-5 (the paper: 1e-5)")
    parameter_group: str = setting(
        "esd-x",
        "esd-x (cross-attention), esd-u (all but cross-attention), esd-all, esd-x-strict (cross-attention K/V), text-encoder (the text encoders' transformer layers, the UNet frozen).",
        "the authors' README example (--train_method esd-x); the paper uses ESD-x for styles, ESD-u for nudity and objects",
    )
    negative_guidance: float = setting(
        1.0,
        "eta, the strength of the negative guidance target (the authors' script's negative_guidance is eta + 1).",
        "the paper, eq. 4 with eta 1 (esd_sd.py --negative_guidance 2)",
    )
    start_guidance: float = setting(
        3.0, "Guidance scale when sampling x_t under the concept.", f"{REFERENCE}: --guidance_scale 3"
    )
    ddim_steps: int = setting(
        50,
        "Sampler steps of the x_t trajectories (faithful: the model's own scheduler; fast: DDIM).",
        f"{REFERENCE}: --num_inference_steps 50",
    )
    batch_size: int = setting(1, "x_t samples per iteration.", f"{REFERENCE}: batchsize 1")
    trajectory_reuse: int = setting(
        1,
        "fast mode: iterations each bank of sampled trajectories serves (1: sample anew every iteration).",
        "the script samples anew every iteration",
    )
    preserve_unconditional: float = setting(
        0.0, "Weight of the term keeping the unconditional prediction unchanged (0: off).", "not in the paper: off"
    )
    preserve_weight: float = setting(
        1.0,
        "Weight of the term keeping the --preserve concepts' predictions unchanged.",
        "not in the paper; used only with --preserve",
    )
    mode: str = setting(
        "faithful",
        "faithful (the authors' script's loop); fast (the same target, batched); straightforward (fast's target the plain way: a benchmark baseline).",
        "the authors' loop",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameter_group not in PARAMETER_GROUPS:
            raise ConfigError(
                f"unknown parameter group {self.parameter_group!r} for esd; choose one of {', '.join(PARAMETER_GROUPS)}"
            )
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.negative_guidance > 0:
            raise ConfigError(f"negative_guidance (eta) must be positive, got {self.negative_guidance}")
        for name in ("ddim_steps", "batch_size", "trajectory_reuse"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mode == "faithful" and self.batch_size != 1:
            raise ConfigError(
                f"faithful mode trains one sample per iteration, as the authors' script does; got batch_size {self.batch_size} (use --mode fast to batch)"
            )
        if min(self.preserve_unconditional, self.preserve_weight, self.start_guidance) < 0:
            raise ConfigError("preserve_unconditional, preserve_weight and start_guidance must be 0 or more")


def mode_defaults(mode: str | None) -> dict:
    """Field values a chosen ``--mode`` brings with it (over the paper's defaults)."""
    if mode in ("fast", "straightforward"):
        return dict(FAST_MODE)
    return {}


def guidance_target(frozen_concept: torch.Tensor, frozen_unconditional: torch.Tensor, eta: float) -> torch.Tensor:
    """eq. 4, formed in float32: under bf16 autocast the difference of two O(1) predictions
    would keep only a few bits."""
    unconditional = frozen_unconditional.float()
    return unconditional - eta * (frozen_concept.float() - unconditional)


def faithful_state(predict, scheduler, noise, conditional, unconditional, guidance: float, stop: int):
    """The authors' script's x_t: ``noise`` sampled for ``stop`` steps of ``scheduler`` under the
    concept by ``predict`` (the frozen base UNet), and the timestep of the step it enters."""
    states, timesteps = sample_trajectory(predict, scheduler, noise, conditional, unconditional, guidance, stop=stop)
    return states[stop], timesteps[stop : stop + 1]


@dataclass(frozen=True)
class Shortcuts:
    """fast mode's savings, each of which leaves the learned target unchanged (switchable one by
    one so that the benchmark can measure each)."""

    reuse_trajectories: bool = True  # a bank of trajectories serves trajectory_reuse iterations
    batched_calls: bool = True  # one UNet call for all text conditions at the same x_t
    group_gradients_only: bool = True  # autograd only for the trained parameter group
    fused_attention: bool = True  # PyTorch's scaled_dot_product_attention

    @classmethod
    def for_mode(cls, mode: str) -> Shortcuts:
        if mode == "fast":
            return cls()
        # faithful keeps the reference's separate calls; straightforward drops every saving.
        return cls(False, False, mode == "faithful", mode == "faithful")


def _sample_states(
    predict, scheduler, noise, conditional, unconditional, guidance, stops: torch.Tensor
) -> torch.Tensor:
    """Fresh x_t for each sample: its trajectory stopped after ``stops[i]`` steps."""
    states, _ = sample_trajectory(
        predict, scheduler, noise, conditional, unconditional, guidance, stop=int(stops.max())
    )
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
    adversary=None,
) -> ErasureResult:
    """Erase ``concepts``; ``prompts`` are the concept prompts x_t is sampled under (one or more per
    concept); the predictions for ``preserve_prompts`` are kept at the frozen model's.

    ``adversary`` (``erasectl.methods.advunlearn``), when given, may replace each sample's trained
    condition by an adversarial prompt it updates against the model being trained; the target stays
    the frozen model's guidance target for the concept's own prompt."""
    watch = Stopwatch()
    prediction_type(pipeline)
    shortcuts = shortcuts or Shortcuts.for_mode(config.mode)
    if world()[1] > 1:
        if config.mode == "faithful":
            raise UserError(
                "faithful mode trains on one sample per iteration, which cannot be split over processes; run it in one process or use --mode fast"
            )
        check_batch(config.batch_size, "--batch-size")
    torch.manual_seed(config.seed)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    unet = pipeline.unet
    encoders = [getattr(pipeline, component, None) for component in TEXT_ENCODERS]
    with modules_restored(
        unet, *encoders
    ):  # the pipeline is the caller's: leave it as it came, also when a step raises
        return _train(
            pipeline, unet, config, prompts, progress, preserve_prompts, control, shortcuts, generator, watch, adversary
        )


def _train(
    pipeline, unet, config, prompts, progress, preserve_prompts, control, shortcuts, generator, watch, adversary=None
) -> ErasureResult:
    device = unet.device
    model = trained_model(pipeline, config.parameter_group, UNET_GROUPS)
    # The trained model's own text conditioning: through the trained encoders (with gradients) when
    # they are what is trained, else the frozen encodings below.
    encode_trained = differentiable_conditioning if model.trains_text else encode_prompts
    if not shortcuts.group_gradients_only:
        unet.requires_grad_(True)  # autograd through every weight; only the group is stepped
    if not shortcuts.fused_attention:
        from diffusers.models.attention_processor import AttnProcessor

        previous_processors = unet.attn_processors
        unet.set_attn_processor(AttnProcessor())
    optimizer = torch.optim.Adam(model.trained.values(), lr=config.lr)
    conditional = encode_prompts(pipeline, prompts)
    unconditional = encode_prompts(pipeline, [""])
    preserved = encode_prompts(pipeline, preserve_prompts) if preserve_prompts else None
    # faithful: the model's own sampler, as the authors' script; otherwise DDIM from the same config
    scheduler = sampling_scheduler(pipeline, config.ddim_steps, "own" if config.mode == "faithful" else "ddim")
    latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    hook = StepHook(control, config, model.trained, optimizer, generator)
    start, losses, extras = hook.resume()
    bank_states, bank_prompts = extras.get("bank_states"), extras.get("bank_prompts")
    if adversary is not None:
        adversary.restore(extras)

    def draw(size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One iteration's x_t, their timesteps and prompt indices (all processes' samples): a batch,
        or ``size`` samples (faithful mode: always one)."""
        size = size or config.batch_size
        if config.mode == "faithful":
            which = torch.randint(0, len(prompts), (1,), generator=generator)
            stop = int(torch.randint(0, config.ddim_steps, (1,), generator=generator))
            noise = torch.randn((1, *latent_shape), generator=generator).to(device)
            latents, timesteps = faithful_state(
                model.frozen, scheduler, noise, conditional[which], unconditional, config.start_guidance, stop
            )
            return latents, timesteps.to(device), which
        if not shortcuts.reuse_trajectories:
            which = torch.randint(0, len(prompts), (size,), generator=generator)
            stops = torch.randint(0, config.ddim_steps, (size,), generator=generator)
            noise = torch.randn((size, *latent_shape), generator=generator).to(device)
            unet.eval()
            latents = _sample_states(
                model, scheduler, noise, conditional[which], unconditional, config.start_guidance, stops
            )
            unet.train()
            return latents, scheduler.timesteps[stops].to(device), which
        pick_step = torch.randint(0, config.ddim_steps, (size,), generator=generator)
        pick_traj = torch.randint(0, config.batch_size, (size,), generator=generator)
        return bank_states[pick_step, pick_traj], scheduler.timesteps[pick_step].to(device), bank_prompts[pick_traj]

    def fresh_states(count: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """``count`` new x_t for the adversary (0: a batch), this process's part: states, timesteps,
        prompt indices, the frozen model's prediction for each state's concept prompt, and this
        process's share of them (a process may have none)."""
        latents, timesteps, which = draw(count)
        drawn = len(latents)
        part = batch_part(drawn)
        latents, timesteps, which = latents[part], timesteps[part], which[part]
        with torch.no_grad():
            prediction = (
                model.frozen(latents, timesteps, conditional[which]) if len(latents) else torch.zeros_like(latents)
            )
        return latents, timesteps, which, prediction, len(latents) / drawn

    try:
        unet.train()
        for step in range(start, config.steps):
            if shortcuts.reuse_trajectories and config.mode != "faithful" and step % config.trajectory_reuse == 0:
                bank_prompts = torch.randint(0, len(prompts), (config.batch_size,), generator=generator)
                noise = torch.randn((config.batch_size, *latent_shape), generator=generator).to(device)
                part = batch_part(config.batch_size)  # each process samples its part of the bank
                unet.eval()
                states, _ = sample_trajectory(
                    model,
                    scheduler,
                    noise[part],
                    conditional[bank_prompts[part]],
                    unconditional,
                    config.start_guidance,
                    stop=config.ddim_steps - 1,
                )
                unet.train()
                bank_states = gather_parts(
                    torch.stack(states), dim=1
                )  # (steps, batch, ...): the state entering each step

            latents, timesteps, which = draw()
            hidden = conditional[which]
            batch = latents.shape[0]
            part = batch_part(batch)  # this process's part under data parallelism; all of it in one process
            latents, timesteps, hidden, which = latents[part], timesteps[part], hidden[part], which[part]
            uncond = unconditional.expand(len(latents), -1, -1)
            # Frozen predictions: the concept's and the unconditional one (the target's), then the
            # preserved prompts'. Each kept term: (weight, its prompts, its frozen condition's
            # index); the unconditional one reuses the target's, computed once.
            conditions, keep = [hidden, uncond], []
            if config.preserve_unconditional > 0:
                keep.append((config.preserve_unconditional, [""], 1))
            if preserved is not None:
                pick = torch.randint(0, len(preserved), (batch,), generator=generator)[part]
                keep.append((config.preserve_weight, [preserve_prompts[i] for i in pick.tolist()], len(conditions)))
                conditions.append(preserved[pick])
            batched = shortcuts.batched_calls
            frozen = unet_calls(model.frozen, latents, timesteps, conditions, batched)
            target = guidance_target(frozen[0], frozen[1], config.negative_guidance)
            trained_prompts = None
            if adversary is not None:  # robust training: the adversarial prompts as the trained condition
                sample_ids = (torch.arange(batch) + step * batch)[part].tolist()  # each sample's place in the run
                trained_prompts = adversary.trained_prompts(
                    step, model, latents, timesteps, which.tolist(), sample_ids, frozen[0], batch, fresh_states
                )
            if trained_prompts is None and model.trains_text:
                trained_prompts = [prompts[i] for i in which.tolist()]
            trained_hidden = hidden if trained_prompts is None else encode_trained(pipeline, trained_prompts)
            kept_hidden = [
                encode_trained(pipeline, p).expand(len(conditions[i]), -1, -1) if model.trains_text else conditions[i]
                for _, p, i in keep
            ]
            trained = unet_calls(model, latents, timesteps, [trained_hidden, *kept_hidden], batched)
            loss = distance(trained[0].float(), target, config.loss)
            for (weight, _, index), prediction in zip(keep, trained[1:]):
                loss = loss + weight * distance(prediction.float(), frozen[index].float(), config.loss)
            extras = {
                "bank_states": bank_states,
                "bank_prompts": bank_prompts,
                **(adversary.state() if adversary is not None else {}),
            }
            hook.finish_step(loss, step, losses, progress, extras, share=len(latents) / batch)
    finally:
        if not shortcuts.fused_attention:
            unet.set_attn_processor(previous_processors)
    erased, base = model.checkpoint_tensors()
    return ErasureResult(erased, base, losses, watch.seconds())


class ESD(Method):
    name = "esd"
    summary = "ESD (Gandikota et al., ICCV 2023): fine-tune toward negatively guided predictions."
    config_class = ESDConfig

    def mode_defaults(self, mode: str | None) -> dict:
        return mode_defaults(mode)

    def run(
        self, pipeline, request, config: ESDConfig, progress: Progress | None = None, control: RunControl | None = None
    ) -> ErasureResult:
        prompts = [
            template.format(concept) for concept in request.concepts for template in request.templates(concept, "esd")
        ]
        kept = [
            template.format(concept) for concept in request.preserve for template in request.templates(concept, "esd")
        ]
        return erase(pipeline, request.concepts, config, prompts, progress, kept, control)
