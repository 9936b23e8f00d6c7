"""The README.md an export writes: a Hugging Face model card saying what was erased, how, and with
``--evaluation`` what an evaluate run measured, each rate with its 95% interval and its judge."""

from __future__ import annotations

import json
from pathlib import Path

from erasectl.checkpoint import checkpoint_file
from erasectl.errors import UserError
from erasectl.provenance import file_sha256, versions

HOW_TO_LOAD = {
    "diffusers": "```python\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained(\"path/to/this/folder\")\n```",
    "lora": "```python\npipe = DiffusionPipeline.from_pretrained(\"{base}\")\npipe.load_lora_weights(\"path/to/this/folder\")\n```",
    "kohya": "Put the `.safetensors` file in ComfyUI's `models/loras` or AUTOMATIC1111's `models/Lora` and load it on `{base}`; "
    "diffusers reads it with `pipe.load_lora_weights`.",
    "single-file": "Load the `.safetensors` file as a full checkpoint in ComfyUI or AUTOMATIC1111, or with the pipeline's `from_single_file`.",
}  # fmt: skip
HEADLINE = (
    ("erased_accuracy", "the erased concept drawn"),
    ("surrounding_accuracy", "held-out neighbouring concepts drawn right"),
    ("held_out_colour_accuracy", "colour right on held-out prompts"),
    ("held_out_style_accuracy", "style right on held-out prompts"),
    ("held_out_attribute_gain", "largest unasked colour or style gain over the base"),
)


def read_evaluation(folder: Path, erased) -> tuple[dict, str]:
    """An evaluate run's metrics.json and the name it gave ``erased``; refused in one line unless
    its manifest holds this very checkpoint (by its file's sha256)."""
    path = Path(folder) / "metrics.json" if Path(folder).is_dir() else Path(folder)
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"--evaluation {folder}: cannot read an evaluate run's metrics.json there ({error})") from None
    digest = file_sha256(checkpoint_file(erased.path))
    found = [p for p, h in metrics.get("manifest", {}).get("checkpoints", {}).items() if h == digest]
    if not found:
        raise UserError(
            f"--evaluation {folder}: that run did not measure this checkpoint; evaluate it with --checkpoint {erased.path}"
        )
    name = next(n for n, m in metrics["models"].items() if m["info"].get("checkpoint") == found[0])
    return metrics, name


def _front_matter(base: str, recipe: dict, format: str) -> list[str]:
    tags = ["erasectl", "concept-erasure", "text-to-image", "diffusers", recipe["method"]]
    if format in ("lora", "kohya"):
        tags.append("lora")
    lines = [
        "---",
        f"base_model: {json.dumps(base)}",
        "library_name: diffusers",
        "pipeline_tag: text-to-image",
        "tags:",
    ]
    return lines + [f"- {tag}" for tag in tags] + ["---", ""]


def _evaluation_lines(metrics: dict, name: str) -> list[str]:
    row = next(r for r in metrics["tables"]["erased_vs_surrounding"] if r["model"] == name)
    base = next((r for r in metrics["tables"]["erased_vs_surrounding"] if r["model"] == "base"), {})
    judge = metrics.get("manifest", {}).get("judge", {"name": metrics.get("judge")})
    lines = [
        "## Evaluation", "",
        f"Measured by `erasectl evaluate`: judge `{judge.get('name')}` (weights sha256 `{judge.get('weights_sha256')}`), "
        f"seeds {metrics['seeds'][0]}-{metrics['seeds'][-1]} per prompt, erasectl {metrics['versions']['erasectl']}. "
        "Each share is of the images the judge classifies as what the prompt names, with its 95% interval.", "",
        "| figure | this model | 95% interval | base model |", "|---|---|---|---|",
    ]  # fmt: skip
    for key, label in HEADLINE:
        if row.get(key) is None:
            continue
        interval = row.get(f"{key}_interval95")
        reach = f"{interval[0]:.2f}-{interval[1]:.2f}" if interval else ""
        before = f"{base[key]:.2f}" if base.get(key) is not None else ""
        lines.append(f"| {label} | {row[key]:.2f} | {reach} | {before} |")
    for attack in [a for a in metrics["tables"].get("attacks", []) if a["model"] == name]:
        reach = attack.get("attack_success_interval95")
        reach = f"{reach[0]:.2f}-{reach[1]:.2f}" if reach else ""
        lines.append(f"| attack success: {attack['attack']} | {attack['attack_success']:.2f} | {reach} | |")
    return lines + [""]


def model_card(erased, format: str, base: str, evaluation: tuple[dict, str] | None = None) -> str:
    """The card's Markdown; ``evaluation``: what ``read_evaluation`` returned, or None."""
    recipe = erased.recipe
    concepts = ", ".join(f'"{c}"' for c in recipe["concepts"])
    settings = {k: recipe[k] for k in ("method", "anchor", "preserve", "steps", "concept_type") if recipe.get(k)}
    lines = _front_matter(base, recipe, format) + [
        f"# {base} with {concepts} erased", "",
        f"This model is `{base}` with the concept {concepts} erased by erasectl's `{recipe['method']}` method. "
        "Prompts that name it should no longer draw it; an erasure is not a guarantee, and attacks that search the prompt "
        "or fine-tune the weights may bring it back (see the evaluation below where one was run).", "",
        "## How it was made", "",
        *[f"- {key}: `{json.dumps(value)}`" for key, value in settings.items()],
        f"- training time: {recipe.get('wall_time_s')} s; the whole recipe is in the checkpoint's metadata (`erasectl.recipe`)",
        f"- versions: `{json.dumps(versions())}`", "",
        "## How to load it", "", HOW_TO_LOAD[format].format(base=base), "",
    ]  # fmt: skip
    if evaluation is not None:
        lines += _evaluation_lines(*evaluation)
    return "\n".join(lines)
