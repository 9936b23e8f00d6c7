"""erasectl attack: parse the options, run ``erasectl.attacking``, print."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import (
    exit_interrupted,
    optional_list,
    progress_bar,
    run_control,
    stop_signals,
    user_errors,
)
from erasectl.cli.options import ALLOW_PICKLE, DEVICE, FORCE, MODEL_CONFIG, QUIET
from erasectl.errors import UserError

# fmt: off
CHECKPOINT = typer.Option(None, "--checkpoint", help="The erased checkpoint to attack (its .safetensors file or erase's run folder); default: the newest in runs/.")
CONCEPT = typer.Option(None, "--concept", help="The concept to recover; default: the checkpoint's first.")
METHOD = typer.Option("soft-prompt", "--method", help="soft-prompt (textual inversion on the erased model), prompt-search (a searched prefix of words); without the prompt: relearn (LoRA fine-tuning on the base's images of the concept), inversion (the base's images inverted to noise and redrawn under the empty prompt), compose (a cast, int8 weights or a second erasure on top).")
RELEARN_STEPS = typer.Option("10,25,50,100,200", "--relearn-steps", help="relearn: comma-separated fine-tuning step counts after which success is judged.")
RELEARN_LR = typer.Option(None, "--relearn-lr", help="relearn: the LoRA's AdamW learning rate; default: 1e-4 on real models (diffusers' DreamBooth-LoRA example's), the embedded world's own.")
RELEARN_RANK = typer.Option(4, "--relearn-rank", help="relearn: the LoRA's rank.")
INVERSION_STEPS = typer.Option(50, "--inversion-steps", help="inversion: deterministic sampler steps each way (50, as null-text inversion and TINA).")
COMPOSE = typer.Option("bf16,fp16,int8,erase", "--compose", help="compose: the later changes tried, each alone: bf16, fp16, int8, erase (a second erasure with the same method).")
COMPOSE_CONCEPT = typer.Option(None, "--compose-concept", help="compose: the second erasure's concept; default: the first surrounding concept.")
JUDGE = typer.Option(None, "--judge", help="A CLIPModel hub id or folder; default: the embedded world judge (a real model needs a real CLIP).")
SURROUNDING = typer.Option(None, "--surrounding", help="Comma-separated concepts the judge may read instead (a real model needs them).")
IMAGES = typer.Option(16, "--images", help="Images of the concept the base model draws to learn from.")
STEPS = typer.Option(150, "--steps", help="soft-prompt: optimisation steps.")
LR = typer.Option(5e-3, "--lr", help="soft-prompt: Adam learning rate of the token embedding.")
PREFIX_TOKENS = typer.Option(3, "--prefix-tokens", help="prompt-search: words put before the concept's prompt.")
CANDIDATES = typer.Option(24, "--candidates", help="prompt-search: words tried per position and round.")
ROUNDS = typer.Option(3, "--rounds", help="prompt-search: passes over the prefix.")
BUDGET = typer.Option(300.0, "--budget-s", help="Stop learning after this many seconds (the images are judged after).")
N_PER_PROMPT = typer.Option(8, "--n-per-prompt", help="Seeds per prompt when judging.")
SEED = typer.Option(0, "--seed", help="The first judging seed; also seeds the attack.")
OUT = typer.Option(None, "--out", help="Output folder; default: runs/attack-<method>-<time>.")
CHECKPOINTING = typer.Option(None, "--checkpointing_steps", help="Save a resumable state every N steps (soft-prompt: optimisation steps; prompt-search: prefix positions), in <out>/states.")
RESUME = typer.Option(None, "--resume_from_checkpoint", help="Continue an interrupted attack: latest, or a state file; pass the run's --out.")
AS_JSON = typer.Option(False, "--json", help="Print attack.json on stdout.")
# fmt: on


@user_errors
def attack(
    checkpoint: Path = CHECKPOINT,
    concept: str = CONCEPT,
    method: str = METHOD,
    judge: str = JUDGE,
    surrounding: str = SURROUNDING,
    images: int = IMAGES,
    steps: int = STEPS,
    lr: float = LR,
    prefix_tokens: int = PREFIX_TOKENS,
    candidates: int = CANDIDATES,
    rounds: int = ROUNDS,
    budget_s: float = BUDGET,
    relearn_steps: str = RELEARN_STEPS,
    relearn_lr: float | None = RELEARN_LR,
    relearn_rank: int = RELEARN_RANK,
    inversion_steps: int = INVERSION_STEPS,
    compose: str = COMPOSE,
    compose_concept: str = COMPOSE_CONCEPT,
    n_per_prompt: int = N_PER_PROMPT,
    seed: int = SEED,
    out: Path = OUT,
    force: bool = FORCE,
    checkpointing_steps: int = CHECKPOINTING,
    resume_from_checkpoint: str = RESUME,
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = QUIET,
    as_json: bool = AS_JSON,
) -> None:
    """Try to make an erased model draw its concept again; write the prompts/embedding, a grid and the attack success rate."""
    from erasectl.attacking import AttackRequest, attack_checkpoint
    from erasectl.attacks import AttackConfig
    from erasectl.files import check_output_dir
    from erasectl.prompt_free import ATTACKS
    from erasectl.run_state import Interrupted

    if method not in ATTACKS:
        raise UserError(f"unknown attack --method {method!r}; choose one of {', '.join(ATTACKS)}")
    if n_per_prompt <= 0:
        raise UserError(f"--n-per-prompt must be at least 1, got {n_per_prompt}")
    schedule = _step_counts(relearn_steps)
    config = AttackConfig(images=images, steps=steps, lr=lr, prefix_tokens=prefix_tokens, candidates=candidates, rounds=rounds, budget_s=budget_s, seed=seed,
                          relearn_steps=schedule, relearn_lr=relearn_lr, relearn_rank=relearn_rank, inversion_steps=inversion_steps,
                          compose=tuple(optional_list(compose) or []), compose_concept=compose_concept)  # fmt: skip
    request = AttackRequest(checkpoint, method, config, concept, judge, optional_list(surrounding), n_per_prompt, model_config, device, allow_pickle)  # fmt: skip
    if resume_from_checkpoint is not None and out is None:
        raise UserError("--resume_from_checkpoint needs the --out of the interrupted run")
    if resume_from_checkpoint is None:
        out = check_output_dir(out or Path("runs") / time.strftime(f"attack-{method}-%Y%m%d-%H%M%S"), force)
    control = run_control(out, checkpointing_steps, resume_from_checkpoint)
    bar = progress_bar(f"attacking ({method})", config.progress_total(method), enabled=not (quiet or as_json), loss="-")
    with stop_signals() as stop_requested, bar as update:
        control.stop_requested = stop_requested
        try:
            summary = attack_checkpoint(
                request, out, force or resume_from_checkpoint is not None or control.states() != [],
                lambda done, total, logs: update(done, total=total, loss=f"{logs['loss']:.4g}"), control,
            )  # fmt: skip
        except Interrupted as stopped:
            exit_interrupted(stopped, out)
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(_sentence(summary, method, out))


def _step_counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in optional_list(text) or [])
    except ValueError:
        raise UserError(f"--relearn-steps takes comma-separated step counts, e.g. 10,25,50; got {text!r}") from None


def _sentence(summary: dict, method: str, out: Path) -> str:
    details = summary.get("details") or {}
    extra = ""
    if method == "relearn":
        half = details["steps_to_half"]
        extra = (
            f"; over 50% after {half} steps"
            if half is not None
            else f"; never over 50% within {details['curve'][-1]['steps']} steps"
        )
    elif method == "compose":
        extra = "; " + ", ".join(f"{c['change']} {c['success']:.0%}" for c in details["changes"])
    outline = summary["attack_success_outline"]
    by_outline = f"; by outline {outline:.0%}" if outline is not None else ""
    low, high = summary["attack_success_interval95"]
    return (
        f"{method} on {summary['checkpoint']}: the erased model draws {summary['concept']} {summary['attack_success']:.0%} of the time "
        f"(95% interval {low:.0%}-{high:.0%}){by_outline} (plain prompts: {summary['erased_plain_accuracy']:.0%}, "
        f"base: {summary['base_accuracy']:.0%}){extra}; {out}"
    )
