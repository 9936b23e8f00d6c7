"""Options several commands take, declared once: single options, and the drawing options that
generate, compare and evaluate share, gathered into one ``Drawing`` value for the command."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import typer

from erasectl.errors import UserError


def _process_device(value: str) -> str:
    """A device this machine has, checked before anything loads; ``cuda`` is each process's own GPU under a launch."""
    import torch

    from erasectl.distributed import process_device

    try:
        device = torch.device(value)
    except RuntimeError:
        raise typer.BadParameter(f"{value!r} is not a torch device; pass cpu, cuda, cuda:1 or mps") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and not count:
        raise typer.BadParameter(
            f"{value} was asked for, but torch sees no CUDA device on this machine; pass --device cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise typer.BadParameter(
            f"{value} does not exist; this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(
            "mps was asked for, but this machine has no Apple GPU torch can use; pass --device cpu"
        )
    return process_device(value)


ALLOW_PICKLE = typer.Option(
    False, "--allow-pickle", help="Also load pickle weights (.bin/.ckpt), which can run code: only for files you trust."
)
DEVICE = typer.Option(
    "cpu",
    "--device",
    callback=_process_device,
    help="torch device, e.g. cpu or cuda (under accelerate launch, cuda is each process's own GPU).",
)
MODEL = typer.Option(
    None, "--model", help="Hub id, local diffusers folder or single file; default: the embedded shapes model."
)
MODEL_CONFIG = typer.Option(
    None,
    "--model-config",
    help="With a single-file --model (.safetensors): a local diffusers folder of the same family whose configs and tokenizer it loads with.",
)
FORCE = typer.Option(False, "--force", help="Write into an output folder that already has files.")
QUIET = typer.Option(False, "--quiet", help="No progress bar.")
AS_JSON = typer.Option(False, "--json", help="Print a JSON summary on stdout.")
PROMPTS = typer.Option(None, "--prompts", help='Comma-separated prompts, e.g. "a red circle,a blue ring".')
PROMPTS_FILE = typer.Option(
    None, "--prompts-file", help="A text file with one prompt per line (for prompts with commas)."
)
STEPS = typer.Option(25, "--steps", help="Sampler steps.")
GUIDANCE = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale.")

# The drawing options of generate, compare and evaluate: (name, type, option).
DRAWING = [
    ("negative_prompt", str, typer.Option(None, "--negative-prompt", help="A negative prompt for every image (classifier-free guidance's unconditional branch).")),
    ("height", int, typer.Option(None, "--height", help="Image height in pixels (a multiple of 8); default: the model's.")),
    ("width", int, typer.Option(None, "--width", help="Image width in pixels (a multiple of 8); default: the model's.")),
    ("scheduler", str, typer.Option(None, "--scheduler", help="A diffusers scheduler class (e.g. DPMSolverMultistepScheduler) or ddim, pndm, euler, euler-a, dpm++2m, lms, unipc, heun, ddpm; built from the model's scheduler config. Default: the model's own.")),
    ("dtype", str, typer.Option(None, "--dtype", help="fp32, fp16 (GPU only) or bf16 for drawing; checkpoints are checked and applied in fp32 first. Default: fp32.")),
    ("batch_size", int, typer.Option(None, "--batch-size", help="Images per pipeline call (memory, not results). Default: 64 on the embedded model, 8 on real models.")),
    ("revision", str, typer.Option(None, "--revision", help="Hub models: the branch, tag or commit to load.")),
    ("variant", str, typer.Option(None, "--variant", help="The weights variant to load, e.g. fp16 (files named *.fp16.safetensors).")),
]  # fmt: skip


def with_drawing(command):
    """``command`` (which takes ``drawing: erasectl.generation.Drawing``) with the drawing options
    in its place, gathered into that value when it runs."""
    signature = inspect.signature(command)
    kept = [p for name, p in signature.parameters.items() if name != "drawing"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, kind, option in DRAWING
    ]

    @functools.wraps(command)
    def wrapper(**options):
        from erasectl.generation import Drawing

        return command(
            **{k: v for k, v in options.items() if k not in Drawing.__dataclass_fields__},
            drawing=Drawing(**{name: options[name] for name, _, _ in DRAWING}),
        )

    wrapper.__signature__ = signature.replace(parameters=kept + added)
    return wrapper


def share(name: str, value: float | None) -> float | None:
    """A gate's limit, which is a share of images."""
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"{name} is a share between 0 and 1, got {value}")
    return value


def out_path(out: Path | None, stem: str) -> Path:
    import time

    return out or Path("runs") / time.strftime(f"{stem}-%Y%m%d-%H%M%S")
