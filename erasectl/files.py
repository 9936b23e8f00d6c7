"""Writing outputs so that a crash never leaves half a file and nothing the user had is lost."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from erasectl.errors import UserError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_length: int = 60) -> str:
    """A file-name stem made from free text (a prompt): no separators, no ``..``, bounded length."""
    stem = _UNSAFE.sub("-", text.strip()).strip("-.")[:max_length].strip("-.")
    return stem or "empty"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def give_usual_modes(folder: Path) -> None:
    """Every file under ``folder`` readable as the user's own files are (diffusers writes model
    weights 0600, which a ComfyUI server running as another user cannot read)."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            os.chmod(path, 0o666 & ~_umask())


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_output_dir(path: Path, force: bool) -> Path:
    """Refuse, before any work starts, an output folder we may not write into."""
    if path.exists() and not path.is_dir():
        raise UserError(f"output path {path} is a file; pass a folder for --out")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"output folder {path} already has files; choose another --out or pass --force")
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise UserError(f"cannot write to {path}: {existing} is not writable; choose a writable --out")
    return path


def prepare_output_dir(path: Path, force: bool) -> Path:
    """An output folder that is new, empty, or that the user allowed us to write into."""
    check_output_dir(path, force)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {path}: {error.strerror}; choose a writable --out") from None
    return path
