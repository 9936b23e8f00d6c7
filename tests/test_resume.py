"""Interrupted runs resume bit-identically; the same seed gives the same bytes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.erasure import ErasureRequest, build_config, erase_concepts
from erasectl.models import load_pipeline
from erasectl.run_state import Interrupted, RunControl
from erasectl.world.profile import WorldProfile

runner = CliRunner()
METHODS = {
    "esd": ({}, {"steps": 14, "trajectory_reuse": 4}),
    "ablate": ({"anchor": "shape"}, {"steps": 14, "anchor_images": 8}),
    "esd#lora": ({}, {"steps": 14, "trajectory_reuse": 4, "lora_rank": 2}),  # the adapters are the state
    # interrupted after the warm-up: the adversarial token and the trained text encoder (the world
    # default) are part of the state
    "advunlearn": ({}, {"steps": 10, "trajectory_reuse": 4, "warmup_steps": 3}),
    # new x_t for every attack step (AdvUnlearn's own), and two tokens, one in use and one kept
    "advunlearn#fresh": (
        {},
        {"steps": 10, "trajectory_reuse": 4, "warmup_steps": 3, "attack_states": "fresh", "attack_position": "both"},
    ),
}


def _run(variant, control=None):
    request_args, config_args = METHODS[variant]
    method = variant.split("#")[0]
    request = ErasureRequest(["circle"], WorldProfile(), **request_args)
    config = build_config(method, WorldProfile(), config_args)
    return erase_concepts(load_pipeline(), method, request, config, control=control)


@pytest.mark.parametrize("method", list(METHODS))
def test_interrupted_run_resumes_to_the_same_checkpoint(method, tmp_path):
    straight = _run(method)
    calls = {"n": 0}

    def stop_after_six():
        # The loop asks once per finished step.
        calls["n"] += 1
        return calls["n"] >= 6

    control = RunControl(state_dir=tmp_path, stop_requested=stop_after_six)
    with pytest.raises(Interrupted) as stopped:
        _run(method, control)
    assert stopped.value.step == 6 and stopped.value.path.exists()
    resumed = _run(method, RunControl(state_dir=tmp_path, resume_from=control.latest()))
    assert set(resumed.tensors) == set(straight.tensors)
    for key, tensor in straight.tensors.items():
        assert torch.equal(tensor, resumed.tensors[key]), key


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["erase", "--concept", "circle", "--steps", "6", "--checkpointing_steps", "3", "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    (out / "erased.safetensors").unlink()
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--steps",
            "7",
            "--out",
            str(out),
            "--quiet",
            "--resume_from_checkpoint",
            "latest",
        ],
    )
    assert result.exit_code == 2 and "other settings" in result.stderr


def test_sigterm_saves_a_state_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erasectl",
            "erase",
            "--concept",
            "circle",
            "--steps",
            "100000",
            "--checkpointing_steps",
            "2",
            "--out",
            str(out),
            "--quiet",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 180
    while not list((out / "states").glob("state-*.safetensors")) and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "resume with" in stderr and "--resume_from_checkpoint latest" in stderr
    assert not (out / "erased.safetensors").exists()
    states = sorted((out / "states").glob("state-*.safetensors"))
    assert states and load_file(str(states[-1]))


def test_same_seed_same_checkpoint_and_images(tmp_path):
    for name in ("a", "b"):
        result = runner.invoke(
            app,
            ["erase", "--concept", "circle", "--steps", "8", "--seed", "3", "--out", str(tmp_path / name), "--quiet"],
        )
        assert result.exit_code == 0, result.output
        checkpoint = str(tmp_path / name / "erased.safetensors")
        result = runner.invoke(
            app,
            [
                "generate",
                "--checkpoint",
                checkpoint,
                "--prompts",
                "a red circle",
                "--n",
                "2",
                "--steps",
                "10",
                "--out",
                str(tmp_path / f"img-{name}"),
                "--quiet",
            ],
        )
        assert result.exit_code == 0, result.output
    a, b = (load_file(str(tmp_path / n / "erased.safetensors")) for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    pngs = sorted((tmp_path / "img-a").glob("0*.png"))
    assert len(pngs) == 2
    from PIL import Image

    for png in pngs:
        with Image.open(png) as first, Image.open(tmp_path / "img-b" / png.name) as second:
            assert first.tobytes() == second.tobytes()
            assert first.text["seed"] == second.text["seed"]
