from __future__ import annotations

import functools
import json
import os
from dataclasses import replace
from pathlib import Path

import typer

from erasectl.cli.common import (
    EXIT_INTERRUPTED,
    progress_bar,
    read_prompts,
    run_control,
    split_list,
    stop_signals,
    user_errors,
)
from erasectl.cli.options import ALLOW_PICKLE, DEVICE, MODEL_CONFIG
from erasectl.cli.settings import with_settings
from erasectl.errors import UserError


def _default_out(concepts: list[str], method: str) -> Path:
    """runs/<concept>-<method>/, with -2, -3, ... appended rather than overwriting."""
    from erasectl.files import safe_name

    stem = Path("runs") / f"{safe_name('+'.join(concepts), 40)}-{method}"
    candidate, number = stem, 1
    while candidate.exists():
        number += 1
        candidate = stem.with_name(f"{stem.name}-{number}")
    return candidate


def _concepts(concept: str | None, concepts_file: Path | None, profile) -> list[str]:
    from erasectl.erasure import check_concepts

    named = split_list(concept) if concept is not None else []
    if concept is not None and not named:
        named = [concept]  # an empty or blank concept: check_concepts says what is wrong
    if concepts_file is not None:
        named += read_prompts(None, str(concepts_file))
    if not named:
        raise UserError("no concept given; pass --concept circle (or --concepts-file FILE)")
    return check_concepts(named, profile)


def _anchor(anchor: str | None, method, profile) -> str | None:
    from erasectl.erasure import check_concepts

    if method.needs_anchor and (not anchor or not anchor.strip()):
        raise UserError(
            f"--method {method.name} needs --anchor, the concept to map onto (e.g. --anchor shape for circle)"
        )
    if anchor and not method.accepts_anchor:
        raise UserError(f"--anchor is not an option of --method {method.name}; see erasectl erase --help")
    return check_concepts([anchor], profile)[0] if anchor else None


def _output(
    out: Path | None, force: bool, resume_from_checkpoint: str | None, concepts: list[str], method: str
) -> Path:
    from erasectl.checkpoint import CHECKPOINT_FILE
    from erasectl.files import check_output_dir

    if resume_from_checkpoint is not None:
        if out is None:
            raise UserError("--resume_from_checkpoint needs the --out of the interrupted run")
        if (out / CHECKPOINT_FILE).exists() and not force:
            raise UserError(f"{out} already holds a finished erasure; choose another --out or pass --force")
    elif out is not None:
        check_output_dir(out, force)
    return out or _default_out(concepts, method)


def _auto_preserved(pipeline, concepts: list[str], count: int) -> list[str]:
    from erasectl.neighbours import find_neighbours

    concept_words = {w for c in concepts for w in c.lower().split()}
    found = [n for c in concepts for n in find_neighbours(pipeline, c, count)]
    return [n for n in dict.fromkeys(found) if n.lower() not in concept_words]


def _write(out: Path, checkpoint, force: bool) -> dict:
    from erasectl.checkpoint import CHECKPOINT_FILE
    from erasectl.files import prepare_output_dir, write_atomically

    prepare_output_dir(out, force)
    path = checkpoint.save(out / CHECKPOINT_FILE)
    summary = {
        "checkpoint": str(path),
        **checkpoint.recipe,
        "changed_tensors": len(checkpoint.tensors),
        "changed_parameters": sum(t.numel() for t in checkpoint.tensors.values()),
    }
    write_atomically(out / "recipe.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


@functools.cache
def command():
    """``erase`` with one option per declared setting of every registered method (importing the
    methods, hence torch: built only when erase is run or its help shown)."""
    return user_errors(with_settings(erase))


def erase(
    concept: str = typer.Option(
        None, "--concept", help='The concept to erase, e.g. circle or "grumpy cat"; several: "circle,red square".'
    ),
    method: str = typer.Option(
        "esd",
        "--method",
        help="The erasure method: esd, ablate, uce, nullspace, rece, advunlearn, or one an installed package registers (erasectl defaults lists them).",
    ),
    anchor: str = typer.Option(
        None,
        "--anchor",
        help="ablate (required): the concept to map onto, e.g. shape for circle; uce, nullspace, rece: the guide (else --guide-choice decides).",
    ),
    preserve: str = typer.Option(
        None,
        "--preserve",
        help="Comma-separated concepts whose predictions are kept unchanged (every method). Default: the method's own (a multi-word concept's words alone; uce and rece on the embedded model also the attributes on the generic noun; advunlearn also its retain set); the recipe records the list used.",
    ),
    auto_preserve: int = typer.Option(
        None, "--auto-preserve", help="Preserve the K nearest valid phrases to each concept in text-embedding space."
    ),
    concepts_file: Path = typer.Option(None, "--concepts-file", help="More concepts to erase, one per line."),
    anchor_prompts_file: Path = typer.Option(
        None, "--anchor-prompts-file", help="ablate: anchor prompts, one per line, each naming the anchor."
    ),
    prior_exclude: str = typer.Option(
        None,
        "--prior-exclude",
        help="nullspace: comma-separated words to leave out of the automatic prior (to measure concepts it was not built from).",
    ),
    model: str = typer.Option(
        None, "--model", help="Hub id or local diffusers folder; default: the embedded shapes model."
    ),
    out: Path = typer.Option(
        None, "--out", help="Output folder; default: runs/<concept>-<method>/ (never overwritten)."
    ),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that already has files."),
    mixed_precision: str = typer.Option(
        None, "--mixed-precision", help="no or bf16 (autocast; weights, gradients and optimizer stay fp32)."
    ),
    gradient_checkpointing: bool = typer.Option(
        False,
        "--gradient-checkpointing",
        help="Recompute the UNet's activations in the backward pass instead of storing them: less memory, more time.",
    ),
    checkpointing_steps: int = typer.Option(
        None, "--checkpointing_steps", help="Save a resumable state every N steps (in <out>/states)."
    ),
    resume_from_checkpoint: str = typer.Option(
        None,
        "--resume_from_checkpoint",
        help="Continue an interrupted run: latest, or a state file; pass the run's --out.",
    ),
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    **settings,
) -> None:
    """Erase a concept and write an erased-weight checkpoint (only the changed tensors, with their recipe).

    Defaults depend on the model: real models get each paper's settings, the embedded shapes world
    its own measured ones; `erasectl defaults --method M [--model X]` prints them with their sources.
    """
    from erasectl.distributed import is_main_process
    from erasectl.erasure import ErasureRequest, build_config, check_concepts, check_mixed_precision, erase_concepts
    from erasectl.methods import get_method
    from erasectl.models import load_model, model_profile, resolve_model
    from erasectl.run_state import Interrupted

    method_spec = get_method(method)
    mixed_precision = check_mixed_precision(mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no"))
    model_name, _ = resolve_model(model)
    profile = model_profile(model, model_config)
    concepts = _concepts(concept, concepts_file, profile)
    config = build_config(method, profile, settings, len(concepts))
    if preserve and auto_preserve is not None:
        raise UserError("pass --preserve or --auto-preserve, not both")
    if auto_preserve is not None and auto_preserve <= 0:
        raise UserError(f"--auto-preserve must be at least 1, got {auto_preserve}")
    if prior_exclude is not None and method != "nullspace":
        raise UserError("--prior-exclude is an option of --method nullspace only")
    request = ErasureRequest(
        concepts,
        profile,
        _anchor(anchor, method_spec, profile),
        read_prompts(None, str(anchor_prompts_file)) if anchor_prompts_file is not None else None,
        preserve=check_concepts(split_list(preserve), profile) if preserve else [],
        model_name=model_name,
        prior_exclude=split_list(prior_exclude),
    )
    out = _output(out, force, resume_from_checkpoint, concepts, method)
    control = run_control(out, checkpointing_steps, resume_from_checkpoint)
    loaded = load_model(model, device=device, allow_pickle=allow_pickle, config=model_config)
    pipeline = loaded.pipeline
    request = replace(request, model_config=loaded.model_config)
    if auto_preserve is not None:
        request = replace(request, preserve=_auto_preserved(pipeline, concepts, auto_preserve))
    with (
        stop_signals() as stop_requested,
        progress_bar(
            f"erasing {', '.join(concepts)} ({method})", config.steps, enabled=not (quiet or as_json), loss="-"
        ) as update,
    ):
        control.stop_requested = stop_requested
        try:
            checkpoint = erase_concepts(
                pipeline,
                method,
                request,
                config,
                progress=lambda done, total, logs: update(done, loss=f"{logs['loss']:.4g}"),
                control=control,
                mixed_precision=mixed_precision,
                gradient_checkpointing=gradient_checkpointing,
            )
        except Interrupted as stopped:
            typer.echo(
                f"interrupted at step {stopped.step}; state saved to {stopped.path}; resume with the same command plus --out {out} --resume_from_checkpoint latest",
                err=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if not is_main_process():  # under accelerate launch every process holds the same erasure
        return
    summary = _write(out, checkpoint, force or resume_from_checkpoint is not None or control.states() != [])
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(
            f"erased {', '.join(concepts)} with {method} in {checkpoint.recipe['wall_time_s']} s: {summary['checkpoint']}"
        )
