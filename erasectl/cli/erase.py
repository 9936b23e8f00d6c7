from __future__ import annotations

import functools
import json
import os
from dataclasses import replace
from pathlib import Path

import typer

from erasectl.cli.common import (
    exit_interrupted,
    progress_bar,
    read_prompts,
    run_control,
    split_list,
    stop_signals,
    user_errors,
)
from erasectl.cli.options import ALLOW_PICKLE, AS_JSON, DEVICE, MODEL, MODEL_CONFIG, QUIET
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


def _anchor(anchor: str | None, method, profile, concept_type: str | None = None) -> str | None:
    """--anchor, else the guide or anchor the method's authors publish for --concept-type."""
    from erasectl.erasure import check_concepts, concept_type_defaults

    if anchor is None and method.accepts_anchor:
        anchor = concept_type_defaults(method.name, concept_type).get("anchor", (None, ""))[0]
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


# fmt: off
CONCEPT = typer.Option(None, "--concept", help='The concept to erase, e.g. circle or "grumpy cat"; several: "circle,red square".')
METHOD = typer.Option("esd", "--method", help="The erasure method (its help lists every registered one).")
ANCHOR = typer.Option(None, "--anchor", help="ablate (required): the concept to map onto, e.g. shape for circle; uce, nullspace, rece: the guide (else --guide-choice decides).")
PRESERVE = typer.Option(None, "--preserve", help="Comma-separated concepts whose predictions are kept unchanged (every method). Default: the method's own (with --keep-words a multi-word concept's words alone; uce and rece on the embedded model also the attributes on the generic noun; advunlearn also its retain set); the recipe records the list used.")
CONCEPT_TYPE = typer.Option(None, "--concept-type", help="object, style, nudity, violence or person: each method's published settings and guide for that kind of concept (e.g. uce and nullspace guide a style to 'art', esd trains esd-x for a style and esd-u for nudity or an object); your own options still win. `erasectl defaults --method M --concept-type T` lists them.")
KEEP_WORDS = typer.Option(None, "--keep-words/--no-keep-words", help='Without --preserve, also keep each word of a multi-word concept alone (erase "blue square", keep "blue" and "square"). Default: off on real models, as the papers erase the phrase; on for the embedded world, its measured default.')
AUTO_PRESERVE = typer.Option(None, "--auto-preserve", help="Preserve the K nearest valid phrases to each concept in text-embedding space.")
CONCEPTS_FILE = typer.Option(None, "--concepts-file", help="More concepts to erase, one per line.")
ANCHOR_PROMPTS_FILE = typer.Option(None, "--anchor-prompts-file", help="ablate: anchor prompts, one per line, each naming the anchor.")
PRIOR_EXCLUDE = typer.Option(None, "--prior-exclude", help="nullspace: comma-separated words to leave out of the automatic prior (to measure concepts it was not built from).")
OUT = typer.Option(None, "--out", help="Output folder; default: runs/<concept>-<method>/ (never overwritten).")
FORCE = typer.Option(False, "--force", help="Write into an --out folder that already has files.")
MIXED_PRECISION = typer.Option(None, "--mixed-precision", help="no or bf16 (autocast; weights, gradients and optimizer stay fp32).")
GRADIENT_CHECKPOINTING = typer.Option(False, "--gradient-checkpointing", help="Recompute the UNet's activations in the backward pass instead of storing them: less memory, more time.")
CHECKPOINTING_STEPS = typer.Option(None, "--checkpointing_steps", help="Save a resumable state every N steps (in <out>/states).")
RESUME = typer.Option(None, "--resume_from_checkpoint", help="Continue an interrupted run: latest, or a state file; pass the run's --out.")
# fmt: on


@functools.cache
def command():
    """``erase`` with one option per declared setting of every registered method (importing the
    methods, hence torch: built only when erase is run or its help shown)."""
    return user_errors(with_settings(erase))


def erase(
    concept: str = CONCEPT,
    method: str = METHOD,
    anchor: str = ANCHOR,
    preserve: str = PRESERVE,
    keep_words: bool = KEEP_WORDS,
    concept_type: str = CONCEPT_TYPE,
    auto_preserve: int = AUTO_PRESERVE,
    concepts_file: Path = CONCEPTS_FILE,
    anchor_prompts_file: Path = ANCHOR_PROMPTS_FILE,
    prior_exclude: str = PRIOR_EXCLUDE,
    model: str = MODEL,
    out: Path = OUT,
    force: bool = FORCE,
    mixed_precision: str = MIXED_PRECISION,
    gradient_checkpointing: bool = GRADIENT_CHECKPOINTING,
    checkpointing_steps: int = CHECKPOINTING_STEPS,
    resume_from_checkpoint: str = RESUME,
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = QUIET,
    as_json: bool = AS_JSON,
    **settings,
) -> None:
    """Erase a concept and write an erased-weight checkpoint (only the changed tensors, with their recipe).

    Defaults depend on the model: real models get each paper's settings, the embedded shapes world
    its own measured ones; `erasectl defaults --method M [--model X]` prints them with their sources.
    """
    from erasectl.distributed import is_main_process
    from erasectl.erasure import build_config, check_mixed_precision
    from erasectl.models import model_profile

    mixed_precision = check_mixed_precision(mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no"))
    profile = model_profile(model, model_config)
    concepts = _concepts(concept, concepts_file, profile)
    config = build_config(method, profile, settings, len(concepts), concept_type)
    given = dict(preserve=preserve, keep_words=keep_words, auto_preserve=auto_preserve, prior_exclude=prior_exclude)
    request = _request(
        concepts, method, anchor, anchor_prompts_file, model, profile, concept_type=concept_type, **given
    )
    out = _output(out, force, resume_from_checkpoint, concepts, method)
    control = run_control(out, checkpointing_steps, resume_from_checkpoint)
    label = f"erasing {', '.join(concepts)} ({method})"
    with (
        stop_signals() as stop_requested,
        progress_bar(label, config.steps, enabled=not (quiet or as_json), loss="-") as update,
    ):
        control.stop_requested = stop_requested
        execution = dict(mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing)
        loading = dict(device=device, allow_pickle=allow_pickle, config=model_config)
        checkpoint = _erase(request, method, config, update, control, out, auto_preserve, model, loading, execution)
    if is_main_process():  # under accelerate launch every process holds the same erasure
        overwrite = force or resume_from_checkpoint is not None or control.states() != []
        _say(_write(out, checkpoint, overwrite), checkpoint, as_json, quiet)


def _say(summary: dict, checkpoint, as_json: bool, quiet: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        recipe = checkpoint.recipe
        typer.echo(
            f"erased {', '.join(recipe['concepts'])} with {recipe['method']} in {recipe['wall_time_s']} s: {summary['checkpoint']}"
        )


def _request(
    concepts,
    method: str,
    anchor,
    anchor_prompts_file,
    model,
    profile,
    preserve,
    keep_words,
    auto_preserve,
    prior_exclude,
    concept_type,
):
    """The erasure request, every contradiction in it refused before anything loads."""
    from erasectl.erasure import ErasureRequest, check_concepts
    from erasectl.methods import get_method
    from erasectl.models import resolve_model

    if preserve and auto_preserve is not None:
        raise UserError("pass --preserve or --auto-preserve, not both")
    if auto_preserve is not None and auto_preserve <= 0:
        raise UserError(f"--auto-preserve must be at least 1, got {auto_preserve}")
    if prior_exclude is not None and method != "nullspace":
        raise UserError("--prior-exclude is an option of --method nullspace only")
    anchor_lines = read_prompts(None, str(anchor_prompts_file)) if anchor_prompts_file is not None else None
    preserved = check_concepts(split_list(preserve), profile) if preserve else []
    return ErasureRequest(
        concepts, profile, _anchor(anchor, get_method(method), profile, concept_type), anchor_lines,
        preserve=preserved, model_name=resolve_model(model)[0], prior_exclude=split_list(prior_exclude),
        keep_words=keep_words, concept_type=concept_type,
    )  # fmt: skip


def _erase(request, method, config, update, control, out, auto_preserve, model, loading: dict, execution: dict):
    """Load the model, erase, and say how to resume when interrupted."""
    from erasectl.erasure import erase_concepts
    from erasectl.models import load_model
    from erasectl.run_state import Interrupted

    loaded = load_model(model, **loading)
    request = replace(request, model_config=loaded.model_config)
    if auto_preserve is not None:
        request = replace(request, preserve=_auto_preserved(loaded.pipeline, request.concepts, auto_preserve))
    progress = lambda done, total, logs: update(done, total=total, loss=f"{logs['loss']:.4g}")  # noqa: E731
    try:
        return erase_concepts(loaded.pipeline, method, request, config, progress=progress, control=control, **execution)
    except Interrupted as stopped:
        exit_interrupted(stopped, out)
