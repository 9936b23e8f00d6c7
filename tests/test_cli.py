import csv
import json

from PIL import Image
from typer.testing import CliRunner

import erasectl
from erasectl.cli import app

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"erasectl {erasectl.__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "generate" in result.stdout


def test_generate_writes_images_with_metadata_and_a_grid(tmp_path):
    out = tmp_path / "gen"
    result = runner.invoke(
        app,
        [
            "generate",
            "--prompts",
            "a red circle,a blue ring",
            "--n",
            "2",
            "--seed",
            "5",
            "--steps",
            "10",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["seed"], summary["n"], summary["image_count"], summary["complete"]) == (5, 2, 4, True)
    assert summary["prompts"] == ["a red circle", "a blue ring"] and summary["images"] == [
        str(p) for p in sorted(out.glob("0*.png"))
    ]
    listed = list(csv.DictReader((out / "images.csv").open()))
    assert [(r["index"], r["prompt"], r["seed"]) for r in listed] == [
        ("0", "a red circle", "5"),
        ("1", "a red circle", "6"),
        ("2", "a blue ring", "5"),
        ("3", "a blue ring", "6"),
    ]
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 4
    with Image.open(pngs[2]) as image:
        assert image.size == (32, 32)
        assert image.text["prompt"] == "a blue ring" and image.text["seed"] == "5"
        assert image.text["steps"] == "10" and image.text["scheduler"] == "DDIMScheduler"
        assert "Seed: 5" in image.text["parameters"]
        assert image.text["version.erasectl"] == erasectl.__version__
    with Image.open(out / "grid.png") as grid:
        assert grid.width > 2 * 128 and grid.height >= 2 * 128  # upscaled cells plus labels
    recorded = json.loads((out / "generation.json").read_text())
    assert recorded["versions"]["torch"] and recorded["grid"].endswith("grid.png")


def test_generate_refuses_a_used_output_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["generate", "--prompts", "a red circle", "--n", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_generate_bad_inputs_get_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    for args, needle in (
        (["--n", "0", "--prompts", "a ring"], "--n"),
        (["--steps", "0", "--prompts", "a ring"], "steps"),
        ([], "no prompts"),
        (["--prompts-file", str(empty)], "no prompts"),
        (["--prompts-file", str(tmp_path / "missing.txt")], "cannot read"),
        (["--prompts", "a ring", "--model", str(tmp_path / "nope")], "does not exist"),
        (["--prompts", "a ring", "--model", str(tmp_path)], "not a diffusers pipeline"),
    ):
        result = runner.invoke(app, ["generate", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_generate_streams_and_an_interrupted_run_keeps_what_it_wrote(tmp_path):
    """A huge --n starts writing at once; Ctrl-C stops it after the batch, with every image listed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "many"
    command = [
        sys.executable,
        "-m",
        "erasectl",
        "generate",
        "--prompts",
        "a red circle",
        "--n",
        "100000000",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 8:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted after" in stderr and str(out) in stderr
    summary = json.loads((out / "generation.json").read_text())
    written = sorted(out.glob("*.png"))
    assert (
        summary["complete"] is False
        and summary["image_count"] == len([p for p in written if p.name != "grid.png"]) >= 8
    )
    listed = list(csv.DictReader((out / "images.csv").open()))
    assert [r["seed"] for r in listed] == [str(s) for s in range(summary["image_count"])]
    assert all((out / r["file"]).is_file() for r in listed) and not list(out.glob(".images.csv.*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.suffix == ".png"]  # no half-written image
    os.stat(out / "grid.png")


def test_a_prompt_longer_than_the_text_encoder_reads_is_said_once(tmp_path):
    long_prompt = "a red circle " + "and a blue ring " * 30
    result = runner.invoke(
        app,
        ["generate", "--prompts", f"{long_prompt},a ring", "--n", "1", "--steps", "2", "--out", str(tmp_path / "g")],
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 prompt(s) longer than the text encoder's" in warnings[0], result.stderr
    short = runner.invoke(
        app, ["generate", "--prompts", "a ring", "--n", "1", "--steps", "2", "--out", str(tmp_path / "s")]
    )
    assert short.exit_code == 0 and "warning:" not in short.stderr
