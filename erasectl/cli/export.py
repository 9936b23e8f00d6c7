from __future__ import annotations

import json
from pathlib import Path

import typer

from erasectl.cli.common import user_errors
from erasectl.cli.options import ALLOW_PICKLE, MODEL_CONFIG
from erasectl.errors import UserError

FORMATS = ("diffusers", "lora", "kohya", "single-file")


# fmt: off
CHECKPOINT = typer.Argument(..., help="An erased checkpoint written by erasectl erase: its .safetensors file or its run folder.")
FORMAT = typer.Option(..., "--format", help="diffusers, lora (PEFT names: diffusers only), kohya (AUTOMATIC1111, ComfyUI, sd-scripts) or single-file (LDM layout).")
OUT = typer.Option(None, "--out", help="Output folder; default: beside the checkpoint, named after the format.")
FORCE = typer.Option(False, "--force", help="Write into an --out folder that already has files.")
BASE_MODEL = typer.Option(None, "--model", help="The base model; default: the one named in the checkpoint.")
RANK = typer.Option(None, "--rank", help="lora/kohya: a fixed rank for every module.")
ENERGY = typer.Option(0.999, "--energy", help="lora/kohya: otherwise the smallest rank keeping this share of each delta's squared singular values.")
VERIFY = typer.Option(True, "--verify/--no-verify", help="Reload the export with its consumer's loader and compare images.")
BIAS_DELTAS = typer.Option(False, "--bias-deltas", help="kohya: also carry the erasure's bias deltas (ESD-x trains attn2.to_out's bias) as .diff_b keys, which ComfyUI applies; diffusers' kohya reader refuses them.")
EVALUATION = typer.Option(None, "--evaluation", help="An evaluate run (its folder or metrics.json) that measured this checkpoint: its headline figures, intervals and judge go into the model card (README.md).")
AS_JSON = typer.Option(False, "--json", help="Print a JSON summary on stdout.")
QUIET = typer.Option(False, "--quiet", help="Print nothing on stdout (errors still go to stderr); --json still prints its summary.")
# fmt: on


@user_errors
def export(
    checkpoint: Path = CHECKPOINT,
    format: str = FORMAT,
    out: Path = OUT,
    force: bool = FORCE,
    model: str = BASE_MODEL,
    rank: int = RANK,
    energy: float = ENERGY,
    verify: bool = VERIFY,
    bias_deltas: bool = BIAS_DELTAS,
    evaluation: Path = EVALUATION,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = QUIET,
    as_json: bool = AS_JSON,
) -> None:
    """Export an erasure as a diffusers folder, a LoRA (diffusers or kohya names) or a single LDM checkpoint."""
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.export import ExportRequest, export_checkpoint
    from erasectl.files import check_output_dir

    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if rank is not None and rank <= 0:
        raise UserError(f"--rank must be at least 1, got {rank}")
    if not 0 < energy <= 1:
        raise UserError(f"--energy is a share in (0, 1], got {energy}")
    if bias_deltas and format != "kohya":
        raise UserError("--bias-deltas is for --format kohya (ComfyUI reads them as .diff_b keys)")
    erased = ErasedCheckpoint.load(checkpoint)
    out = check_output_dir(out or erased.path.parent / f"export-{format}", force)
    request = ExportRequest(format, model, model_config, rank, energy, bias_deltas, verify, allow_pickle, evaluation)
    result = export_checkpoint(erased, request, out, force)
    if as_json or not quiet:  # --quiet: nothing on stdout unless --json asks for the summary
        typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
