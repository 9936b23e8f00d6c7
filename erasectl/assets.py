"""What ships inside the package: the embedded shapes model and its judge, and their names."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EMBEDDED_NAME = "embedded:shapes-sd"
EMBEDDED_JUDGE_NAME = "embedded:shapes-judge"


def assets_dir() -> Path:
    return Path(str(resources.files("erasectl") / "assets"))


def embedded_pipeline_dir() -> Path:
    return assets_dir() / "shapes-sd"


def advunlearn_retain_objects() -> list[str]:
    """AdvUnlearn's retain objects (its ``coco_object`` retain prompts' objects; the file cites them)."""
    lines = (assets_dir() / "advunlearn_retain.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def embedded_judge_dir() -> Path:
    return assets_dir() / "shapes-judge"
