"""Two processes under `accelerate launch` give what one process gives."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from erasectl.cli import app

runner = CliRunner()


def _launch(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--cpu",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "erasectl", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_evaluate_on_two_processes_matches_one(tmp_path):
    erased = tmp_path / "uce"
    assert runner.invoke(app, ["erase", "--concept", "circle", "--method", "uce", "--out", str(erased), "--quiet"]).exit_code == 0
    common = ["evaluate", "--checkpoint", str(erased / "erased.safetensors"), "--n-per-prompt", "2", "--json"]
    one = runner.invoke(app, [*common, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = _launch([*common, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    # Only the main process printed and wrote.
    printed = [line for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1
    mine, theirs = json.loads(one.stdout), json.loads(printed[0])
    for metrics in (mine, theirs):
        metrics.pop("wall_time_s")
    assert mine == theirs
    assert (tmp_path / "one" / "per_image.csv").read_text() == (tmp_path / "two" / "per_image.csv").read_text()


def test_generate_on_two_processes_writes_the_same_images(tmp_path):
    common = ["generate", "--prompts", "a red circle,a blue ring,a green cross", "--n", "3", "--batch-size", "2", "--quiet"]
    assert runner.invoke(app, [*common, "--out", str(tmp_path / "one")]).exit_code == 0
    two = _launch([*common, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    ones = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert ones == sorted(p.name for p in (tmp_path / "two").glob("*.png")) and len(ones) == 10  # 9 images and the grid
    for name in ones:
        if name != "grid.png":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
