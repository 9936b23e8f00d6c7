"""Attacks on an erasure: does the erased model draw the concept again for a learned token or a
searched prompt?

Both attacks learn from images of the concept that the *base* model draws, and score candidates
with the *erased* model's own denoising loss on them (the erased model is the one attacked):

- ``soft-prompt``: textual inversion (Gal et al., ICLR 2023): one new token's embedding, for every
  text encoder of the model, trained so that the erased model denoises the concept's images when
  prompted with it. Pham et al. (ICLR 2024) recover the concept this way from seven erasure
  methods. The embedding is written in the layout diffusers' ``load_textual_inversion``,
  AUTOMATIC1111 and ComfyUI read (``emb_params``; ``clip_l``/``clip_g`` for SDXL).
- ``prompt-search``: a few discrete prefix tokens put before the concept's own prompt, chosen from
  the tokenizer's words to minimise that loss, under a budget. UnlearnDiffAtk (Zhang et al., ECCV
  2024) optimises such a prefix with projected gradients; here a coordinate search tries
  candidate words at each position and keeps the best, on a fixed set of noise draws so that
  candidates are compared on equal terms.

Success is judged by evaluate's judge on fixed seeds: the share of attack images it reads as the
concept.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch

from erasectl.architecture import denoiser, differentiable_conditioning, predict_noise
from erasectl.checkpoint import is_clip
from erasectl.diffusion import draw_timesteps, noise_target, training_scheduler
from erasectl.errors import ConfigError
from erasectl.files import write_atomically
from erasectl.generation import draw_latents, generate
from erasectl.run_state import Interrupted, StepHook, read_state
from erasectl.statistics import interval95

TEXT_ATTACKS = ("soft-prompt", "prompt-search")
# The changes the compose attack makes to an erased model, each alone
COMPOSE_CHANGES = ("bf16", "fp16", "int8", "erase")
# An attack's row in evaluate's metrics and report (after the model's name)
ATTACK_ROW = (
    "attack",
    "concept",
    "attack_success",
    "attack_success_interval95",
    "attack_success_runs",
    "attack_success_worst",
    "attack_seeds",
    "attack_success_outline",
    "erased_plain_accuracy",
    "erased_plain_accuracy_interval95",
    "erased_plain_outline",
    "base_accuracy",
    "base_accuracy_interval95",
    "prefix",
    "attack_wall_time_s",
    "stopped_by_budget",
    "details",  # the attacks that skip the prompt: relearn's curve, compose's changes
)
# A defence that runs the soft-prompt attack in its loop (rece's and nullspace's attack rounds)
# draws its images and noise from the erase seed plus this, so that it never trains on the images
# evaluate's attack draws from the evaluation seeds (which, like erase seeds, start at 0).
DEFENCE_SEED_OFFSET = 1_000_000
PLACEHOLDER = "<erasectl-attack>"
T5_KEY = "t5xxl"  # SD3's and FLUX's T5, as their single-file checkpoints name it


def encoders(pipeline) -> list[tuple[str, str, str]]:
    """``(tokenizer, text encoder, key)`` of every text encoder the pipeline has: CLIP-L and CLIP-G
    (SDXL, SD3), and T5 (SD3's third, FLUX's second), whose token the attacks learn too."""
    found = []
    for tokenizer, encoder in (
        ("tokenizer", "text_encoder"),
        ("tokenizer_2", "text_encoder_2"),
        ("tokenizer_3", "text_encoder_3"),
    ):
        module = getattr(pipeline, encoder, None)
        if module is None or getattr(pipeline, tokenizer, None) is None:
            continue
        key = "clip_l" if encoder == "text_encoder" else "clip_g"
        found.append((tokenizer, encoder, key if is_clip(module) else T5_KEY))
    return found


@dataclass(frozen=True)
class AttackConfig:
    images: int = 16  # concept images the base model draws
    image_steps: int = 25
    image_guidance: float = 7.5
    steps: int = 150  # soft-prompt: optimisation steps
    lr: float = 5e-3
    batch_size: int = 8
    prefix_tokens: int = 3  # prompt-search: prefix length
    candidates: int = 24  # prompt-search: words tried per position and round
    rounds: int = 3
    draws: int = 32  # prompt-search: fixed noise draws the loss is averaged over
    budget_s: float = 300.0
    seed: int = 0
    search_words: int = 1000  # prompt-search on a real model: the tokenizer's most frequent words
    # relearn: LoRA fine-tuning steps after which success is judged, its rank (diffusers'
    # DreamBooth-LoRA example's) and learning rate (None: the model's profile's)
    relearn_steps: tuple[int, ...] = (10, 25, 50, 100, 200)
    relearn_rank: int = 4
    relearn_lr: float | None = None
    inversion_steps: int = 50  # inversion: DDIM (flow: Euler) steps, as null-text inversion and TINA take
    # compose: the later changes tried, each alone (erase: a second erasure of another concept on top)
    compose: tuple[str, ...] = ("bf16", "fp16", "int8", "erase")
    compose_concept: str | None = None  # the second erasure's concept; None: the first surrounding one

    def __post_init__(self) -> None:
        for name in ("images", "image_steps", "steps", "batch_size", "prefix_tokens", "candidates", "rounds", "draws"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.budget_s > 0 or (self.relearn_lr is not None and not self.relearn_lr > 0):
            raise ConfigError("lr, relearn-lr and budget-s must be positive")
        if not self.relearn_steps or min(self.relearn_steps) <= 0 or self.relearn_rank <= 0:
            raise ConfigError("relearn-steps must be positive step counts, and relearn-rank at least 1")
        if self.inversion_steps <= 0:
            raise ConfigError(f"inversion-steps must be at least 1, got {self.inversion_steps}")
        unknown = [c for c in self.compose if c not in COMPOSE_CHANGES]
        if unknown or not self.compose:
            raise ConfigError(f"compose changes are {', '.join(COMPOSE_CHANGES)}; got {', '.join(self.compose)}")

    def progress_total(self, attack: str) -> int:
        """The steps an attack reports progress in: optimisation steps, prefix positions, relearning
        steps, changes composed, or one inversion."""
        totals = {"soft-prompt": self.steps, "prompt-search": self.rounds * self.prefix_tokens,
                  "relearn": max(self.relearn_steps), "compose": len(self.compose)}  # fmt: skip
        return totals.get(attack, 1)


def defence_config(erase_seed: int, round_index: int, steps: int) -> AttackConfig:
    """The in-the-loop attack of a defence: its own images and noise, never evaluate's."""
    return AttackConfig(images=16, steps=steps, seed=erase_seed + DEFENCE_SEED_OFFSET + round_index)


@dataclass
class AttackResult:
    attack: str
    prompts: list[str]  # what the erased model is prompted with (soft-prompt: with the placeholder)
    losses: list[float]
    wall_time_s: float
    embeddings: dict[str, torch.Tensor] | None = None  # soft-prompt: per text encoder
    prefix: str | None = None  # prompt-search
    stopped_by_budget: bool = False


def concept_latents(pipeline, prompts: list[str], config: AttackConfig) -> tuple[torch.Tensor, list[int]]:
    """Clean latents of ``config.images`` images the (base) pipeline draws for ``prompts``, cycling
    through them, and the prompt index of each."""

    return draw_latents(
        pipeline, prompts, config.images, config.seed, config.image_steps, config.image_guidance, config.batch_size
    )


def noise_draws(pipeline, latents: torch.Tensor, count: int, generator: torch.Generator):
    """``count`` (index, noisy latent, timestep, target) draws from the model's training process."""

    scheduler = training_scheduler(pipeline)
    index = torch.randint(0, len(latents), (count,), generator=generator)
    clean = latents[index]
    noise = torch.randn(clean.shape, generator=generator).to(clean)
    timesteps = draw_timesteps(scheduler, count, generator)
    return (
        index,
        scheduler.add_noise(clean, noise, timesteps),
        timesteps,
        noise_target(scheduler, clean, noise, timesteps),
    )


def denoising_loss(
    pipeline, prompts: list[str], noisy: torch.Tensor, timesteps: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:

    conditioning = differentiable_conditioning(pipeline, prompts)
    prediction = predict_noise(denoiser(pipeline), noisy, timesteps.to(noisy.device), conditioning)
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def replace_concept(prompt: str, concept: str, word: str) -> str:
    head, _, tail = prompt.rpartition(concept)
    return " ".join(f"{head}{word}{tail}".split())


def token_table(encoder) -> torch.nn.Embedding:
    """The embedding table a text encoder's forward reads: T5's stack holds its own module over the
    shared weights, which ``get_input_embeddings`` does not return."""
    stack = getattr(encoder, "encoder", None)
    return getattr(stack, "embed_tokens", None) or encoder.get_input_embeddings()


@contextmanager
def placeholder_token(pipeline, init_word: str):
    """Add ``PLACEHOLDER`` to every tokenizer of the pipeline (copies, restored afterwards) and
    yield ``{encoder key: vector}``: trainable embeddings that a forward hook puts wherever the
    placeholder's id is read. Initialised from ``init_word``'s token embedding(s)."""
    import copy

    originals = {name: getattr(pipeline, name) for name, _, _ in encoders(pipeline)}
    copies: dict[int, object] = {}
    for name, tokenizer in originals.items():
        if id(tokenizer) not in copies:
            copies[id(tokenizer)] = copy.deepcopy(tokenizer)
            copies[id(tokenizer)].add_tokens([PLACEHOLDER])
        setattr(pipeline, name, copies[id(tokenizer)])
    vectors, handles = {}, []
    try:
        for name, encoder_name, key in encoders(pipeline):
            encoder = getattr(pipeline, encoder_name)
            tokenizer = getattr(pipeline, name)
            token_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER)
            table = token_table(encoder)
            init_ids = originals[name](init_word, add_special_tokens=False).input_ids or [
                tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            ]
            vector = torch.nn.Parameter(table.weight[init_ids].detach().float().mean(0).clone())
            vectors[key] = vector
            seen: dict = {}  # the ids of the table's current call, shared by its two hooks
            handles += [
                table.register_forward_pre_hook(_map_new_ids(table.num_embeddings, seen)),
                table.register_forward_hook(_swap_rows(token_id, vector, seen)),
            ]
        yield vectors
    finally:
        for handle in handles:
            handle.remove()
        for name, tokenizer in originals.items():
            setattr(pipeline, name, tokenizer)


@torch.no_grad()
def random_token_embeddings(pipeline, seed: int) -> dict[str, torch.Tensor]:
    """One vocabulary token drawn at random (from ``seed``), its input embedding in each text
    encoder, under ``placeholder_token``'s keys: where AdvUnlearn's ``attack_init random`` starts.
    The CLIP encoders share a vocabulary; T5's, smaller and another, takes the draw modulo its size."""
    first = pipeline.text_encoder.get_input_embeddings()
    token_id = int(torch.randint(0, first.num_embeddings, (1,), generator=torch.Generator().manual_seed(seed)))
    found = {}
    for _, encoder_name, key in encoders(pipeline):
        table = token_table(getattr(pipeline, encoder_name)).weight
        found[key] = table[token_id % len(table)].detach().float().clone()
    return found


def _map_new_ids(size: int, seen: dict):
    """A pre-hook: remember (in ``seen``) the ids the embedding table is called with and map ids
    past its end (the placeholder's) to 0, so that the table needs no new row."""

    def pre_hook(module, inputs):
        ids = inputs[0]
        seen["ids"] = ids
        return (torch.where(ids >= size, torch.zeros_like(ids), ids),)

    return pre_hook


def _swap_rows(token_id: int, vector: torch.nn.Parameter, seen: dict):
    """A forward hook: the placeholder's rows (by the ids ``seen`` by the pre-hook) become ``vector``
    (differentiably)."""

    def hook(module, inputs, output):
        mask = (seen["ids"] == token_id).unsqueeze(-1)
        return torch.where(mask, vector.to(output.dtype), output) if mask.any() else output

    return hook


def soft_prompt(
    pipeline,
    concept: str,
    prompts: list[str],
    latents: torch.Tensor,
    which: list[int],
    config: AttackConfig,
    init_word: str,
    progress=None,
    control=None,
) -> AttackResult:
    """Textual inversion on the (erased) pipeline: the placeholder replaces the concept in its
    prompts; its embedding is trained on the concept's latents. Resumable through ``control``
    (``erasectl.run_state``), like an erasure."""

    started = time.perf_counter()
    attack_prompts = [replace_concept(p, concept, PLACEHOLDER) for p in prompts]
    unet = denoiser(pipeline)
    frozen = [
        (p, p.requires_grad)
        for module in (unet, *(getattr(pipeline, e) for _, e, _ in encoders(pipeline)))
        for p in module.parameters()
    ]
    for parameter, _ in frozen:
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    stopped = False
    try:
        with placeholder_token(pipeline, init_word) as vectors:
            optimizer = torch.optim.Adam(list(vectors.values()), lr=config.lr)
            hook = StepHook(control, _StepConfig(config), vectors, optimizer, generator)
            start, losses, _ = hook.resume()
            for step in range(start, config.steps):
                if time.perf_counter() - started > config.budget_s:
                    stopped = True
                    break
                index, noisy, timesteps, target = noise_draws(pipeline, latents, config.batch_size, generator)
                loss = denoising_loss(
                    pipeline, [attack_prompts[which[i]] for i in index.tolist()], noisy, timesteps, target
                )
                hook.finish_step(loss, step, losses, progress, {})
            embeddings = {key: vector.detach().clone() for key, vector in vectors.items()}
    finally:
        for parameter, flag in frozen:
            parameter.requires_grad_(flag)
    return AttackResult(
        "soft-prompt",
        list(dict.fromkeys(attack_prompts)),
        losses,
        round(time.perf_counter() - started, 2),
        embeddings=embeddings,
        stopped_by_budget=stopped,
    )


@dataclass(frozen=True)
class _StepConfig:
    """What ``StepHook`` and the resumable state read of an attack: its steps and settings."""

    attack: AttackConfig

    @property
    def steps(self) -> int:
        return self.attack.steps


SEARCH_STATE = "erasectl.search-state"


def _save_search_state(
    path,
    step: int,
    config: AttackConfig,
    generator: torch.Generator,
    prefix: list[str],
    best: float,
    losses: list[float],
):
    from safetensors.torch import save_file

    metadata = {
        "erasectl.format": SEARCH_STATE,
        "step": str(step),
        "config": json.dumps(asdict(config)),
        "prefix": json.dumps(prefix),
        "best": repr(best),
        "losses": json.dumps(losses),
    }
    return write_atomically(
        path, lambda tmp: save_file({"rng.generator": generator.get_state()}, str(tmp), metadata=metadata)
    )


def _load_search_state(
    path, config: AttackConfig, generator: torch.Generator
) -> tuple[int, list[str], float, list[float]]:

    tensors, metadata = read_state(path, SEARCH_STATE, "prompt-search state", config)
    generator.set_state(tensors["rng.generator"])
    return (
        int(metadata["step"]),
        json.loads(metadata["prefix"]),
        float(metadata["best"]),
        json.loads(metadata["losses"]),
    )


@torch.no_grad()
def prompt_search(
    pipeline,
    concept: str,
    prompts: list[str],
    latents: torch.Tensor,
    which: list[int],
    config: AttackConfig,
    vocabulary: list[str],
    progress=None,
    control=None,
) -> AttackResult:
    """Coordinate search for a prefix of ``config.prefix_tokens`` words, put before each concept
    prompt, minimising the erased model's denoising loss on the concept's latents (one fixed set of
    ``config.draws`` noise draws). Each round tries ``config.candidates`` words at every position;
    the search stops after ``config.rounds`` rounds or ``config.budget_s`` seconds. Resumable
    through ``control`` (``erasectl.run_state.RunControl``): a state after every position."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    index, noisy, timesteps, target = noise_draws(pipeline, latents, config.draws, generator)
    chosen = [prompts[which[i]] for i in index.tolist()]
    words = [w for w in dict.fromkeys(vocabulary) if w.lower() not in set(concept.lower().split())]
    if not words:
        raise ConfigError("the vocabulary has no word besides the concept's to search over")

    def loss_of(prefix: list[str]) -> float:
        return float(denoising_loss(pipeline, [f"{' '.join(prefix)} {p}" for p in chosen], noisy, timesteps, target))

    order = torch.randperm(len(words), generator=generator).tolist()
    total = config.progress_total("prompt-search")
    if control is not None and control.resume_from is not None:
        start, prefix, best, losses = _load_search_state(control.resume_from, config, generator)
    else:
        prefix = [words[order[i % len(words)]] for i in range(config.prefix_tokens)]
        start, best = 0, loss_of(prefix)
        losses = [best]
    stopped = False
    for step in range(start, total):
        position = step % config.prefix_tokens
        pool = torch.randperm(len(words), generator=generator)[: config.candidates].tolist()
        deadline = started + config.budget_s
        prefix, best, stopped = _try_candidates(prefix, best, position, [words[i] for i in pool], loss_of, deadline)
        losses.append(best)
        if progress is not None:
            progress(step + 1, total, {"loss": best})
        if stopped:
            break
        if step + 1 < total:
            _maybe_save_search(control, step + 1, config, generator, prefix, best, losses)
    text = " ".join(prefix)
    return AttackResult(
        "prompt-search",
        [f"{text} {p}" for p in prompts],
        losses,
        round(time.perf_counter() - started, 2),
        prefix=text,
        stopped_by_budget=stopped,
    )


def _try_candidates(prefix: list[str], best: float, position: int, candidates: list[str], loss_of, deadline: float):
    """Each candidate word at ``position``, keeping the prefix with the lowest loss; stops at the
    deadline. Returns ``(prefix, its loss, whether the deadline stopped it)``."""
    for candidate in candidates:
        if time.perf_counter() > deadline:
            return prefix, best, True
        trial = prefix[:position] + [candidate] + prefix[position + 1 :]
        value = loss_of(trial)
        if value < best:
            best, prefix = value, trial
    return prefix, best, False


def _maybe_save_search(control, done: int, config: AttackConfig, generator, prefix, best, losses) -> None:
    """Save the search's state when its run control asks (every N positions, or a stop), and stop."""

    if control is None or control.state_dir is None:
        return
    asked = control.stop_requested()
    if asked or (control.checkpointing_steps and done % control.checkpointing_steps == 0):
        path = _save_search_state(
            control.state_dir / f"state-{done:06d}.safetensors", done, config, generator, prefix, best, losses
        )
        if asked:
            raise Interrupted(path, done)


def outline_share(outline, concept: str):
    """The share of images whose outline shows ``concept``, where the model's world has an outline
    reader (the shapes world's second reading); None otherwise."""

    def share(items) -> float | None:
        hits = outline([item.image for item in items], concept) if outline else None
        return round(sum(hits) / len(hits), 4) if hits is not None else None

    return share


def success_rate(
    pipeline, judge, protocol, prompts: list[str], seeds: list[int], settings, label: str
) -> tuple[float, list]:
    """The share of images of ``prompts`` x ``seeds`` the judge reads as ``label`` among the
    protocol's candidates, and the images."""

    items = generate(pipeline, prompts, seeds, settings)
    embeds = judge.embed_images([item.image for item in items])
    judged = judge.classify(embeds, [protocol.judge_template.format(c) for c in protocol.candidates]).tolist()
    hits = sum(protocol.candidates[j] == label for j in judged)
    return round(hits / len(items), 4), items


def pool_runs(summaries: list[dict]) -> dict:
    """Several runs of one attack on one model, judged on the same seeds, as one summary: the mean
    success, each run's, and the worst for the erasure (the highest, whose prefix is kept); the
    plain and base figures are the runs' own (the same seeds). The interval counts every run's
    images; as they share their seeds, another draw of seeds may move the mean further."""
    rates = [s["attack_success"] for s in summaries]
    worst = max(range(len(summaries)), key=lambda i: rates[i])
    mean = round(sum(rates) / len(rates), 4)
    outlines = [s["attack_success_outline"] for s in summaries]
    return {
        **summaries[worst],
        "attack_success": mean,
        "attack_success_interval95": interval95(mean, sum(s["images"] for s in summaries)),
        "attack_success_runs": rates,
        "attack_success_worst": rates[worst],
        "attack_seeds": [s["config"]["seed"] for s in summaries],
        "attack_success_outline": None if None in outlines else round(sum(outlines) / len(outlines), 4),
        "attack_wall_time_s": round(sum(s["attack_wall_time_s"] for s in summaries), 2),
        "stopped_by_budget": any(s["stopped_by_budget"] for s in summaries),
    }


def save_embeddings(path, embeddings: dict[str, torch.Tensor], metadata: dict[str, str]):
    """A textual-inversion file: ``emb_params`` for one text encoder (SD 1.x/2.x, as AUTOMATIC1111
    and diffusers read it), ``clip_l``/``clip_g`` for SDXL's two."""
    from safetensors.torch import save_file

    tensors = (
        {"emb_params": embeddings["clip_l"][None]}
        if set(embeddings) == {"clip_l"}
        else {k: v[None] for k, v in embeddings.items()}
    )
    return write_atomically(
        path,
        lambda tmp: save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(tmp), metadata=metadata),
    )


@contextmanager
def learned_token(pipeline, embeddings: dict[str, torch.Tensor]):
    """The placeholder token, with learned embeddings, usable in prompts inside the block."""
    with placeholder_token(pipeline, "a") as vectors:
        with torch.no_grad():
            for key, vector in vectors.items():
                vector.copy_(embeddings[key])
        yield


def run_attack(
    load_base,
    load_erased,
    concept: str,
    protocol,
    judge,
    attack: str,
    config: AttackConfig,
    seeds: list[int],
    settings,
    profile,
    progress=None,
    control=None,
    judged: dict | None = None,
) -> tuple[dict, dict]:
    """One attack on one erased model: draw the concept with the base model, attack the erased
    one, and judge what the erased model draws for the plain and the attack prompts on ``seeds``.
    The model's ``profile`` gives the word the learned token starts from and the search's words.
    ``judged``, shared by the attacks and runs on one erased model with the same ``seeds``, keeps
    the base's and the plain prompts' judged images, which no attack changes, so they are drawn
    once. Returns ``(summary, images)``; ``images`` holds base / erased / attack items for a grid."""
    if attack not in TEXT_ATTACKS:
        raise ConfigError(f"unknown text attack {attack!r}; choose one of {', '.join(TEXT_ATTACKS)}")
    prompts = protocol.prompt_sets()[0].prompts
    judged = {} if judged is None else judged
    base = load_base()
    latents, which = concept_latents(base, prompts, config)
    if "base" not in judged:
        judged["base"] = success_rate(base, judge, protocol, prompts, seeds, settings, concept)
    base_rate, base_items = judged["base"]
    erased = load_erased()
    if "plain" not in judged:
        judged["plain"] = success_rate(erased, judge, protocol, prompts, seeds, settings, concept)
    plain_rate, plain_items = judged["plain"]
    if attack == "soft-prompt":
        result = soft_prompt(erased, concept, prompts, latents, which, config, profile.generic_word, progress, control)
    else:
        vocabulary = profile.prior_vocabulary(erased, config.search_words)
        result = prompt_search(erased, concept, prompts, latents, which, config, vocabulary, progress, control)
    with learned_token(erased, result.embeddings) if result.embeddings is not None else nullcontext():
        rate, attack_items = success_rate(erased, judge, protocol, result.prompts, seeds, settings, concept)
    share_by_outline = outline_share(profile.outline_reader(), concept)
    summary = {
        "attack": attack, "concept": concept, "attack_success": rate, "attack_success_interval95": interval95(rate, len(attack_items)),
        "erased_plain_accuracy": plain_rate, "base_accuracy": base_rate,
        "erased_plain_accuracy_interval95": interval95(plain_rate, len(plain_items)),
        "base_accuracy_interval95": interval95(base_rate, len(base_items)),
        # the shapes world's second reading, by outline (None on real models)
        "attack_success_outline": share_by_outline(attack_items), "erased_plain_outline": share_by_outline(plain_items),
        "prompts": result.prompts, "prefix": result.prefix, "losses": [round(v, 5) for v in result.losses],
        "attack_wall_time_s": result.wall_time_s, "stopped_by_budget": result.stopped_by_budget,
        "images": len(attack_items), "seeds": seeds, "config": asdict(config),
    }  # fmt: skip
    return summary, {"base": base_items, "erased": plain_items, "attack": attack_items, "embeddings": result.embeddings}
