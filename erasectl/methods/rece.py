"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024), UCE made robust, with an
optional attack in the loop.

RECE starts from a UCE edit (their README starts from UCE's paper-era checkpoint, so ``variant``
is ``paper`` and ``uce_lamb`` 0.5). Each round it derives in closed form the embedding that makes
the *edited* model produce the concept's original cross-attention outputs again (an attack on the
edit) and erases it, ``rounds`` times. ``round_edit``:

- ``in-place`` (their ``train_object.py``, CharlesGong12/RECE): the bare concept prompt's
  embedding at all positions, mapped by the adversarial map, is guided to the guide prompt's at the
  same positions, the edited weights are edited again with ``lamb``/``preserve_scale``, and the
  empty prompt and the preserved concepts keep the edited model's outputs at all positions;
- ``from-original`` (erasectl's earlier form, the embedded world's measured default): each solve
  starts from the original weights with the concept's rows and every adversarial row so far.

The adversarial map is their ``close_form_emb_regzero`` on real models and their surrogate
``close_form_emb`` on the embedded world (``adversarial_solve``). Differences that remain:
docs/reference-code.md.

``attack_rounds`` adds what AdvUnlearn (Zhang et al. 2024) does with training, in closed form:
after a solve, erasectl's soft-prompt attack (textual inversion on the edited model, from images
the base model draws) learns a token that draws the concept again; the text-encoder rows of its
prompts join the erased rows, with the concept's guide, and the edit is solved again. This
re-erases what the attack finds; it costs one attack per round. The attack learns from images and
noise of seeds of its own (``erasectl.attacks.defence_config``), never those evaluate's attack
draws from the evaluation seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from erasectl.architecture import component_name, denoiser, text_projections
from erasectl.attacks import PLACEHOLDER, concept_latents, defence_config, learned_token, soft_prompt
from erasectl.checkpoint import assign_tensors
from erasectl.errors import ConfigError
from erasectl.methods.base import ErasureResult, Stopwatch, setting
from erasectl.methods.uce import (
    UCE,
    UCEConfig,
    choose_guides,
    closed_form,
    concept_rows,
    edit_request,
    every_row,
)

REFERENCE = "RECE (CharlesGong12/RECE, train_object.py) argparse defaults"
SOLVES = ("regzero", "1st")
ROUND_EDITS = ("in-place", "from-original")


@dataclass
class RECEConfig(UCEConfig):
    lamb: float = setting(0.1, "lam: pull toward the original weights W0.", f"{REFERENCE}: --lamb 0.1")
    preserve_scale: float = setting(
        0.1, "ps: weight of the preserved concepts' rows.", f"{REFERENCE}: --preserve_scale 0.1"
    )
    variant: str = setting(
        "paper",
        "The UCE edit RECE starts from: paper (the paper-era script, RECE's own train_uce.py) or script.",
        "RECE's README starts from UCE's paper-era checkpoint; erase_methods/train_uce.py is that edit",
    )
    uce_lamb: float = setting(
        0.5,
        "lam of the UCE edit RECE starts from (in-place rounds; from-original uses --lamb throughout).",
        "UCE's paper-era train_erase.py: lamb=0.5, the checkpoint RECE's README starts from",
    )
    uce_preserve_scale: float = setting(
        1.0,
        "ps of the UCE edit RECE starts from (in-place rounds).",
        "UCE's paper-era train_erase.py: max(0.1, 1/len(retain_texts)), 1 with nothing preserved",
    )
    round_edit: str = setting(
        "in-place",
        "in-place: each round edits the edited model (the authors' code); from-original: each round solves again from the original weights with every row so far.",
        f"{REFERENCE}: edit_model_adversarial on the loaded UCE checkpoint",
    )
    rounds: int = setting(
        1, "Adversarial embeddings found and erased after the first solve.", f"{REFERENCE}: --epochs 1 (objects)"
    )
    regular_scale: float = setting(
        1e-3, "r: the regulariser of the adversarial embedding.", f"{REFERENCE}: --regular_scale 1e-3"
    )
    adversarial_solve: str = setting(
        "regzero",
        "The adversarial embedding's closed form: regzero (regularised toward the zero vector, their close_form_emb_regzero) or 1st (their surrogate regulariser, close_form_emb with reg_item 1st).",
        f"{REFERENCE}: close_form_emb_regzero, what their shipped scripts call",
    )
    attack_rounds: int = setting(
        0,
        "Soft-prompt attacks on the edited model whose tokens are erased too, one solve each (0: RECE alone).",
        "erasectl (RECE has none)",
    )
    attack_steps: int = setting(100, "Optimisation steps of each in-the-loop attack.", "erasectl")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adversarial_solve not in SOLVES:
            raise ConfigError(f"adversarial_solve must be one of {', '.join(SOLVES)}, got {self.adversarial_solve!r}")
        if self.round_edit not in ROUND_EDITS:
            raise ConfigError(f"round_edit must be one of {', '.join(ROUND_EDITS)}, got {self.round_edit!r}")
        if not self.uce_lamb > 0 or self.uce_preserve_scale < 0:
            raise ConfigError("uce_lamb must be positive and uce_preserve_scale 0 or more")
        if self.rounds < 0 or self.regular_scale < 0 or self.attack_rounds < 0 or self.attack_steps < 1:
            raise ConfigError(
                "rounds and attack_rounds must be 0 or more, attack_steps at least 1, regular_scale 0 or more"
            )


def solve_rounds(
    originals: dict[str, torch.Tensor], rows: torch.Tensor, guide_rows: torch.Tensor, preserve_rows, config: RECEConfig
) -> tuple[dict, dict]:
    """UCE's solve, then ``config.rounds`` times: the embeddings the edited model turns back into
    the concept's original outputs (``adversarial_map``) join the erased rows, with the same guides,
    and the edit is solved again from the original weights."""
    all_rows, all_guides = rows, guide_rows
    for round_index in range(config.rounds + 1):
        solved = {
            name: closed_form(w0, all_rows, all_guides.double() @ w0.double().T, preserve_rows, config)
            for name, w0 in originals.items()
        }
        if round_index == config.rounds:
            break
        adversarial = (
            rows.double() @ adversarial_map(solved, originals, config.regular_scale, config.adversarial_solve).T
        )
        all_rows, all_guides = torch.cat([all_rows, adversarial.float()]), torch.cat([all_guides, guide_rows])
    extra = {"erased_rows": len(all_rows)}
    if config.rounds:
        extra["adversarial_rows"] = len(all_rows) - len(rows)
    return solved, extra


def adversarial_map(
    edited: dict[str, torch.Tensor], originals: dict[str, torch.Tensor], regular_scale: float, solve: str = "regzero"
) -> torch.Tensor:
    """RECE's closed-form adversarial embedding (Gong et al., ECCV 2024, eq. 8; CharlesGong12/RECE,
    ``utils/embedding_calculation/close_form_emb.py``): the matrix M such that e = M c makes every
    edited projection W' output (nearly) what the original W0 gave for c, sums over keys and values:

    - ``regzero`` (``close_form_emb_regzero``): M = (r I + sum W'^T W')^-1 sum W'^T W0;
    - ``1st`` (``close_form_emb``, reg_item 1st): M = (sum W'^T W' (1 + r))^-1 sum (W'^T W0 + r W'^T W')."""
    first = next(iter(edited.values()))
    left = torch.zeros(first.shape[1], first.shape[1], dtype=torch.float64)
    right = torch.zeros_like(left)
    if solve == "regzero":
        left += regular_scale * torch.eye(first.shape[1], dtype=torch.float64)
    for name, w in edited.items():
        w, w0 = w.double(), originals[name].double()
        if solve == "regzero":
            left += w.T @ w
            right += w.T @ w0
        else:
            left += (1 + regular_scale) * w.T @ w
            right += w.T @ w0 + regular_scale * w.T @ w
    return torch.linalg.solve(left, right)


class RECE(UCE):
    name = "rece"
    summary = "RECE (Gong et al., ECCV 2024): UCE that also erases the embeddings that undo its edit."
    config_class = RECEConfig
    # RECE's README: guides stay the empty prompt (train_artists.py too); lambda and epochs per kind
    concept_types = {
        "nudity": {
            "regular_scale": (0.1, "RECE's README: nudity, lambda 1e-1"),
            "rounds": (3, "RECE's README: nudity for 3 epochs"),
        },
        "violence": {
            "regular_scale": (0.1, "RECE's README: unsafe concepts, lambda 1e-1"),
            "rounds": (2, "RECE's README: unsafe concepts for 2 epochs"),
        },
        "style": {"regular_scale": (1e-3, "RECE's README: artistic styles, lambda 1e-3, 1 epoch")},
    }

    def run(self, pipeline, request, config: RECEConfig, progress=None, control=None):
        def solve(extra_rows=None):
            if config.round_edit == "from-original":
                return edit_request(pipeline, request, config, progress, extra_rows, solve_rounds)
            return in_place_rounds(pipeline, request, config, progress, extra_rows)

        if not config.attack_rounds:
            return solve()
        guides = choose_guides(
            pipeline, request.concepts, request.anchor, request.preserve, config.guide_choice, request.guide_candidates
        )
        return with_attack_rounds(pipeline, request, config, guides, solve)


@torch.no_grad()
def in_place_rounds(pipeline, request, config: RECEConfig, progress=None, extra_rows=None) -> ErasureResult:
    """The authors' RECE (``train_object.py``): UCE's edit (``uce_lamb``, ``uce_preserve_scale``),
    then ``config.rounds`` times: each concept's adversarial embedding, the adversarial map of the
    bare concept prompt's rows at all positions, is guided to the guide prompt's rows at the same
    positions; the edited weights are edited again (``lamb``, ``preserve_scale``), the empty prompt
    and the preserved concepts keeping the edited model's outputs at all positions
    (``edit_model_adversarial``)."""
    watch = Stopwatch()
    first = replace(config, lamb=config.uce_lamb, preserve_scale=config.uce_preserve_scale)
    result = edit_request(pipeline, request, first, progress, extra_rows)
    guides = result.extra["guides"]
    net = denoiser(pipeline)
    projections, component = text_projections(net), component_name(net)
    originals = {name: result.base[f"{component}.{name}.weight"] for name, _ in projections}
    concept_rows_ = {concept: every_row(pipeline, [concept]).double() for concept in request.concepts}
    guide_rows = torch.cat([every_row(pipeline, [guides[c]]) for c in request.concepts])
    retained = every_row(pipeline, [""] + list(request.preserve))
    for _ in range(config.rounds):
        edited = {name: module.weight.detach().clone() for name, module in projections}
        mapping = adversarial_map(edited, originals, config.regular_scale, config.adversarial_solve)
        adversarial = torch.cat([rows @ mapping.T for rows in concept_rows_.values()]).float()
        for name, module in projections:
            w = edited[name].double()
            module.weight.copy_(closed_form(w, adversarial, guide_rows.double() @ w.T, retained, config))
    result.erased.update({f"{component}.{name}.weight": m.weight.detach().clone() for name, m in projections})
    result.extra["adversarial_rows"] = config.rounds * sum(len(rows) for rows in concept_rows_.values())
    result.wall_time_s = watch.seconds()
    return result


def with_attack_rounds(pipeline, request, config, guides: dict[str, str], solve):
    """Solve, attack the edited model with the soft-prompt attack, add the attack prompts' rows to
    the erased ones (with each concept's guide) and solve again, ``config.attack_rounds`` times;
    every solve starts from the original weights. ``solve(extra_rows)`` is the closed form."""

    prompts = {c: [t.format(c) for t in request.templates(c, "uce")] for c in request.concepts}
    # drawn by the base model, from seeds of the defence's own (never evaluate's attack images)
    images = {
        c: concept_latents(pipeline, prompts[c], defence_config(config.seed, 0, config.attack_steps))
        for c in request.concepts
    }
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
            attack = soft_prompt(
                pipeline, concept, prompts[concept], latents, which, attack_config, request.profile.generic_word
            )
            seconds += attack.wall_time_s
            with learned_token(pipeline, attack.embeddings):
                new, new_guides = concept_rows(
                    pipeline,
                    attack.prompts,
                    [PLACEHOLDER] * len(attack.prompts),
                    config.token_positions,
                    [guides[concept]] * len(attack.prompts),
                )
            rows.append(new)
            guide_rows.append(new_guides)
            found.append(
                {
                    "concept": concept,
                    "round": round_index + 1,
                    "seed": attack_config.seed,
                    "final_loss": attack.losses[-1] if attack.losses else None,
                }
            )
        with torch.no_grad():
            assign_tensors(pipeline, result.base)  # the next solve starts from the original weights
    result.wall_time_s = round(seconds, 3)
    result.extra["attack_rounds"] = found
    return result
