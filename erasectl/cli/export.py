from __future__ import annotations

import json
from pathlib import Path

import typer

from erasectl.cli.common import user_errors
from erasectl.cli.options import ALLOW_PICKLE, MODEL_CONFIG
from erasectl.errors import UserError

FORMATS = ("diffusers", "lora", "kohya", "single-file")


@user_errors
def export(
    checkpoint: Path = typer.Argument(
        ..., help="An erased checkpoint written by erasectl erase: its .safetensors file or its run folder."
    ),
    format: str = typer.Option(
        ...,
        "--format",
        help="diffusers, lora (PEFT names: diffusers only), kohya (AUTOMATIC1111, ComfyUI, sd-scripts) or single-file (LDM layout).",
    ),
    out: Path = typer.Option(
        None, "--out", help="Output folder; default: beside the checkpoint, named after the format."
    ),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that already has files."),
    model: str = typer.Option(None, "--model", help="The base model; default: the one named in the checkpoint."),
    rank: int = typer.Option(None, "--rank", help="lora/kohya: a fixed rank for every module."),
    energy: float = typer.Option(
        0.999,
        "--energy",
        help="lora/kohya: otherwise the smallest rank keeping this share of each delta's squared singular values.",
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Reload the export with its consumer's loader and compare images."
    ),
    bias_deltas: bool = typer.Option(
        False,
        "--bias-deltas",
        help="kohya: also carry the erasure's bias deltas (ESD-x trains attn2.to_out's bias) as .diff_b keys, which ComfyUI applies; diffusers' kohya reader refuses them.",
    ),
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Export an erasure as a diffusers folder, a LoRA (diffusers or kohya names) or a single LDM checkpoint."""
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.export import export_diffusers, export_lora, export_single_file, verify_export
    from erasectl.files import check_output_dir, prepare_output_dir
    from erasectl.models import load_pipeline, model_profile, resolve_model
    from erasectl.profiles import write_marker

    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if rank is not None and rank <= 0:
        raise UserError(f"--rank must be at least 1, got {rank}")
    if not 0 < energy <= 1:
        raise UserError(f"--energy is a share in (0, 1], got {energy}")
    if bias_deltas and format != "kohya":
        raise UserError("--bias-deltas is for --format kohya (ComfyUI reads them as .diff_b keys)")
    erased = ErasedCheckpoint.load(checkpoint)
    checkpoint = erased.path
    out = check_output_dir(out or checkpoint.parent / f"export-{format}", force)
    name, source = resolve_model(model or erased.base_model)
    model_config = model_config or erased.base_config

    def load_base():
        return load_pipeline(name, allow_pickle=allow_pickle, config=model_config)

    pipeline = load_base()
    if format in ("lora", "kohya"):
        base = load_base()
        erased.check(base)
    erased.apply(pipeline)
    prepare_output_dir(out, force)
    profile = model_profile(name, model_config)
    if format == "diffusers":
        result = export_diffusers(pipeline, out)
        write_marker(out, profile)
    elif format == "single-file":
        result = export_single_file(erased, pipeline, out)
    else:
        result = export_lora(erased, base, out, format, rank, energy, bias_deltas)
    result["format"] = format
    if verify:
        result["verification"] = verify_export(
            format,
            result,
            pipeline,
            model_config or source,
            load_base,
            seeds=[0, 1],
            prompts=profile.verification_prompts(erased.recipe["concepts"]),
            steps=25,
        )
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(json.dumps(result, indent=2))
