"""The embedded shapes world's own method defaults, with one line of why each differs from the
paper's. They were chosen on the world's tuning concepts and seeds (the full record:
docs/tuning/world-defaults.md); real models get the papers' settings (``erasectl.profiles``).
"""

from __future__ import annotations

from dataclasses import replace

WORLD_DEFAULTS: dict[str, dict[str, tuple[object, str]]] = {
    "esd": {
        "mode": ("fast", "the same target, batched: the authors' loop takes minutes per concept on 2 CPU cores"),
        "lr": (1e-4, "chosen with fast mode on the world's tuning concepts"),
        "negative_guidance": (0.5, "eta 1 cost colour accuracy"),
        "ddim_steps": (25, "fast mode's trajectories"),
        "batch_size": (8, "fast mode's batch"),
        "trajectory_reuse": (10, "fast mode's trajectory bank"),
        "preserve_unconditional": (1.0, "without it the world loses colour instead of the shape"),
    },
    "ablate": {
        "steps": (300, "with lr 1e-2, fewer steps left the concept drawn"),
        "lr": (1e-2, "a small model trained from scratch needs large steps; 2e-2 cost other shapes"),
        "anchor_images": (64, "enough for a world of 165 captions"),
        "anchor_guidance": (7.5, "the world model's sampling guidance"),
        "anchor_batch_size": (64, "32x32 images: one call"),
        "batch_size": (16, "chosen with the other defaults"),
        "away": (0.5, "anchor prompts draw the concept a fifth of the time; without it some stays"),
        "anchor_sampler": ("own", "the sampler the world's ablation defaults were chosen with"),
        "anchor_data": ("latents", "32 px images: rescaling them to a third leaves a few latent pixels"),
        "hflip": (False, "the world's shapes were measured unflipped"),
        "weight_decay": (0.0, "Adam, with which the world's ablation defaults were chosen"),
    },
    "uce": {
        "guide_choice": (
            "nearest-concept",
            "the empty or generic guide draws the concept too; the nearest other shape does not",
        ),
        "lamb": (0.1, "chosen on the world's tuning concepts"),
        "token_positions": ("to-end", "the concept's tokens alone left the concept drawn"),
    },
}
WORLD_DEFAULTS["nullspace"] = {
    "token_positions": ("to-end", "the last token alone left the concept drawn and cut a neighbour"),
    "guide_choice": ("nearest-concept", "the empty guide's rows are in the prior, so the edit damaged colours"),
}
WORLD_DEFAULTS["rece"] = {
    **WORLD_DEFAULTS["uce"],  # RECE is UCE plus its adversarial rounds
    "attack_rounds": (4, "RECE's closed-form round alone left the soft-prompt attack near full success"),
    "adversarial_solve": ("1st", "the surrogate the world's RECE defaults were chosen with"),
    "preserve_scale": (1.0, "UCE's scale, with which the world's RECE defaults were chosen"),
    "variant": ("script", "the UCE edit the world's RECE defaults were chosen with"),
    "round_edit": ("from-original", "the rounds the world's RECE defaults were chosen with"),
}
WORLD_DEFAULTS["advunlearn"] = {
    **WORLD_DEFAULTS["esd"],  # AdvUnlearn is ESD with an attack inside
    "steps": (250, "held the learned token down at every tuning erase seed, at 1.25x the time of 200"),
    "negative_guidance": (0.5, "ESD's world eta; eta 1 cost neighbours at the same attack success"),
    "parameter_group": ("text-encoder", "the paper's choice; it kept the neighbours best among the groups tried"),
    "warmup_steps": (50, "a warm-up lowered the attack's success with the text encoder"),
    "attack_steps": (4, "more steps per update were no better and took longer"),
    "attack_lr": (1e-3, "the paper's; 1e-2 took the adversary's token far from any word and cost neighbours"),
    "attack_position": (
        "prefix",
        "the paper's; the other positions let an attack back or left the plain prompts drawn",
    ),
    "attack_samples": (1, "the paper's batch of one; every sample took 2.5-2.9x ESD's time"),
    "attack_states": ("shared", "the iteration's own x_t did as well as fresh ones, for less time"),
    "preserve_weight": (1.0, "the weight the world's AdvUnlearn defaults were chosen with"),
    "retain_states": ("concept", "at the concept's x_t: own x_t were no better on the world, for more time"),
    "attack_init": ("latest", "the start the world's AdvUnlearn defaults were chosen with"),
}

# The MMDiT world's: the UNet world's where nothing measured on the MMDiT says otherwise.
MMDIT_DEFAULTS: dict[str, dict[str, tuple[object, str]]] = {method: dict(d) for method, d in WORLD_DEFAULTS.items()}
for _method in ("esd", "advunlearn"):
    MMDIT_DEFAULTS[_method]["sample_size"] = (0, "the model's own 32 px; the paper's 1024 px has no positions here")
# chosen on "square", seeds 100-107 (docs/tuning/mmdit-world.md)
MMDIT_DEFAULTS["esd"]["lr"] = (1e-3, "the text path barely moved at the UNet world's 1e-4; more cost neighbours")
MMDIT_DEFAULTS["uce"]["guide_choice"] = ("empty", "the paper's guide; the nearest other shape cost that shape")
MMDIT_DEFAULTS["rece"]["guide_choice"] = MMDIT_DEFAULTS["uce"]["guide_choice"]  # RECE is UCE plus its rounds


def for_several_concepts(config, count: int, chosen: set[str]):
    """ESD's fast mode on several concepts at once: 200 iterations per concept at lr 2e-4, for
    whichever of steps and lr the user did not choose (two concepts at lr 1e-4 left one of them)."""
    if getattr(config, "mode", None) != "fast" or count <= 1:
        return config
    scaled = {"steps": 200 * count, "lr": 2e-4}
    return replace(config, **{k: v for k, v in scaled.items() if k not in chosen})
