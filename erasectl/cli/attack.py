from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import (
    ALLOW_PICKLE,
    DEVICE,
    EXIT_INTERRUPTED,
    MODEL_CONFIG,
    progress_bar,
    run_control,
    user_errors,
)
from erasectl.errors import UserError


@user_errors
def attack(
    checkpoint: Path = typer.Option(
        None,
        "--checkpoint",
        help="The erased checkpoint to attack (its .safetensors file or erase's run folder); default: the newest in runs/.",
    ),
    concept: str = typer.Option(None, "--concept", help="The concept to recover; default: the checkpoint's first."),
    method: str = typer.Option(
        "soft-prompt",
        "--method",
        help="soft-prompt (textual inversion on the erased model) or prompt-search (a searched prefix of words).",
    ),
    judge: str = typer.Option(
        None,
        "--judge",
        help="A CLIPModel hub id or folder; default: the embedded world judge (a real model needs a real CLIP).",
    ),
    surrounding: str = typer.Option(
        None, "--surrounding", help="Comma-separated concepts the judge may read instead (a real model needs them)."
    ),
    images: int = typer.Option(16, "--images", help="Images of the concept the base model draws to learn from."),
    steps: int = typer.Option(150, "--steps", help="soft-prompt: optimisation steps."),
    lr: float = typer.Option(5e-3, "--lr", help="soft-prompt: Adam learning rate of the token embedding."),
    prefix_tokens: int = typer.Option(
        3, "--prefix-tokens", help="prompt-search: words put before the concept's prompt."
    ),
    candidates: int = typer.Option(24, "--candidates", help="prompt-search: words tried per position and round."),
    rounds: int = typer.Option(3, "--rounds", help="prompt-search: passes over the prefix."),
    budget_s: float = typer.Option(
        300.0, "--budget-s", help="Stop learning after this many seconds (the images are judged after)."
    ),
    n_per_prompt: int = typer.Option(8, "--n-per-prompt", help="Seeds per prompt when judging."),
    seed: int = typer.Option(0, "--seed", help="The first judging seed; also seeds the attack."),
    out: Path = typer.Option(None, "--out", help="Output folder; default: runs/attack-<method>-<time>."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that already has files."),
    checkpointing_steps: int = typer.Option(
        None,
        "--checkpointing_steps",
        help="Save a resumable state every N steps (soft-prompt: optimisation steps; prompt-search: prefix positions), in <out>/states.",
    ),
    resume_from_checkpoint: str = typer.Option(
        None,
        "--resume_from_checkpoint",
        help="Continue an interrupted attack: latest, or a state file; pass the run's --out.",
    ),
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print attack.json on stdout."),
) -> None:
    """Try to make an erased model draw its concept again; write the prompts/embedding, a grid and the attack success rate."""
    from erasectl.attacks import ATTACKS, AttackConfig, run_attack, save_embeddings
    from erasectl.checkpoint import ErasedCheckpoint, model_loaders
    from erasectl.cli.common import split_list, stop_signals
    from erasectl.files import check_output_dir, prepare_output_dir, write_atomically
    from erasectl.generation import SamplerSettings
    from erasectl.grids import labelled_grid
    from erasectl.judge import ClipJudge
    from erasectl.models import latest_checkpoint, load_pipeline, model_profile
    from erasectl.provenance import versions
    from erasectl.run_state import Interrupted

    if method not in ATTACKS:
        raise UserError(f"unknown attack --method {method!r}; choose one of {', '.join(ATTACKS)}")
    if n_per_prompt <= 0:
        raise UserError(f"--n-per-prompt must be at least 1, got {n_per_prompt}")
    config = AttackConfig(
        images=images,
        steps=steps,
        lr=lr,
        prefix_tokens=prefix_tokens,
        candidates=candidates,
        rounds=rounds,
        budget_s=budget_s,
        seed=seed,
    )
    erased = ErasedCheckpoint.load(checkpoint or latest_checkpoint())
    path = erased.path
    concept = " ".join((concept or erased.recipe["concepts"][0]).split())
    if not concept:
        raise UserError("the concept is empty; pass --concept with the erased words")
    if resume_from_checkpoint is not None:
        if out is None:
            raise UserError("--resume_from_checkpoint needs the --out of the interrupted run")
    else:
        out = check_output_dir(out or Path("runs") / time.strftime(f"attack-{method}-%Y%m%d-%H%M%S"), force)
    control = run_control(out, checkpointing_steps, resume_from_checkpoint)
    base_config = model_config or erased.base_config
    profile = model_profile(erased.base_model, base_config)
    protocol = profile.protocol(concept, split_list(surrounding) if surrounding else None, [], None, judge)
    clip_judge = ClipJudge.load(judge, device=device)
    pipeline = load_pipeline(erased.base_model, device=device, allow_pickle=allow_pickle, config=base_config)
    erased.check(pipeline)
    (_, load_base, _), (_, load_erased, _) = model_loaders(pipeline, erased.base_model, [erased])
    seeds = list(range(seed, seed + n_per_prompt))
    settings = SamplerSettings(batch_size=profile.generation_batch_size)
    with (
        stop_signals() as stop_requested,
        progress_bar(
            f"attacking {concept} ({method})", config.progress_total(method), enabled=not (quiet or as_json), loss="-"
        ) as update,
    ):
        control.stop_requested = stop_requested
        try:
            summary, drawn = run_attack(
                load_base,
                load_erased,
                concept,
                protocol,
                clip_judge,
                method,
                config,
                seeds,
                settings,
                profile,
                progress=lambda done, _, logs: update(done, loss=f"{logs['loss']:.4g}"),
                control=control,
            )
        except Interrupted as stopped:
            typer.echo(
                f"interrupted at step {stopped.step}; state saved to {stopped.path}; resume with the same command plus --out {out} --resume_from_checkpoint latest",
                err=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    prepare_output_dir(out, force or resume_from_checkpoint is not None or control.states() != [])
    summary.update(
        {
            "checkpoint": str(path),
            "base_model": erased.base_model,
            "judge": clip_judge.name,
            "candidates": protocol.candidates,
            "versions": versions(),
        }
    )
    if drawn["embeddings"] is not None:
        placeholder = "<erasectl-attack>"
        file = save_embeddings(
            out / "embedding.safetensors",
            drawn["embeddings"],
            {"erasectl.token": placeholder, "erasectl.concept": concept, "erasectl.versions": json.dumps(versions())},
        )
        summary.update({"embedding": str(file), "token": placeholder})
    prompts = protocol.prompt_sets()[0].prompts
    n = len(seeds)
    rows = [
        [item.image for column in ("base", "erased", "attack") for item in drawn[column][i * n : (i + 1) * n]]
        for i in range(len(prompts))
    ]
    grid = labelled_grid(rows, [p[:24] for p in prompts], ["base", "erased", f"erased + {method}"], cell=64)
    write_atomically(out / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    summary["grid"] = str(out / "grid.png")
    write_atomically(out / "attack.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        outline = (
            f"; by outline {summary['attack_success_outline']:.0%}"
            if summary["attack_success_outline"] is not None
            else ""
        )
        low, high = summary["attack_success_interval95"]
        typer.echo(
            f"{method} on {path}: the erased model draws {concept} {summary['attack_success']:.0%} of the time (95% interval {low:.0%}-{high:.0%}){outline} "
            f"(plain prompts: {summary['erased_plain_accuracy']:.0%}, base: {summary['base_accuracy']:.0%}); {out}"
        )
