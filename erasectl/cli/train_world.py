from __future__ import annotations

from pathlib import Path

import typer

from erasectl.cli.common import user_errors
from erasectl.errors import UserError


@user_errors
def train_world(
    out: Path = typer.Option(Path("runs/world"), "--out", help="Where the stages, the pipeline and the judge go."),
    seed: int = typer.Option(0, "--seed", help="Seeds the data, the initial weights and every sampled batch."),
    family: str = typer.Option(
        "sd", "--family", help="sd: the UNet world (shapes-unet) and the judge; sd3: the MMDiT world (shapes-mmdit)."
    ),
    unet_steps: int = typer.Option(None, "--unet-steps", help="UNet + text encoder steps; default: the recipe's."),
    transformer_steps: int = typer.Option(
        None, "--transformer-steps", help="MMDiT + text encoder steps (--family sd3); default: the recipe's."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train an embedded shapes-world model from scratch (each about an hour on 2 CPU cores).

    The shipped weights were made by `erasectl train-world --out runs/world` (the UNet model and its
    CLIP judge) and `erasectl train-world --family sd3 --out runs/world` (the MMDiT, with the UNet
    world's VAE and judge), with the defaults; copy runs/world/shapes-sd, shapes-judge and
    shapes-mmdit into erasectl/assets to ship new ones. Interrupted runs resume at the stage they stopped in.
    """
    from dataclasses import replace

    from erasectl.cli.common import stderr_console
    from erasectl.world.train import WorldTrainingConfig, train_world
    from erasectl.world.train_mmdit import train_mmdit_world

    runs = {"sd": train_world, "sd3": train_mmdit_world}
    if family not in runs:
        raise UserError(f"--family {family!r} is not a world model: use sd or sd3")
    config = WorldTrainingConfig(seed=seed)
    steps = {"unet_steps": unet_steps, "transformer_steps": transformer_steps}
    config = replace(config, **{k: v for k, v in steps.items() if v is not None})  # validates in __post_init__
    console = stderr_console()
    from rich.progress import Progress

    with Progress(console=console, disable=quiet) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, step: int, total: int, logs: dict) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            loss = f" loss {logs['loss']:.4f}" if "loss" in logs else ""
            progress.update(tasks[stage], completed=step, description=f"{stage}{loss}")

        folders = runs[family](out, config, report)
    typer.echo(f"pipeline: {folders['pipeline']}\njudge: {folders['judge']}")
