"""What every command shares: one-line errors with exit code 2, consoles, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextlib import contextmanager

import typer

from erasectl.errors import TrainingDiverged, UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C
EXIT_FAILED = 1


def user_errors(command: Callable) -> Callable:
    """Turn a ``UserError`` (a config's ``ConfigError`` too) into one line on stderr and exit 2,
    and a diverged training into one line and exit 1. Anything else is erasectl's or a library's
    fault, not the user's: it propagates, and ``main`` prints it with its traceback, exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if kwargs.get("allow_pickle"):
            typer.echo(
                "warning: --allow-pickle: pickle weights can run code when loaded; use it only for files you trust",
                err=True,
            )
        try:
            return command(*args, **kwargs)
        except UserError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except TrainingDiverged as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def optional_list(text: str | None) -> list[str] | None:
    """A comma-separated option's items; None when the option was not given."""
    return split_list(text) if text is not None else None


def read_prompts(prompts: str | None, prompts_file: str | None) -> list[str]:
    """Prompts from ``--prompts a,b`` and/or ``--prompts-file`` (one per line; use it for prompts with commas)."""
    from pathlib import Path

    found = split_list(prompts)
    if prompts_file is not None:
        path = Path(prompts_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(
                f"cannot read prompts file {path}: {getattr(error, 'strerror', None) or error}; pass a readable UTF-8 text file"
            ) from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise UserError(f"prompts file {path} has no prompts; write one prompt per line")
        found += from_file
    if not found:
        raise UserError('no prompts given; pass --prompts "a red circle,a blue ring" or --prompts-file FILE')
    return found


def read_general_prompts(path) -> list[str]:
    """Captions for the distribution distance: a CSV with a ``prompt`` or ``caption`` column (the
    COCO-caption CSVs of the erasure papers), or one prompt per line."""
    import csv
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() != ".csv":
        return read_prompts(None, str(path))
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(
            f"cannot read --general-prompts {path}: {getattr(error, 'strerror', None) or error}; pass a readable UTF-8 CSV"
        ) from None
    column = next((c for c in ("prompt", "caption", "text") if rows and c in rows[0]), None)
    if column is None:
        raise UserError(
            f"--general-prompts {path} has no prompt, caption or text column; name the captions' column 'prompt'"
        )
    found = [row[column].strip() for row in rows if (row[column] or "").strip()]
    if not found:
        raise UserError(f"--general-prompts {path} has no captions in its {column!r} column")
    return found


def run_control(out, checkpointing_steps: int | None, resume_from_checkpoint: str | None):
    """The ``RunControl`` of a resumable command (erase, attack): states every N steps in
    ``<out>/states``, and where to resume from (``latest`` or a state file)."""
    from pathlib import Path

    from erasectl.run_state import RunControl

    if checkpointing_steps is not None and checkpointing_steps <= 0:
        raise UserError(f"--checkpointing_steps must be at least 1, got {checkpointing_steps}")
    control = RunControl(state_dir=out / "states", checkpointing_steps=checkpointing_steps)
    if resume_from_checkpoint == "latest":
        control.resume_from = control.latest()
    elif resume_from_checkpoint is not None:
        control.resume_from = Path(resume_from_checkpoint)
        if not control.resume_from.is_file():
            raise UserError(f"state {control.resume_from} does not exist; pass latest or a state-*.safetensors file")
    return control


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, **fields):
    """A rich progress bar on stderr (the main process's only); yields ``update(completed, **fields)``."""
    from erasectl.distributed import is_main_process

    if not enabled or not is_main_process():
        yield lambda completed, **_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    columns += [TextColumn(f"{name}: {{task.fields[{name}]}}") for name in fields]
    with Progress(*columns, console=stderr_console(), transient=False, disable=not sys.stderr) as progress:
        task = progress.add_task(description, total=total, **fields)
        yield lambda completed, **values: progress.update(task, completed=completed, **values)


@contextmanager
def stop_signals():
    """While inside, Ctrl-C and SIGTERM ask the running job to stop at its next step (it saves
    its state first); yields the function that tells whether a stop was asked."""
    import signal
    import threading

    asked = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: asked["stop"]
        return

    def ask(signum, frame):
        asked["stop"] = True

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: asked["stop"]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def warn_if_cut(pipeline, prompts: list[str]) -> None:
    """Say once, on stderr, which prompts are longer than the text encoder reads (they are cut)."""
    from erasectl.architecture import over_length

    cut = over_length(pipeline, prompts)
    if cut:
        length = pipeline.tokenizer.model_max_length
        shown = cut[0] if len(cut[0]) <= 60 else cut[0][:57] + "..."
        typer.echo(
            f"warning: {len(cut)} prompt(s) longer than the text encoder's {length} tokens are cut to that length, e.g. {shown!r}",
            err=True,
        )


def progress_bars(enabled: bool = True):
    """A ``progress(label, total)`` factory of progress bars for the library's long runs."""
    return lambda label, total: progress_bar(label, total, enabled=enabled)


def exit_interrupted(stopped, out) -> None:
    """Say where an interrupted run saved its state and how to resume it; exit 130."""
    resume = f"resume with the same command plus --out {out} --resume_from_checkpoint latest"
    typer.echo(f"interrupted at step {stopped.step}; state saved to {stopped.path}; {resume}", err=True)
    raise typer.Exit(EXIT_INTERRUPTED) from None
