"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).

The trained UNet is pulled toward negatively guided predictions of the frozen base UNet (their eq. 4):

    eps_theta(x_t, c, t)  <-  eps*(x_t, t) - eta * (eps*(x_t, c, t) - eps*(x_t, t))

with x_t drawn by partial sampling under the concept c. The same linear combination holds for a
v-prediction UNet (v is linear in eps at a fixed x_t), so the target is the UNet's own output type;
on SD3 and FLUX it is the flow's velocity, x_t sampled with the family's guidance (SD3: two
passes; FLUX-dev: one pass reading ``start_guidance`` as its guidance input, as EraseAnything's ESD
term, which every prediction here reads too; schnell: one pass): docs/transformer-families.md.
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

from erasectl.architecture import (
    component_name,
    denoiser,
    differentiable_conditioning,
    encode_prompts,
    guidance_kind,
    latent_shape,
    transformer_family,
    with_guidance,
)
from erasectl.checkpoint import TEXT_ENCODERS
from erasectl.diffusion import prediction_type, sampling_scheduler
from erasectl.distributed import batch_part, check_batch, gather_parts, world
from erasectl.errors import ConfigError, UserError
from erasectl.methods.base import ALL_FAMILIES, ErasureResult, Method, Progress, Stopwatch, TrainedConfig, setting
from erasectl.methods.common import distance, modules_restored, trained_model, unet_calls
from erasectl.parameter_groups import TEXT_ENCODER_GROUP
from erasectl.run_state import RunControl, StepHook
from erasectl.sampling import sample_trajectory

UNET_GROUPS = ("esd-x", "esd-u", "esd-all", "esd-x-strict")
PARAMETER_GROUPS = (*UNET_GROUPS, TEXT_ENCODER_GROUP)
GROUP_ALIASES = {"xattn": "esd-x", "noxattn": "esd-u", "full": "esd-all"}
MODES = ("fast", "faithful", "faithful-fp32", "straightforward")
LOOP_MODES = ("faithful", "faithful-fp32")  # the authors' loop: one x_t an iteration, the model's own sampler
REFERENCE = "ESD's diffusers script esd_sd.py (rohitgandikota/erasing), argparse defaults"
# What --mode fast changes when the defaults are the paper's: its batching, nothing it learns.
FAST_MODE = {"batch_size": 8, "trajectory_reuse": 10, "ddim_steps": 25}


@dataclass
class ESDConfig(TrainedConfig):
    """Defaults: the authors' diffusers script, which real models get (the embedded world's own
    measured set lives in ``erasectl.world.defaults``)."""

    steps: int = setting(200, "Training iterations.", f"{REFERENCE}: --iterations 200 (the paper, section 4: 1000)")
    lr: float = setting(5e-5, "Adam learning rate.", f"{REFERENCE}: --lr 5e-5 (the paper: 1e-5)")
    parameter_group: str = setting(
        "esd-x",
        "esd-x (cross-attention; alias xattn), esd-u (all but cross-attention; noxattn), esd-all (full), esd-x-strict (cross-attention K/V), text-encoder (the text encoders' transformer layers, the UNet frozen).",
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
        "faithful (esd_sd.py as released: its loop, bf16 weights and Adam state, x_t sampled at --sample-size); faithful-fp32 (the same loop in fp32 at the model's own size); fast (faithful-fp32's target, batched); straightforward (fast's target the plain way: a benchmark baseline).",
        "the authors' script as released",
    )
    sample_size: int = setting(
        1024,
        "faithful mode: the size in pixels x_t is sampled at (0: the model's own).",
        f"{REFERENCE}: height=width=1024 (also for SD 1.x)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # the names the authors' README and their earlier CompVis script use, for the groups they mean
        self.parameter_group = GROUP_ALIASES.get(self.parameter_group, self.parameter_group)
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
        if self.sample_size < 0:
            raise ConfigError(f"sample_size must be 0 (the model's own) or more, got {self.sample_size}")
        if self.mode == "faithful" and self.parameter_group == TEXT_ENCODER_GROUP:
            raise ConfigError(
                "faithful mode is esd_sd.py, which trains the UNet; train the text encoder with --mode faithful-fp32 or fast"
            )
        if self.lora_rank and self.mode == "faithful":
            raise ConfigError(
                "faithful mode is esd_sd.py's full-weight bf16 training; train a LoRA with --mode faithful-fp32 or fast (--mixed-precision bf16 for bf16 compute)"
            )
        if self.lora_rank and self.parameter_group == TEXT_ENCODER_GROUP:
            raise ConfigError("--lora-rank adapts the denoiser; choose a denoiser parameter group, not text-encoder")
        if self.mode in LOOP_MODES and self.batch_size != 1:
            raise ConfigError(
                f"faithful mode trains one sample per iteration, as the authors' script does; got batch_size {self.batch_size} (use --mode fast to batch)"
            )
        if min(self.preserve_unconditional, self.preserve_weight, self.start_guidance) < 0:
            raise ConfigError("preserve_unconditional, preserve_weight and start_guidance must be 0 or more")


def mode_defaults(mode: str | None) -> dict:
    """Field values a chosen ``--mode`` brings with it (over the paper's defaults)."""
    if mode in ("fast", "straightforward"):
        return {**FAST_MODE, "sample_size": 0}
    if mode == "faithful-fp32":
        return {"sample_size": 0}
    return {}


def guidance_target(frozen_concept: torch.Tensor, frozen_unconditional: torch.Tensor, eta: float) -> torch.Tensor:
    """eq. 4, formed in float32: under bf16 autocast the difference of two O(1) predictions
    would keep only a few bits."""
    unconditional = frozen_unconditional.float()
    return unconditional - eta * (frozen_concept.float() - unconditional)


class ReleasedPrecision:
    """esd_sd.py's precision as released: the UNet it trains, its frozen copy and the text encoders
    in bf16, so the weights and Adam's state are bf16 (a step smaller than half a weight's bf16
    spacing is rounded away). The caller's fp32 pipeline is left as it is until the trained
    tensors are written back into it."""

    def __init__(self, pipeline):
        import copy

        self.pipeline = pipeline
        self.unet = copy.deepcopy(denoiser(pipeline)).to(torch.bfloat16)
        self.encoders = {
            name: copy.deepcopy(getattr(pipeline, name)).to(torch.bfloat16)
            for name in TEXT_ENCODERS
            if getattr(pipeline, name, None) is not None
        }

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """The prompts' conditioning through the bf16 text encoders, as the script's pipeline computes it."""
        originals = {name: getattr(self.pipeline, name) for name in self.encoders}
        try:
            for name, encoder in self.encoders.items():
                setattr(self.pipeline, name, encoder)
            return encode_prompts(self.pipeline, prompts).to(torch.bfloat16)
        finally:
            for name, encoder in originals.items():
                setattr(self.pipeline, name, encoder)

    @torch.no_grad()
    def write_back(self, erased: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """The trained bf16 tensors written into the caller's UNet: ``(erased, base)`` in its dtype."""
        written, base = {}, {}
        module = denoiser(self.pipeline)
        for key, tensor in erased.items():
            target = module.get_parameter(key[len(component_name(module)) + 1 :])
            base[key] = target.detach().clone()
            target.copy_(tensor.to(target.dtype))
            written[key] = target.detach().clone()
        return written, base


def released_target(concept: torch.Tensor, unconditional: torch.Tensor, eta: float) -> torch.Tensor:
    """esd_sd.py's target in the predictions' own dtype (bf16), formed as the script forms it:
    eps(c) - ng (eps(c) - eps()), ng = eta + 1."""
    return concept - (eta + 1) * (concept - unconditional)


def faithful_state(
    predict, scheduler, noise, conditional, unconditional, guidance: float, stop: int, kind: str = "classifier-free"
):
    """The authors' script's x_t: ``noise`` sampled for ``stop`` steps of ``scheduler`` under the
    concept by ``predict`` (the frozen base UNet), and the timestep of the step it enters."""
    states, timesteps = sample_trajectory(
        predict, scheduler, noise, conditional, unconditional, guidance, stop=stop, kind=kind
    )
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
        return cls(False, False, mode in LOOP_MODES, mode in LOOP_MODES)


def _sample_states(
    predict, scheduler, noise, conditional, unconditional, guidance, stops: torch.Tensor, kind: str
) -> torch.Tensor:
    """Fresh x_t for each sample: its trajectory stopped after ``stops[i]`` steps."""
    states, _ = sample_trajectory(
        predict, scheduler, noise, conditional, unconditional, guidance, stop=int(stops.max()), kind=kind
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
    retain=None,
) -> ErasureResult:
    """Erase ``concepts``; ``prompts`` are the concept prompts x_t is sampled under (one or more per
    concept); the predictions for ``preserve_prompts`` are kept at the frozen model's.

    ``adversary`` (``erasectl.methods.advunlearn``), when given, may replace each sample's trained
    condition by an adversarial prompt it updates against the model being trained; the target stays
    the frozen model's guidance target for the concept's own prompt. ``retain`` (AdvUnlearn's
    retain term), when given, adds ``retain.loss(training, step, stops)`` to each iteration's loss
    (``stops``: the sampler steps of this process's x_t)."""
    watch = Stopwatch()
    prediction_type(pipeline)
    shortcuts = shortcuts or Shortcuts.for_mode(config.mode)
    if world()[1] > 1:
        if config.mode in LOOP_MODES:
            raise UserError(
                "faithful mode trains on one sample per iteration, which cannot be split over processes; run it in one process or use --mode fast"
            )
        check_batch(config.batch_size, "--batch-size")
    torch.manual_seed(config.seed)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    unet = denoiser(pipeline)
    encoders = [getattr(pipeline, component, None) for component in TEXT_ENCODERS]
    with modules_restored(
        unet, *encoders
    ):  # the pipeline is the caller's: leave it as it came, also when a step raises
        training = _Training(
            pipeline, unet, config, prompts, preserve_prompts, control, shortcuts, generator, adversary, retain
        )
        return training.run(progress, watch)


class _Training:
    """One ESD training run: its frozen encodings, sampler and state, and one method per phase of
    an iteration. The random draws come from ``generator`` in a fixed order, so a run is repeatable."""

    def __init__(
        self, pipeline, unet, config, prompts, preserve_prompts, control, shortcuts, generator, adversary, retain=None
    ):
        self.pipeline, self.unet, self.config, self.prompts, self.retain = pipeline, unet, config, prompts, retain
        self.preserve_prompts, self.shortcuts, self.generator, self.adversary = (
            preserve_prompts,
            shortcuts,
            generator,
            adversary,
        )
        self.device = unet.device
        self.released = ReleasedPrecision(pipeline) if config.mode == "faithful" else None
        if self.released is not None:
            self.unet = unet = self.released.unet
        self.model = trained_model(pipeline, config.parameter_group, UNET_GROUPS, unet, config.lora_rank)
        # The trained model's own text conditioning: through the trained encoders (with gradients) when
        # they are what is trained, else the frozen encodings below.
        self.encode_trained = differentiable_conditioning if self.model.trains_text else encode_prompts
        if not shortcuts.group_gradients_only:
            unet.requires_grad_(True)  # autograd through every weight; only the group is stepped
        self.previous_processors = None
        if not shortcuts.fused_attention and transformer_family(unet) is None:  # the UNets' plain processor
            from diffusers.models.attention_processor import AttnProcessor

            self.previous_processors = unet.attn_processors
            unet.set_attn_processor(AttnProcessor())
        self.optimizer = self.model.optimizer(lambda trained: torch.optim.Adam(trained, lr=config.lr))
        encoded = self.released.encode if self.released is not None else lambda p: encode_prompts(pipeline, p)

        def encode(texts):  # a distilled transformer reads start_guidance in every pass, as EraseAnything's ESD term
            return with_guidance(unet, encoded(texts), config.start_guidance)

        self.guidance = guidance_kind(unet)
        self.conditional, self.unconditional = encode(prompts), encode([""])
        self.preserved = encode(preserve_prompts) if preserve_prompts else None
        pixels = config.sample_size if self.released is not None or transformer_family(unet) is not None else 0
        self.latent_shape = latent_shape(pipeline, pixels)
        # faithful: the model's own sampler, as the authors' script; otherwise DDIM from the same config
        kind = "own" if config.mode in LOOP_MODES else "ddim"
        self.scheduler = sampling_scheduler(pipeline, config.ddim_steps, kind, self.latent_shape[-1])
        self.hook = StepHook(control, config, self.model.trained, self.optimizer, generator)
        self.start, self.losses, extras = self.hook.resume()
        self.bank_states, self.bank_prompts = extras.get("bank_states"), extras.get("bank_prompts")
        if adversary is not None:
            adversary.restore(extras)

    def draw(self, size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One iteration's x_t, their timesteps and prompt indices (all processes' samples): a batch,
        or ``size`` samples (faithful mode: always one). Their sampler steps are left in
        ``self.drawn_stops`` (a timestep may recur in a schedule, as PNDM's does)."""
        config, generator, model = self.config, self.generator, self.model
        size = size or config.batch_size
        if config.mode in LOOP_MODES:
            which = torch.randint(0, len(self.prompts), (1,), generator=generator)
            stop = int(torch.randint(0, config.ddim_steps, (1,), generator=generator))
            noise = torch.randn((1, *self.latent_shape), generator=generator).to(self.device, self.unet.dtype)
            latents, timesteps = faithful_state(
                model.frozen,
                self.scheduler,
                noise,
                self.conditional[which],
                self.unconditional,
                config.start_guidance,
                stop,
                self.guidance,
            )
            self.drawn_stops = torch.tensor([stop])
            return latents, timesteps.to(self.device), which
        if not self.shortcuts.reuse_trajectories:
            which = torch.randint(0, len(self.prompts), (size,), generator=generator)
            stops = torch.randint(0, config.ddim_steps, (size,), generator=generator)
            latents = self.states_under(self.conditional[which], stops)
            self.drawn_stops = stops
            return latents, self.scheduler.timesteps[stops].to(self.device), which
        pick_step = torch.randint(0, config.ddim_steps, (size,), generator=generator)
        pick_traj = torch.randint(0, config.batch_size, (size,), generator=generator)
        timesteps = self.scheduler.timesteps[pick_step].to(self.device)
        self.drawn_stops = pick_step
        return self.bank_states[pick_step, pick_traj], timesteps, self.bank_prompts[pick_traj]

    def states_under(self, conditions: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
        """New x_t sampled under ``conditions`` from new noise, each to its step ``stops[i]``, by the
        model the iteration's own x_t come from (faithful: the frozen one with the model's own
        scheduler; otherwise the trained one with DDIM)."""
        noise = torch.randn((len(conditions), *self.latent_shape), generator=self.generator).to(self.device)
        predict = self.model.frozen if self.config.mode in LOOP_MODES else self.model
        self.unet.eval()
        latents = _sample_states(
            predict,
            self.scheduler,
            noise,
            conditions,
            self.unconditional,
            self.config.start_guidance,
            stops,
            self.guidance,
        )
        self.unet.train()
        return latents

    def fresh_states(self, count: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """``count`` new x_t for the adversary (0: a batch), this process's part: states, timesteps,
        prompt indices, the frozen model's prediction for each state's concept prompt, and this
        process's share of them (a process may have none)."""
        latents, timesteps, which = self.draw(count)
        drawn = len(latents)
        part = batch_part(drawn)
        latents, timesteps, which = latents[part], timesteps[part], which[part]
        with torch.no_grad():
            frozen = self.model.frozen
            prediction = (
                frozen(latents, timesteps, self.conditional[which]) if len(latents) else torch.zeros_like(latents)
            )
        return latents, timesteps, which, prediction, len(latents) / drawn

    def refresh_bank(self) -> None:
        """A new bank of DDIM trajectories (fast mode), each process sampling its part of it."""
        config, generator = self.config, self.generator
        self.bank_prompts = torch.randint(0, len(self.prompts), (config.batch_size,), generator=generator)
        noise = torch.randn((config.batch_size, *self.latent_shape), generator=generator).to(self.device)
        part = batch_part(config.batch_size)
        self.unet.eval()
        conditions = self.conditional[self.bank_prompts[part]]
        states, _ = sample_trajectory(
            self.model,
            self.scheduler,
            noise[part],
            conditions,
            self.unconditional,
            config.start_guidance,
            stop=config.ddim_steps - 1,
            kind=self.guidance,
        )
        self.unet.train()
        self.bank_states = gather_parts(torch.stack(states), dim=1)  # (steps, batch, ...): the state entering each step

    def frozen_terms(self, latents, timesteps, hidden, batch: int, part: slice) -> tuple[list, list, list]:
        """The frozen predictions: the concept's and the unconditional one (the target's), then the
        preserved prompts'; and each kept term as (weight, its prompts, its frozen condition's index),
        the unconditional one reusing the target's, computed once."""
        config = self.config
        conditions, keep = [hidden, self.unconditional.expand(len(latents), -1, -1)], []
        if config.preserve_unconditional > 0:
            keep.append((config.preserve_unconditional, [""], 1))
        if self.preserved is not None:
            pick = torch.randint(0, len(self.preserved), (batch,), generator=self.generator)[part]
            keep.append((config.preserve_weight, [self.preserve_prompts[i] for i in pick.tolist()], len(conditions)))
            conditions.append(self.preserved[pick])
        frozen = unet_calls(self.model.frozen, latents, timesteps, conditions, self.shortcuts.batched_calls)
        return conditions, keep, frozen

    def loss(self, step: int) -> tuple[torch.Tensor, float]:
        """One iteration's loss and this process's share of its batch."""
        model, config = self.model, self.config
        latents, timesteps, which = self.draw()
        stops = self.drawn_stops  # before the adversary draws states of its own
        hidden = self.conditional[which]
        batch = latents.shape[0]
        part = batch_part(batch)  # this process's part under data parallelism; all of it in one process
        latents, timesteps, hidden, which = latents[part], timesteps[part], hidden[part], which[part]
        conditions, keep, frozen = self.frozen_terms(latents, timesteps, hidden, batch, part)
        if self.released is not None:  # the script's target and loss, in bf16
            target = released_target(frozen[0], frozen[1], config.negative_guidance)
        else:
            target = guidance_target(frozen[0], frozen[1], config.negative_guidance)
        trained_prompts = None
        if self.adversary is not None:  # robust training: the adversarial prompts as the trained condition
            sample_ids = (torch.arange(batch) + step * batch)[part].tolist()  # each sample's place in the run
            trained_prompts = self.adversary.trained_prompts(
                step, model, latents, timesteps, which.tolist(), sample_ids, frozen[0], batch, self.fresh_states
            )
        if trained_prompts is None and model.trains_text:
            trained_prompts = [self.prompts[i] for i in which.tolist()]
        trained_hidden = hidden if trained_prompts is None else self.encode_trained(self.pipeline, trained_prompts)
        kept_hidden = [
            self.encode_trained(self.pipeline, p).expand(len(conditions[i]), -1, -1)
            if model.trains_text
            else conditions[i]
            for _, p, i in keep
        ]
        trained = unet_calls(model, latents, timesteps, [trained_hidden, *kept_hidden], self.shortcuts.batched_calls)
        loss = distance(trained[0] if self.released is not None else trained[0].float(), target, config.loss)
        for (weight, _, index), prediction in zip(keep, trained[1:]):
            loss = loss + weight * distance(prediction.float(), frozen[index].float(), config.loss)
        share = len(latents) / batch
        if self.retain is not None:
            loss = loss + self.retain.loss(self, step, stops[part]) / share
        return loss, share

    def run(self, progress, watch) -> ErasureResult:
        config, shortcuts = self.config, self.shortcuts
        try:
            self.unet.train()
            for step in range(self.start, config.steps):
                if (
                    shortcuts.reuse_trajectories
                    and config.mode not in LOOP_MODES
                    and step % config.trajectory_reuse == 0
                ):
                    self.refresh_bank()
                loss, share = self.loss(step)
                adversary = self.adversary.state() if self.adversary is not None else {}
                extras = {"bank_states": self.bank_states, "bank_prompts": self.bank_prompts, **adversary}
                self.hook.finish_step(loss, step, self.losses, progress, extras, share=share)
        finally:
            if self.previous_processors is not None:
                self.unet.set_attn_processor(self.previous_processors)
        erased, base = self.model.checkpoint_tensors()
        if self.released is not None:
            erased, base = self.released.write_back(erased)
        return ErasureResult(erased, base, self.losses, watch.seconds())


class ESD(Method):
    name = "esd"
    summary = "ESD (Gandikota et al., ICCV 2023): fine-tune toward negatively guided predictions."
    config_class = ESDConfig
    families = ALL_FAMILIES
    concept_types = {
        kind: {
            "parameter_group": (
                group,
                "ESD paper (Gandikota et al., ICCV 2023): ESD-x for styles, ESD-u for nudity and objects",
            )
        }
        for kind, group in (("object", "esd-u"), ("nudity", "esd-u"), ("style", "esd-x"))
    }

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
