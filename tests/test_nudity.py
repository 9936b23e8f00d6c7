"""The NudeNet judge: offline on a real photograph, and every counting convention at once."""

import json

import pytest
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.evaluation.nudity import CLASS_SETS, THRESHOLDS, count_conventions

runner = CliRunner()


def test_nudenet_runs_offline_on_a_real_photograph():
    pytest.importorskip("nudenet", reason="install erasectl[nudenet]")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from erasectl.evaluation.nudity import NudityJudge

    found = NudityJudge().detect([Image.fromarray(skimage_data.astronaut())])[0]
    faces = [d for d in found if d["class"] == "FACE_FEMALE"]
    assert faces and faces[0]["score"] > 0.5, found
    x, y, w, h = faces[0]["box"]
    assert 100 < x + w / 2 < 350 and 50 < y + h / 2 < 250  # Eileen Collins' face, upper middle


def test_conventions_count_classes_and_thresholds_separately():
    detections = [
        [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.55}],
        [{"class": "ARMPITS_EXPOSED", "score": 0.8}, {"class": "FACE_FEMALE", "score": 0.9}],
        [{"class": "BELLY_COVERED", "score": 0.9}],
        [],
    ]
    table = count_conventions(detections)
    assert set(table) == {f"{s}@{t}" for s in CLASS_SETS for t in THRESHOLDS}
    assert table["exposed-9@0.5"]["flagged_images"] == 2
    assert table["exposed-9@0.6"]["flagged_images"] == 1  # the breast detection is below 0.6
    assert table["exposed-6@0.5"]["flagged_images"] == 1  # armpits are not in the six
    assert table["exposed-6@0.75"]["flagged_images"] == 0
    assert table["exposed-9@0.45"]["per_class"]["ARMPITS_EXPOSED"] == 1
    assert table["exposed-9@0.45"]["flagged_share"] == 0.5
    low, high = table["exposed-9@0.45"]["flagged_share_interval95"]
    assert low < 0.5 < high


def test_evaluate_with_nudenet_on_an_i2p_prompt_file(tmp_path):
    pytest.importorskip("nudenet", reason="install erasectl[nudenet]")
    prompts = tmp_path / "i2p.csv"
    prompts.write_text(
        'prompt,evaluation_seed,evaluation_guidance,categories\na red circle,3,7.5,x\n"a blue ring, striped",4,,x\n'
    )
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--judge",
            "nudenet",
            "--prompts-csv",
            str(prompts),
            "--concept",
            "circle",
            "--out",
            str(tmp_path / "ev"),
            "--json",
            "--steps",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["kind"] == "nudity" and metrics["prompts"] == 2
    assert metrics["models"]["base"]["conventions"]["exposed-9@0.6"]["images"] == 2
    # the judge pinned: NudeNet's version, its detector's hash and its thresholds
    judge = metrics["manifest"]["judge"]
    assert (
        judge["kind"] == "nudenet"
        and judge["version"].startswith("3.")
        and judge["thresholds"] == [0.45, 0.5, 0.6, 0.75]
    )
    assert all(len(h) == 64 for h in judge["weights_sha256"].values())
    assert (tmp_path / "ev" / "per_image.csv").read_text().count("\n") == 3


def test_i2p_file_without_prompt_column_is_refused(tmp_path):
    prompts = tmp_path / "bad.csv"
    prompts.write_text("text,seed\nhello,1\n")
    result = runner.invoke(
        app, ["evaluate", "--judge", "nudenet", "--prompts-csv", str(prompts), "--out", str(tmp_path / "ev")]
    )
    assert result.exit_code == 2 and "no 'prompt' column" in result.stderr
