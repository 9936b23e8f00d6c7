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


def data_lines(name: str) -> list[str]:
    """The lines of a data file shipped in ``assets`` (its ``#`` header cites where it comes from)."""
    lines = (assets_dir() / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def advunlearn_retain_objects() -> list[str]:
    """AdvUnlearn's retain objects (its ``coco_object`` retain prompts' objects)."""
    return data_lines("advunlearn_retain.txt")


def embedded_judge_dir() -> Path:
    return assets_dir() / "shapes-judge"
