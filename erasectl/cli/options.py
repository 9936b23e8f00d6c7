"""Options several commands take, declared once: single options, and groups of options gathered
into one value for the command (``option_group``): the drawing options generate, compare and
evaluate share (an ``erasectl.generation.Drawing``) and evaluate's gates (``Gates``)."""

from __future__ import annotations

import functools
import inspect

import typer


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
    None,
    "--model",
    help="Hub id, local diffusers folder or single file; shapes-unet (the default) or shapes-mmdit: the embedded shapes models.",
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
STEPS = typer.Option(
    None,
    "--steps",
    help="Sampler steps; default: the family's (25 on SD 1.x/2.x/XL, 28 on SD3 and FLUX-dev, 4 on schnell).",
)
GUIDANCE = typer.Option(
    None,
    "--guidance",
    help="Guidance scale (FLUX-dev: the distilled guidance input); default: the family's (7.5 on SD 1.x/2.x/XL, 7.0 on SD3, 3.5 on FLUX-dev, 0 on schnell).",
)

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


def option_group(name: str, make, options: list[tuple[str, type, object]]):
    """A decorator giving ``command`` (which takes ``name``) the ``options`` in that parameter's
    place; when it runs they are gathered into ``make(**values)``, passed as ``name``."""

    def decorate(command):
        signature = inspect.signature(command)
        kept = [p for key, p in signature.parameters.items() if key != name]
        added = [
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
            for key, kind, option in options
        ]
        keys = {key for key, _, _ in options}

        @functools.wraps(command)
        def wrapper(**values):
            rest = {k: v for k, v in values.items() if k not in keys}
            return command(**rest, **{name: make(**{key: values[key] for key in keys})})

        wrapper.__signature__ = signature.replace(parameters=kept + added)
        return wrapper

    return decorate


def _drawing(**values):
    from erasectl.generation import Drawing

    return Drawing(**values)


def _gates(**values):
    from erasectl.evaluation.gates import Gates

    return Gates(**values)


# The gates of evaluate: each a share of images, and what each is checked on.
GATES = [
    ("max_erased_accuracy", float, typer.Option(None, "--max-erased-accuracy", help="Gate: fail (exit 1) if an erased model draws the concept more often.")),
    ("min_surrounding_ratio", float, typer.Option(None, "--min-surrounding-ratio", help="Gate: fail if a held-out surrounding concept keeps less of its base accuracy.")),
    ("max_paraphrase_accuracy", float, typer.Option(None, "--max-paraphrase-accuracy", help="Gate: fail if a paraphrase still yields the concept more often.")),
    ("max_attack_success", float, typer.Option(None, "--max-attack-success", help="Gate: fail if an attack makes an erased model draw the concept more often (with --attack-runs, on average over the runs).")),
    ("max_attribute_gain", float, typer.Option(None, "--max-attribute-gain", help="Gate: fail if a held-out set's images gain a colour or style their prompts did not ask for by more than this share over the base (worlds with an attribute reader).")),
    ("gate_on", str, typer.Option("point", "--gate-on", help="point: gate each figure; upper: its 95% interval's end on the failing side must pass (the upper end of a rate gated from above, the lower end of a ratio gated from below).")),
]  # fmt: skip
with_drawing = option_group("drawing", _drawing, DRAWING)
with_gates = option_group("gates", _gates, GATES)
