from __future__ import annotations

from pathlib import Path

import typer

from erasectl.cli.common import user_errors


@user_errors
def train_world(
    out: Path = typer.Option(Path("runs/world"), "--out", help="Where the stages, the pipeline and the judge go."),
    seed: int = typer.Option(0, "--seed", help="Seeds the data, the initial weights and every sampled batch."),
    unet_steps: int = typer.Option(None, "--unet-steps", help="UNet + text encoder steps; default: the recipe's."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train the embedded shapes-world model and its CLIP judge from scratch (about an hour on 2 CPU cores).

    The shipped weights were made by `erasectl train-world --out runs/world` with the defaults;
    copy runs/world/shapes-sd and runs/world/shapes-judge into erasectl/assets to ship new ones.
    Interrupted runs resume at the stage they stopped in.
    """
    from dataclasses import replace

    from erasectl.cli.common import stderr_console
    from erasectl.world.train import WorldTrainingConfig
    from erasectl.world.train import train_world as run

    config = WorldTrainingConfig(seed=seed)
    if unet_steps is not None:
        config = replace(config, unet_steps=unet_steps)  # replace() validates through __post_init__
    console = stderr_console()
    from rich.progress import Progress

    with Progress(console=console, disable=quiet) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, step: int, total: int, logs: dict) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            loss = f" loss {logs['loss']:.4f}" if "loss" in logs else ""
            progress.update(tasks[stage], completed=step, description=f"{stage}{loss}")

        folders = run(out, config, report)
    typer.echo(f"pipeline: {folders['pipeline']}\njudge: {folders['judge']}")
