"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024), UCE made robust, with an
optional attack in the loop.

After each UCE solve, RECE derives in closed form the embedding that makes the *edited* model
produce the concept's original cross-attention outputs again (an attack on the edit), and erases
it too, with the concept's guide, in the next solve; ``rounds`` times. Here every solve starts
from the original weights with the erased rows accumulated (the authors edit the edited model in
place each epoch); the adversarial map and its surrogate regulariser follow their
``close_form_emb`` (CharlesGong12/RECE). Chosen over AdvUnlearn's adversarial training because it
stays a closed form: seconds on a CPU, and it reuses UCE's preservation.

``attack_rounds`` adds what AdvUnlearn (Zhang et al. 2024) does with training, in closed form:
after a solve, erasectl's soft-prompt attack (textual inversion on the edited model, from images
the base model draws) learns a token that draws the concept again; the text-encoder rows of its
prompts join the erased rows, with the concept's guide, and the edit is solved again. This
re-erases what the attack finds; it costs one attack per round. The attack learns from images and
noise of seeds of its own (``erasectl.attacks.defence_config``), never those evaluate's attack
draws from the evaluation seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from erasectl.errors import ConfigError
from erasectl.methods.uce import UCEConfig, choose_guides, concept_rows, run as uce_run

REFERENCE = "RECE (CharlesGong12/RECE, train_object.py) argparse defaults"


@dataclass
class RECEConfig(UCEConfig):
    rounds: int = field(default=1, metadata={"help": "Adversarial embeddings found and erased after the first solve.", "source": f"{REFERENCE}: --epochs 1 (objects)"})
    regular_scale: float = field(default=1e-3, metadata={"help": "Surrogate regulariser of the adversarial embedding.", "source": f"{REFERENCE}: --regular_scale 1e-3"})
    attack_rounds: int = field(default=0, metadata={"help": "Soft-prompt attacks on the edited model whose tokens are erased too, one solve each (0: RECE alone).", "source": "erasectl (RECE has none)"})
    attack_steps: int = field(default=100, metadata={"help": "Optimisation steps of each in-the-loop attack.", "source": "erasectl"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 0 or self.regular_scale < 0 or self.attack_rounds < 0 or self.attack_steps < 1:
            raise ConfigError("rounds and attack_rounds must be 0 or more, attack_steps at least 1, regular_scale 0 or more")


Config = RECEConfig
ACCEPTS_ANCHOR = True
NEEDS_ANCHOR = False


def run(pipeline, request, config: RECEConfig, progress=None, control=None):
    if not config.attack_rounds:
        return uce_run(pipeline, request, config, progress, control)
    guides = choose_guides(pipeline, request.concepts, request.anchor, request.preserved(), config.guide_choice, request.guide_candidates)
    return with_attack_rounds(pipeline, request, config, guides, lambda extra: uce_run(pipeline, request, config, progress, control, extra))


def with_attack_rounds(pipeline, request, config, guides: dict[str, str], solve):
    """Solve, attack the edited model with the soft-prompt attack, add the attack prompts' rows to
    the erased ones (with each concept's guide) and solve again, ``config.attack_rounds`` times;
    every solve starts from the original weights. ``solve(extra_rows)`` is the closed form."""
    from erasectl.attacks import PLACEHOLDER, concept_latents, defence_config, learned_token, soft_prompt
    from erasectl.checkpoint import assign_tensors

    prompts = {c: [t.format(c) for t in request.templates(c, "uce")] for c in request.concepts}
    # drawn by the base model, from seeds of the defence's own (never evaluate's attack images)
    images = {c: concept_latents(pipeline, prompts[c], defence_config(config.seed, 0, config.attack_steps)) for c in request.concepts}
    rows, guide_rows, found = [], [], []
    seconds = 0.0
    for round_index in range(config.attack_rounds + 1):
        result = solve((torch.cat(rows), torch.cat(guide_rows)) if rows else None)
        seconds += result.wall_time_s
        if round_index == config.attack_rounds:
            break
        for concept in request.concepts:
            latents, which = images[concept]
            attack_config = defence_config(config.seed, round_index, config.attack_steps)
            attack = soft_prompt(pipeline, concept, prompts[concept], latents, which, attack_config, request.profile.generic_word)
            seconds += attack.wall_time_s
            with learned_token(pipeline, attack.embeddings):
                new, new_guides = concept_rows(pipeline, attack.prompts, [PLACEHOLDER] * len(attack.prompts), config.token_positions, [guides[concept]] * len(attack.prompts))
            rows.append(new)
            guide_rows.append(new_guides)
            found.append({"concept": concept, "round": round_index + 1, "seed": attack_config.seed, "final_loss": attack.losses[-1] if attack.losses else None})
        with torch.no_grad():
            assign_tensors(pipeline, result.base)  # the next solve starts from the original weights
    result.wall_time_s = round(seconds, 3)
    result.extra["attack_rounds"] = found
    return result
