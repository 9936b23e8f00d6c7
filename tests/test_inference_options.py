"""generate, compare and evaluate take the inference options users expect, and each one acts."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from erasectl.cli import app

runner = CliRunner()


def _generate(tmp_path, name, *options):
    out = tmp_path / name
    result = runner.invoke(
        app,
        [
            "generate",
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--steps",
            "8",
            "--out",
            str(out),
            "--json",
            "--quiet",
            *options,
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return summary, Image.open(summary["images"][0])


def test_generate_options_change_what_is_drawn_and_are_recorded(tmp_path):
    plain, plain_image = _generate(tmp_path, "plain")
    assert plain["batch_size"] == 64 and plain["scheduler"] == "DDIMScheduler"
    negative, negative_image = _generate(tmp_path, "negative", "--negative-prompt", "a red shape")
    assert (
        negative["negative_prompt"] == "a red shape"
        and "Negative prompt: a red shape" in negative_image.text["parameters"]
    )
    assert np.abs(np.asarray(plain_image, dtype=int) - np.asarray(negative_image, dtype=int)).max() > 0
    sized, sized_image = _generate(tmp_path, "sized", "--height", "48", "--width", "64")
    assert sized_image.size == (64, 48)
    euler, euler_image = _generate(tmp_path, "euler", "--scheduler", "euler-a", "--dtype", "bf16", "--batch-size", "3")
    assert (
        euler["scheduler"] == "EulerAncestralDiscreteScheduler"
        and euler["dtype"] == "bf16"
        and euler["batch_size"] == 3
    )
    assert euler_image.text["scheduler"] == "EulerAncestralDiscreteScheduler"


def test_bad_inference_options_are_one_line_and_exit_2(tmp_path):
    for options, message in (
        (["--scheduler", "nope"], "unknown scheduler"),
        (["--height", "50"], "multiple of 8"),
        (["--dtype", "fp16"], "needs a GPU"),
        (["--dtype", "int8"], "--dtype int8 is not supported"),
        (["--revision", "main"], "is for hub ids"),
    ):
        result = runner.invoke(app, ["generate", "--prompts", "a ring", "--out", str(tmp_path / "x"), *options])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            options,
            result.stderr,
        )
    assert not (tmp_path / "x").exists()


def test_compare_and_evaluate_take_the_same_options(tmp_path):
    run = tmp_path / "uce"
    assert (
        runner.invoke(app, ["erase", "--concept", "circle", "--method", "uce", "--out", str(run), "--quiet"]).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "compare",
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--steps",
            "6",
            "--checkpoint",
            str(run / "erased.safetensors"),
            "--scheduler",
            "dpm++2m",
            "--negative-prompt",
            "a blue ring",
            "--out",
            str(tmp_path / "grid.png"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scheduler"] == "DPMSolverMultistepScheduler" and summary["negative_prompt"] == "a blue ring"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "erased.safetensors"),
            "--n-per-prompt",
            "1",
            "--steps",
            "6",
            "--scheduler",
            "unipc",
            "--batch-size",
            "5",
            "--height",
            "32",
            "--width",
            "32",
            "--out",
            str(tmp_path / "eval"),
            "--json",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert config["batch_size"] == 5 and config["height"] == 32
