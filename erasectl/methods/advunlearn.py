"""AdvUnlearn: robust erasure by adversarial training (Zhang et al., "Defensive Unlearning with
Adversarial Training for Robust Concept Erasure in Diffusion Models", NeurIPS 2024), on
erasectl's ESD engine.

A min-max problem. Inside, an attacker moves a soft prompt, one learned token put before the
concept's prompt (the authors' ``prefix_k`` with one adversarial token), so that the model being
trained predicts at ESD's x_t what the *frozen* model predicts for the concept (the attack loss
of their ``attack_util.soft_prompt_attack``): the token that brings the concept back. Outside,
ESD's loss is taken with that adversarial prompt as the trained condition, the target still the
frozen model's negative guidance for the concept's own prompt, plus a utility-retaining term that
keeps retain prompts' predictions at the frozen model's, weighted ``preserve_weight`` (their
``retain_loss_w``, 0.3 in their README's command).

The retain set on real models is theirs: "a photo of <object>" over the 237 objects of their
``coco_object`` retain prompts (``erasectl/assets/advunlearn_retain.txt``, none a person, so
nudity never retains one), less any sharing a word with the concept; on the embedded world none,
since its every other prompt names the generic noun that may be drawn as the concept
(``WorldProfile.retain_concepts``); a multi-word concept keeps its words alone with --keep-words.
As their ``--retain_train reg``: ``retain_batch`` (5) retain prompts per iteration, in turn from
the shuffled set, each at an x_t sampled under it to the iteration's step (``retain_states own``,
``RetainTerm``); the embedded world's default takes one retain prompt per sample at the concept's
x_t (``concept``), as ESD's ``--preserve``. Each attack update starts from a random vocabulary
token (their README's ``--attack_init random``; ``latest`` resumes from the last token, the
world's default); each update is ``attack_steps`` Adam steps with a fresh optimiser, as in their
code; ``warmup_steps`` plain ESD iterations come first.

ESD's trained edit resists the text attacks best of the methods here (docs/attacks.md), and
adversarial training is the literature's way of hardening it.

What is trained is ESD's ``--parameter-group``; the default, ``text-encoder``, is the paper's
choice and their script's default (``--train_method text_encoder_full``): the text encoders'
transformer layers under a frozen UNet, the trained conditioning computed through them with
gradients, the frozen predictions from encodings made before training. The paper found the text
encoder the module that keeps robustness with the least damage to other prompts; on the embedded
world it is what kept the neighbours (docs/tuning/advunlearn.md). The UNet groups remain
(``esd-all`` is their ``--train_method full``).

As theirs, every attack step draws a new x_t at a new timestep (``--attack-states fresh``); the
embedded world's default attacks at the iteration's own x_t instead (``shared``), which did as
well there (docs/tuning/advunlearn.md). Where erasectl still differs from the authors' script
(docs/reference-code.md): their text-encoder group also trains the layer norms, which erasectl
leaves frozen so that a LoRA export carries the whole change; their retain list repeats six
objects, erasectl's lists each once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erasectl.architecture import differentiable_conditioning, encode_prompts
from erasectl.attacks import PLACEHOLDER, placeholder_token, random_token_embeddings, replace_concept
from erasectl.distributed import batch_part, sum_over_processes, world
from erasectl.errors import ConfigError, UserError
from erasectl.methods import esd
from erasectl.methods.base import ALL_FAMILIES, setting
from erasectl.methods.common import distance
from erasectl.methods.esd import ESDConfig

REFERENCE = "AdvUnlearn (OPTML-Group/AdvUnlearn, train-scripts/AdvUnlearn.py) argparse defaults"
README = "AdvUnlearn's README command (--attack_init random --retain_train reg --dataset_retain coco_object --retain_loss_w 0.3)"
POSITIONS = ("prefix", "replace", "both")
ATTACK_STATES = ("shared", "fresh")
ATTACK_INITS = ("random", "latest")
RETAIN_STATES = ("own", "concept")


@dataclass
class AdvUnlearnConfig(ESDConfig):
    """ESD's fields (the authors' ESD script's defaults) with AdvUnlearn's where it sets them."""

    steps: int = setting(1000, "Training iterations (warm-up included).", f"{REFERENCE}: --iterations 1000")
    mode: str = setting(
        "faithful-fp32",
        "faithful-fp32 (ESD's loop in fp32: one x_t an iteration, the model's own sampler), fast or straightforward (faithful, esd_sd.py's bf16, is ESD's alone).",
        "AdvUnlearn's script trains in fp32, one x_t an iteration",
    )
    lr: float = setting(1e-5, "Adam learning rate.", f"{REFERENCE}: --lr 1e-5")
    parameter_group: str = setting(
        "text-encoder",
        ESDConfig.__dataclass_fields__["parameter_group"].metadata["help"],
        f"{REFERENCE}: --train_method text_encoder_full (the paper's choice: the text encoder, not the UNet; erasectl leaves out its layer norms)",
    )
    warmup_steps: int = setting(
        200, "Plain ESD iterations before the attack starts.", f"{REFERENCE}: --warmup_iter 200"
    )
    attack_steps: int = setting(30, "Adam steps of the inner attack at each update.", f"{REFERENCE}: --attack_step 30")
    attack_lr: float = setting(1e-3, "Learning rate of the inner attack.", f"{REFERENCE}: --attack_lr 1e-3")
    attack_every: int = setting(
        1, "Iterations between updates of the adversarial token.", f"{REFERENCE}: --adv_prompt_update_step 1"
    )
    attack_position: str = setting(
        "prefix",
        "prefix (the token before the concept's prompt), replace (the token instead of the concept) or both (a token for each, the iterations alternating between them).",
        f"{REFERENCE}: --attack_type prefix_k",
    )
    attack_share: float = setting(
        1.0,
        "Share of the samples after the warm-up trained on the adversarial prompt; the others keep their own prompt.",
        f"{REFERENCE}: every sample after the warm-up",
    )
    preserve_weight: float = setting(
        0.3, "Weight of the utility-retaining term (the retain prompts, or --preserve).", f"{README}: 0.3"
    )
    retain_batch: int = setting(
        5,
        "retain-states own: retain prompts per iteration, taken in turn from the shuffled retain set.",
        f"{REFERENCE}: --retain_batch 5",
    )
    retain_states: str = setting(
        "own",
        "own (each retain prompt at an x_t sampled under it, to the iteration's step: their --retain_train reg) or concept (one retain prompt per sample at the concept's x_t, as ESD's --preserve).",
        f"{README}: reg",
    )
    attack_init: str = setting(
        "random",
        "random (each attack update starts from a random vocabulary token) or latest (from the last update's token).",
        f"{README}: random",
    )
    attack_samples: int = setting(
        1,
        "Samples each attack step moves the token on, the first of the iteration's adversarial ones (0: all of them).",
        "AdvUnlearn's attack_util.soft_prompt_attack, one sample (batch 1) per attack step",
    )
    attack_states: str = setting(
        "fresh",
        "fresh (new x_t, timesteps and prompts for every attack step) or shared (every attack step at the iteration's own x_t: a saving).",
        "AdvUnlearn's attack_util.soft_prompt_attack, which samples a new x_t at a new timestep for every attack step",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup_steps < 0 or self.attack_steps < 1 or self.attack_every < 1:
            raise ConfigError("warmup_steps must be 0 or more, attack_steps and attack_every at least 1")
        if self.attack_samples < 0:
            raise ConfigError(
                f"attack_samples must be 0 (all the adversarial samples) or more, got {self.attack_samples}"
            )
        if not self.attack_lr > 0:
            raise ConfigError(f"attack_lr must be positive, got {self.attack_lr}")
        if not 0 < self.attack_share <= 1:
            raise ConfigError(f"attack_share must be in (0, 1], got {self.attack_share}")
        if self.attack_states not in ATTACK_STATES:
            raise ConfigError(f"attack_states must be one of {', '.join(ATTACK_STATES)}, got {self.attack_states!r}")
        if self.mode == "faithful":
            raise ConfigError("advunlearn trains in fp32, as its authors' script; use --mode faithful-fp32 or fast")
        if self.attack_init not in ATTACK_INITS:
            raise ConfigError(f"attack_init must be one of {', '.join(ATTACK_INITS)}, got {self.attack_init!r}")
        if self.retain_states not in RETAIN_STATES:
            raise ConfigError(f"retain_states must be one of {', '.join(RETAIN_STATES)}, got {self.retain_states!r}")
        if self.retain_batch < 1:
            raise ConfigError(f"retain_batch must be at least 1, got {self.retain_batch}")
        if self.attack_position not in POSITIONS:
            raise ConfigError(f"attack_position must be one of {', '.join(POSITIONS)}, got {self.attack_position!r}")


class Adversary:
    """The inner attack: one placeholder token's embeddings (per text encoder, ``vectors``) and the
    adversarial prompt of each concept prompt."""

    def __init__(
        self,
        pipeline,
        prompts: list[str],
        concept_of: list[str],
        config: AdvUnlearnConfig,
        vectors: dict[str, torch.nn.Parameter],
    ):

        self.pipeline, self.config, self.vectors = pipeline, config, vectors
        forms = {
            "prefix": [f"{PLACEHOLDER} {p}" for p in prompts],
            "replace": [replace_concept(p, c, PLACEHOLDER) for p, c in zip(prompts, concept_of)],
        }
        # both: a token of its own for each form, the iterations after the warm-up alternating
        # between them (one token cannot be both a prefix and the concept's word)
        self.forms = (
            [forms["prefix"], forms["replace"]] if config.attack_position == "both" else [forms[config.attack_position]]
        )
        self.own = list(prompts)
        self.updates = 0
        start = {key: vector.detach().clone() for key, vector in vectors.items()}  # the generic word's embeddings
        self.tokens = [dict(start) for _ in self.forms]  # each form's token while another is in use
        self.active = 0

    def _use(self, form: int) -> None:
        """Put form ``form``'s token in the placeholder's place, keeping the one in use."""
        if form == self.active:
            return
        with torch.no_grad():
            self.tokens[self.active] = {key: vector.detach().clone() for key, vector in self.vectors.items()}
            for key, vector in self.vectors.items():
                vector.copy_(self.tokens[form][key])
        self.active = form

    def adversarial(self, sample_id: int) -> bool:
        """Whether the run's ``sample_id``-th sample is trained on its adversarial prompt: an even
        ``attack_share`` of the samples, in every batch size."""
        share = self.config.attack_share
        return int((sample_id + 1) * share) > int(sample_id * share)

    def trained_prompts(
        self,
        step: int,
        model,
        latents,
        timesteps,
        which: list[int],
        sample_ids: list[int],
        concept_prediction: torch.Tensor,
        batch: int,
        fresh_states=None,
    ) -> list[str] | None:
        """The trained prompts of this iteration's samples (None: their own): after the warm-up,
        the adversarial prompt for ``attack_share`` of them, the token first moved against
        ``model`` at those samples' x_t toward the frozen model's ``concept_prediction`` there
        (``batch``: the iteration's samples over every process). With ``attack_states`` fresh, each attack
        step takes new states from ``fresh_states(attack_samples)`` instead: ``(x_t, timesteps,
        prompt indices, the frozen concept predictions, this process's share of them)``, this
        process's part of that many new samples (0: a whole batch)."""
        if step < self.config.warmup_steps:
            return None
        iteration = step - self.config.warmup_steps
        self._use(iteration % len(self.forms))
        form = self.forms[self.active]
        chosen = [i for i, sample in enumerate(sample_ids) if self.adversarial(sample)]
        trained = [form[w] if i in chosen else self.own[w] for i, w in enumerate(which)]
        if iteration % self.config.attack_every == 0:
            if self.config.attack_states == "fresh":
                if fresh_states is None:
                    raise ValueError("attack_states fresh needs the training loop's fresh_states")

                def draws():
                    latents, timesteps, indices, prediction, part_share = fresh_states(self.config.attack_samples)
                    return latents, timesteps, [form[w] for w in indices.tolist()], prediction, part_share
            else:
                attacked, total = self._attacked(step, sample_ids, chosen, batch)
                fixed = (
                    latents[attacked],
                    timesteps[attacked],
                    [trained[i] for i in attacked],
                    concept_prediction[attacked],
                    len(attacked) / max(1, total),
                )

                def draws():
                    return fixed

            if self.config.attack_init == "random":  # a new start for every update, drawn from the step
                with torch.no_grad():
                    for key, vector in random_token_embeddings(
                        self.pipeline, self.config.seed * 100_003 + step
                    ).items():
                        self.vectors[key].copy_(vector)
            self._attack(model, draws)
        return trained

    def _attacked(self, step: int, sample_ids: list[int], chosen: list[int], batch: int) -> tuple[list[int], int]:
        """The samples the attack moves the token on, the first ``attack_samples`` adversarial ones of
        the iteration's whole batch (0: all of them): this process's (indices into its part) and
        how many there are over all processes."""
        positions = [q for q in range(batch) if self.adversarial(step * batch + q)]
        used = set(positions[: self.config.attack_samples] if self.config.attack_samples else positions)
        return [i for i in chosen if sample_ids[i] - step * batch in used], len(used)

    def _attack(self, model, draws) -> None:
        """``attack_steps`` Adam steps on the token, each on ``draws()``: x_t, timesteps, the
        adversarial prompts, the frozen concept predictions and this process's share of the loss. A
        process with none of the adversarial samples still takes part in every sum over processes,
        with zero gradients."""

        vectors = list(self.vectors.values())
        optimizer = torch.optim.Adam(vectors, lr=self.config.attack_lr)
        for _ in range(self.config.attack_steps):
            latents, timesteps, prompts, concept_prediction, share = draws()
            target = concept_prediction.float()
            if prompts:
                prediction = model(latents, timesteps, differentiable_conditioning(self.pipeline, prompts))
                loss = torch.nn.functional.mse_loss(prediction.float(), target) * share
                grads = [g.contiguous() for g in torch.autograd.grad(loss, vectors)]
            else:
                grads = [torch.zeros_like(v) for v in vectors]
            sum_over_processes(grads)
            for vector, grad in zip(vectors, grads):
                vector.grad = grad
            optimizer.step()
        self.updates += 1

    def state(self) -> dict[str, torch.Tensor]:
        """The token in use, and with two forms the other one and which is in use."""
        state = {f"adversary.{key}": vector.detach() for key, vector in self.vectors.items()}
        if len(self.forms) > 1:
            state.update(
                {
                    f"adversary.{form}.{key}": vector
                    for form, token in enumerate(self.tokens)
                    if form != self.active
                    for key, vector in token.items()
                }
            )
            state["adversary.active"] = torch.tensor(self.active)
        return state

    def restore(self, extras: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, vector in self.vectors.items():
                if f"adversary.{key}" in extras:
                    vector.copy_(extras[f"adversary.{key}"])
        if "adversary.active" in extras:
            self.active = int(extras["adversary.active"])
            for form in range(len(self.forms)):
                if form != self.active:
                    self.tokens[form] = {key: extras[f"adversary.{form}.{key}"].clone() for key in self.vectors}


class RetainTerm:
    """AdvUnlearn's utility-retaining term as their code takes it (``--retain_train reg``): each
    iteration ``retain_batch`` retain prompts, taken in turn from the set shuffled anew every pass
    (their ``PromptDataset``), each at an x_t sampled under that prompt from new noise to the
    iteration's step; the trained model's prediction there is pulled to the frozen one's, weighted
    ``preserve_weight``."""

    def __init__(self, pipeline, prompts: list[str], config: AdvUnlearnConfig):
        self.pipeline, self.prompts, self.config = pipeline, prompts, config
        self.batch = min(config.retain_batch, len(prompts))
        self.frozen_hidden = encode_prompts(pipeline, prompts)
        if world()[1] > 1 and (self.batch % world()[1] or config.batch_size % world()[1]):
            raise UserError(
                f"--retain-batch ({self.batch}) and --batch-size ({config.batch_size}) must split evenly over the {world()[1]} processes"
            )

    def chosen(self, step: int) -> list[int]:
        """The retain prompts of iteration ``step``: its block of ``batch`` in that pass's order
        (the remainder of a pass is skipped, as theirs); a function of the step, so a resumed run
        takes the same prompts."""
        per_pass = len(self.prompts) // self.batch
        rounds, block = divmod(step, per_pass)
        order = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.config.seed + rounds))
        return order[block * self.batch : (block + 1) * self.batch].tolist()

    def loss(self, training, step: int, stops: torch.Tensor) -> torch.Tensor:
        """This process's part of the weighted retain term (its prompts' summed losses over the
        batch), each retain prompt's x_t sampled to one of ``stops``, the iteration's sampler steps."""
        chosen = self.chosen(step)
        stops = stops[torch.arange(len(chosen)) % len(stops)]  # the iteration's steps, in turn
        latents = training.states_under(self.frozen_hidden[chosen], stops)
        part = batch_part(len(chosen))
        chosen, latents = chosen[part], latents[part]
        at = training.scheduler.timesteps[stops][part].to(latents.device)
        if not chosen:
            return torch.zeros((), device=latents.device)
        with torch.no_grad():
            frozen = training.model.frozen(latents, at, self.frozen_hidden[chosen])
        trained = training.encode_trained(self.pipeline, [self.prompts[i] for i in chosen])
        prediction = training.model(latents, at, trained)
        mean = distance(prediction.float(), frozen.float(), self.config.loss)
        return self.config.preserve_weight * mean * len(chosen) / self.batch


class AdvUnlearn(esd.ESD):
    name = "advunlearn"
    families = ALL_FAMILIES  # on SD3/FLUX its text-encoder group trains T5's layers too
    summary = "AdvUnlearn (Zhang et al., NeurIPS 2024): ESD trained against a soft-prompt attack."
    config_class = AdvUnlearnConfig
    default_preservation = ("words", "retain-set")
    concept_types = {}  # the paper trains the text encoder for every kind; nudity changes the retain set only

    def run(self, pipeline, request, config: AdvUnlearnConfig, progress=None, control=None):
        return _run(pipeline, request, config, progress, control)


def _run(pipeline, request, config: AdvUnlearnConfig, progress=None, control=None):

    pairs = [
        (template.format(concept), concept)
        for concept in request.concepts
        for template in request.templates(concept, "esd")
    ]
    prompts = [p for p, _ in pairs]
    retain_set = set(request.profile.retain_concepts(request.concepts))
    keep_prompts = [
        template.format(c)
        for c in request.preserve
        for template in request.templates(c, "retain" if c in retain_set else "esd")
    ]
    retain = RetainTerm(pipeline, keep_prompts, config) if keep_prompts and config.retain_states == "own" else None
    with placeholder_token(pipeline, request.profile.generic_word) as vectors:
        adversary = Adversary(pipeline, prompts, [c for _, c in pairs], config, vectors)
        result = esd.erase(
            pipeline,
            request.concepts,
            config,
            prompts,
            progress,
            None if retain else keep_prompts,
            control,
            adversary=adversary,
            retain=retain,
        )
        token = {key: vector.detach().clone() for key, vector in vectors.items()}
    result.extra["adversary_updates"] = adversary.updates
    result.extra["adversary_norm"] = {key: round(float(v.norm()), 4) for key, v in token.items()}
    return result
