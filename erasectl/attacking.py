"""A whole attack run, from an erased checkpoint to its files: what ``erasectl attack`` does, callable from Python."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from erasectl.attacks import PLACEHOLDER, AttackConfig, save_embeddings
from erasectl.checkpoint import ErasedCheckpoint, model_loaders
from erasectl.errors import UserError
from erasectl.evaluation.manifest import build_manifest, prompts_sha256
from erasectl.evaluation.protocol import protocol_for
from erasectl.files import prepare_output_dir, write_atomically
from erasectl.generation import Drawing, SamplerSettings
from erasectl.grids import labelled_grid, plot, save_plot
from erasectl.judge import ClipJudge
from erasectl.models import latest_checkpoint, load_base
from erasectl.prompt_free import attack
from erasectl.provenance import versions


@dataclass
class AttackRequest:
    checkpoint: Path | None  # None: the newest in runs/
    method: str
    config: AttackConfig
    concept: str | None = None  # None: the checkpoint's first
    judge: str | None = None
    surrounding: list[str] | None = None
    n_per_prompt: int = 8
    model_config: str | None = None
    device: str = "cpu"
    allow_pickle: bool = False


def attack_checkpoint(request: AttackRequest, out: Path, force: bool = False, progress=None, control=None) -> dict:
    """Attack the erased model, judge base, erased and attacked images on evaluate's seeds, and write
    attack.json, grid.png and (soft prompt) embedding.safetensors into ``out``; the summary is returned.
    ``progress(done, total, logs)`` after each step; ``control``: saving and resuming (``erasectl.run_state``)."""

    erased = ErasedCheckpoint.load(request.checkpoint or latest_checkpoint())
    concept = " ".join((request.concept or erased.recipe["concepts"][0]).split())
    if not concept:
        raise UserError("the concept is empty; pass --concept with the erased words")
    loaded = load_base([erased], None, request.model_config, Drawing(), request.device, request.allow_pickle)
    protocol = protocol_for(loaded.profile, concept, request.surrounding, [], None, request.judge)
    judge = ClipJudge.load(request.judge, device=request.device)
    models = model_loaders(loaded.pipeline, erased.base_model, [erased])
    (_, load_base_model, _), (_, load_erased, _) = models
    seeds = list(range(request.config.seed, request.config.seed + request.n_per_prompt))
    settings = SamplerSettings(batch_size=loaded.profile.generation_batch_size)
    summary, drawn = attack(
        load_base_model, load_erased, concept, protocol, judge, request.method, request.config, seeds, settings, loaded.profile,
        progress=progress, control=control, recipe=erased.recipe,
    )  # fmt: skip
    prepare_output_dir(out, force)
    summary.update({"checkpoint": str(erased.path), "base_model": erased.base_model, "judge": judge.name, "candidates": protocol.candidates, "versions": versions(),
                    "manifest": build_manifest(models, judge.identity(), prompts_sha256(protocol))})  # fmt: skip
    if drawn["embeddings"] is not None:
        metadata = {
            "erasectl.token": PLACEHOLDER,
            "erasectl.concept": concept,
            "erasectl.versions": json.dumps(versions()),
        }
        file = save_embeddings(out / "embedding.safetensors", drawn["embeddings"], metadata)
        summary.update({"embedding": str(file), "token": PLACEHOLDER})
    summary["grid"] = str(_write_grid(out, protocol.prompt_sets()[0].prompts, drawn, len(seeds), request.method))
    if request.method == "relearn":
        summary["plot"] = str(relearn_plot(summary, out / "relearn.png"))
    write_atomically(out / "attack.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def _write_grid(out: Path, prompts: list[str], drawn: dict, n: int, method: str) -> Path:

    columns = ("base", "erased", "attack")
    rows = [
        [item.image for column in columns for item in drawn[column][i * n : (i + 1) * n]] for i in range(len(prompts))
    ]
    grid = labelled_grid(rows, [p[:24] for p in prompts], ["base", "erased", f"erased + {method}"], cell=64)
    return write_atomically(out / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))


def relearn_plot(summary: dict, path: Path) -> Path:
    """The relearn attack's success after each number of fine-tuning steps, with its 95% intervals."""
    curve = summary["details"]["curve"]
    steps = [point["steps"] for point in curve]
    success = [point["success"] for point in curve]
    low = [point.get("interval95", [point["success"]] * 2)[0] for point in curve]
    high = [point.get("interval95", [point["success"]] * 2)[1] for point in curve]
    figure, axes = plot((5.5, 3.6))
    axes.fill_between(steps, low, high, alpha=0.25, label="95% interval")
    axes.plot(steps, success, marker="o", label="attack success")
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.axhline(summary["base_accuracy"], color="green", linewidth=0.8, label="base model")
    axes.set_xlabel("fine-tuning steps on the base's images of the concept")
    axes.set_ylabel(f"share judged as {summary['concept']}")
    axes.set_ylim(-0.02, 1.02)
    axes.legend(fontsize=8)
    axes.set_title("Relearning an erased concept")
    return save_plot(figure, path)
