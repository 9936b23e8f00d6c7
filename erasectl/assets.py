"""What ships inside the package: the embedded shapes model and its judge, and their names."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EMBEDDED_NAME = "embedded:shapes-sd"
EMBEDDED_JUDGE_NAME = "embedded:shapes-judge"
# the embedded models by what --model accepts: (the name checkpoints record, the asset folder,
# the command that makes it)
EMBEDDED_MODELS = {
    "shapes-unet": (EMBEDDED_NAME, "shapes-sd", "erasectl train-world"),  # the default
    "shapes-mmdit": ("embedded:shapes-mmdit", "shapes-mmdit", "erasectl train-world --family sd3"),
}


def assets_dir() -> Path:
    return Path(str(resources.files("erasectl") / "assets"))


def embedded_pipeline_dir(model: str = "shapes-unet") -> Path:
    return assets_dir() / EMBEDDED_MODELS[model][1]


def embedded_model(model: str | None) -> str | None:
    """The embedded model ``--model`` names (``shapes-unet`` for none; its recorded name and
    ``embedded:<name>`` too), or None when it names something else."""
    if model in (None, "", "embedded"):
        return "shapes-unet"
    for key, (recorded, _, _) in EMBEDDED_MODELS.items():
        if model in (key, recorded, f"embedded:{key}"):
            return key
    return None


def data_lines(name: str) -> list[str]:
    """The lines of a data file shipped in ``assets`` (its ``#`` header cites where it comes from)."""
    lines = (assets_dir() / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def advunlearn_retain_objects() -> list[str]:
    """AdvUnlearn's retain objects (its ``coco_object`` retain prompts' objects)."""
    return data_lines("advunlearn_retain.txt")


def embedded_judge_dir() -> Path:
    return assets_dir() / "shapes-judge"
