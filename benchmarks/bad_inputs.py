"""Run every bad input docs/robustness.md lists and print what each gets, as a markdown table.

    python benchmarks/bad_inputs.py > /tmp/table.md

Each row is run through the real command line (the installed entry point's parser included) in a
scratch folder; the table shows the exit code and the one line on stderr. Nothing here is typed by
hand: docs/robustness.md's table is this script's output.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    (tmp / "empty.txt").write_text("\n \n")
    (tmp / "garbage.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp / "model.ckpt").write_bytes(b"\x80\x04not really a pickle")
    (tmp / "not-a-pipeline").mkdir()
    (tmp / "taken").mkdir()
    (tmp / "taken" / "mine.txt").write_text("keep me")
    (tmp / "a-file").write_text("keep me")
    import torch
    from safetensors.torch import save_file

    save_file({"unet.x": torch.zeros(1)}, str(tmp / "foreign.safetensors"))
    save_file(
        {"vae.encoder.x": torch.zeros(1)},
        str(tmp / "unexpected.safetensors"),
        metadata={"erasectl.format": "erasectl.erased-weights"},
    )
    out = ["--out", str(tmp / "out")]
    return [
        ("model path that does not exist", ["erase", "--concept", "circle", "--model", "/no/such/model", *out]),
        (
            "folder that is not a pipeline",
            ["generate", "--prompts", "a ring", "--model", str(tmp / "not-a-pipeline"), *out],
        ),
        ("hub id, hub unreachable", ["generate", "--prompts", "a ring", "--model", "someone/not-cached", *out]),
        (
            "single file without a config",
            ["generate", "--prompts", "a ring", "--model", str(tmp / "garbage.safetensors"), *out],
        ),
        ("unknown method", ["erase", "--concept", "circle", "--method", "nope", *out]),
        ("unknown parameter group", ["erase", "--concept", "circle", "--parameter-group", "everything", *out]),
        ("ablate without --anchor", ["erase", "--concept", "circle", "--method", "ablate", *out]),
        ("option of another method", ["erase", "--concept", "circle", "--target", "noise", *out]),
        ("empty concept", ["erase", "--concept", "  ", *out]),
        ("word the embedded model cannot draw", ["erase", "--concept", "grumpy cat", *out]),
        ("steps <= 0", ["erase", "--concept", "circle", "--steps", "0", *out]),
        ("negative lr", ["erase", "--concept", "circle", "--lr", "-1", *out]),
        ("eta <= 0", ["erase", "--concept", "circle", "--negative-guidance", "0", *out]),
        ("n <= 0", ["generate", "--prompts", "a ring", "--n", "0", *out]),
        ("not a number", ["erase", "--concept", "circle", "--steps", "abc", *out]),
        ("mistyped option", ["evaluate", "--n-per-promt", "2", *out]),
        ("empty prompts file", ["generate", "--prompts-file", str(tmp / "empty.txt"), *out]),
        ("unreadable prompts file", ["generate", "--prompts-file", str(tmp / "missing.txt"), *out]),
        (
            "corrupt checkpoint",
            ["generate", "--prompts", "a ring", "--checkpoint", str(tmp / "garbage.safetensors"), *out],
        ),
        (
            "safetensors, not erasectl's",
            ["generate", "--prompts", "a ring", "--checkpoint", str(tmp / "foreign.safetensors"), *out],
        ),
        (
            "checkpoint with unexpected keys",
            ["generate", "--prompts", "a ring", "--checkpoint", str(tmp / "unexpected.safetensors"), *out],
        ),
        ("pickle checkpoint", ["generate", "--prompts", "a ring", "--checkpoint", str(tmp / "model.ckpt"), *out]),
        ("unknown scheduler", ["generate", "--prompts", "a ring", "--scheduler", "fastest", *out]),
        ("fp16 on a CPU", ["generate", "--prompts", "a ring", "--dtype", "fp16", *out]),
        ("size not a multiple of 8", ["generate", "--prompts", "a ring", "--height", "50", *out]),
        (
            "--bias-deltas with a PEFT LoRA",
            ["export", str(tmp / "garbage.safetensors"), "--format", "lora", "--bias-deltas", *out],
        ),
        ("a concept named twice", ["erase", "--concept", "circle,circle", *out]),
        (
            "anchor equal to the concept",
            ["erase", "--concept", "circle", "--method", "ablate", "--anchor", "circle", *out],
        ),
        ("a concept both erased and preserved", ["erase", "--concept", "circle", "--preserve", "circle", *out]),
        ("--device cuda without a GPU", ["generate", "--prompts", "a ring", "--device", "cuda", *out]),
        ("a device torch does not know", ["erase", "--concept", "circle", "--device", "gpu", *out]),
        ("output folder in use, no --force", ["generate", "--prompts", "a ring", "--out", str(tmp / "taken")]),
        ("output that cannot be written", ["generate", "--prompts", "a ring", "--out", str(tmp / "a-file" / "images")]),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
        print("| input | command | exit | stderr |")
        print("|---|---|---|---|")
        for label, argv in cases(tmp):
            done = subprocess.run(
                [sys.executable, "-m", "erasectl", *argv], capture_output=True, text=True, env=env, cwd=tmp
            )
            lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line]
            shown = " ".join(shlex.quote(a) for a in argv).replace(folder + "/", "")
            message = (lines[-1] if lines else "").replace(folder + "/", "").replace("|", "\\|")
            print(f"| {label} | `erasectl {shown}` | {done.returncode} | {message} |")
        assert (tmp / "taken" / "mine.txt").read_text() == "keep me" and (tmp / "a-file").read_text() == "keep me"
        assert not (tmp / "out").exists(), "a bad input left an output behind"


if __name__ == "__main__":
    main()
