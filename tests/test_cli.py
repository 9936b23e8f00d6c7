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
        ["generate", "--prompts", "a red circle,a blue ring", "--n", "2", "--seed", "5", "--steps", "10", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["seeds"] == [5, 6] and summary["prompts"] == ["a red circle", "a blue ring"]
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
