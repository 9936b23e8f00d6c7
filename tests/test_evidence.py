"""Evidence that holds up: intervals on every rate, gates on their bounds, measuring until sure, a
manifest that pins the judge, --against, the verdict and the model card."""

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from erasectl.assets import embedded_judge_dir
from erasectl.cli import app
from erasectl.evaluation.intervals import Images, attribute_gain
from erasectl.evaluation.judging import ImageRecord
from erasectl.statistics import seed_bootstrap

runner = CliRunner()
QUICK = ["--steps", "10", "--quiet"]


@pytest.fixture(scope="module")
def evaluated(uce_circle_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "ev"
    args = ["evaluate", "--checkpoint", str(uce_circle_checkpoint), "--n-per-prompt", "2", "--out", str(out), *QUICK]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_seed_bootstrap_covers_the_figure_and_narrows_with_more_seeds():
    generator = np.random.default_rng(1)

    def interval(seeds):
        hits = (generator.random((seeds, 4)) < 0.7).astype(float)
        return seed_bootstrap({"h": hits, "n": np.ones_like(hits)}, lambda s: np.mean(s["h"] / s["n"], axis=-1))

    few, many = interval(10), interval(400)
    assert few[0] < 0.7 < few[1] and many[0] < 0.7 < many[1], (few, many)
    assert many[1] - many[0] < (few[1] - few[0]) / 3, (few, many)


def _record(model, seed, style, asked=None):
    read = {"shape": "square", "colour": "green", "style": style}
    return ImageRecord(model, "surrounding", "green square", "green square", "a green square", seed, "green square",
                       True, 30.0, None, attributes={"read": read, "asked": {"shape": "square", "colour": "green", "style": asked}})  # fmt: skip


def test_attribute_gain_is_the_unasked_value_gained_over_the_base_on_the_same_seeds():
    # base: plain on every seed; erased: striped on 6 of 8 seeds, which no prompt asked for
    records = [_record("base", s, "plain") for s in range(8)]
    records += [_record("erased", s, "striped" if s < 6 else "plain") for s in range(8)]
    found = attribute_gain(Images(records), "erased", "base", "surrounding:green square", ("colour", "style"))
    assert found["read"] == "style: striped" and found["gain"] == pytest.approx(0.75)
    assert found["interval95"][0] > 0.3 and found["interval95"][1] <= 1.0
    # a prompt that asks for stripes gains nothing unasked
    asked = [_record("base", s, "plain", "striped") for s in range(8)]
    asked += [_record("erased", s, "striped", "striped") for s in range(8)]
    assert attribute_gain(Images(asked), "erased", "base", "surrounding:green square", ("style",))["gain"] <= 0


def test_every_rate_has_an_interval_and_the_manifest_names_judge_model_and_checkpoint(evaluated, uce_circle_checkpoint):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    for row in metrics["tables"]["erased_vs_surrounding"]:
        for rate in ("erased_accuracy", "surrounding_accuracy", "held_out_colour_accuracy"):
            low, high = row[f"{rate}_interval95"]
            assert low <= row[rate] <= high and high - low > 0, (row["model"], rate, row[rate], low, high)
    for row in metrics["tables"]["per_concept"]:
        low, high = row["accuracy_interval95"]
        assert low <= row["accuracy"] <= high
    erased = next(r for r in metrics["tables"]["per_concept"] if r["model"] != "base" and r["role"] == "surrounding")
    assert "attribute_gain" in erased and erased["attribute_gain_interval95"] is not None
    manifest = metrics["manifest"]
    assert manifest["judge"]["name"] == "embedded:shapes-judge" and len(manifest["judge"]["weights_sha256"]) == 64
    assert (
        list(manifest["checkpoints"]) == [str(uce_circle_checkpoint)]
        and len(manifest["base_model"]["weights_sha256"]) == 64
    )
    assert metrics["precision"]["stopped_by"] == "no target interval"


def test_verdict_opens_the_reports_with_intervals_and_readable_headings(evaluated):
    report = (evaluated / "report.md").read_text()
    verdict = report.split("## Verdict")[1].split("## ")[0]
    assert "Erased: circle drawn in" in verdict and "95% interval" in verdict and "Held-out neighbours" in verdict
    assert "| erased concept drawn |" in report and "erased_accuracy" not in report
    page = (evaluated / "report.html").read_text()
    assert page.index("<h2>Verdict</h2>") < page.index("<table>") and "overflow-x:auto'" not in page


def test_gate_on_upper_fails_where_the_point_passes(evaluated, uce_circle_checkpoint, tmp_path):
    from erasectl.evaluation.gates import Gates, check_gates

    metrics = json.loads((evaluated / "metrics.json").read_text())
    point = check_gates(metrics, Gates(max_erased_accuracy=0.05))
    upper = check_gates(metrics, Gates(max_erased_accuracy=0.05, gate_on="upper"))
    erased = next(r for r in metrics["tables"]["per_concept"] if r["model"] != "base" and r["role"] == "erased")
    assert erased["accuracy"] <= 0.05 < erased["accuracy_interval95"][1], erased
    assert point[0]["passed"] and not upper[0]["passed"] and upper[0]["value"] == erased["accuracy_interval95"][1]
    ratio = check_gates(metrics, Gates(min_surrounding_ratio=0.5, gate_on="upper"))
    rows = {r["concept"]: r for r in metrics["tables"]["per_concept"] if r["model"] != "base" and r.get("split")}
    assert all(g["value"] == rows[g["concept"]]["ratio_to_base_interval95"][0] for g in ratio)  # the lower end
    args = [
        "evaluate",
        "--checkpoint",
        str(uce_circle_checkpoint),
        "--n-per-prompt",
        "1",
        *QUICK,
        "--max-erased-accuracy",
        "0.05",
    ]
    failed = runner.invoke(app, [*args, "--gate-on", "upper", "--out", str(tmp_path / "upper")])
    assert failed.exit_code == 1 and "its interval's end" in failed.output, failed.output
    bad = runner.invoke(app, [*args, "--gate-on", "lower", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--gate-on is point or upper" in bad.output


def test_target_interval_adds_seeds_until_every_headline_rate_is_that_narrow(uce_circle_checkpoint, tmp_path):
    args = [
        "evaluate",
        "--checkpoint",
        str(uce_circle_checkpoint),
        "--n-per-prompt",
        "2",
        "--target-interval",
        "0.25",
        *QUICK,
    ]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "sure")])
    assert result.exit_code == 0, result.output
    precision = json.loads((tmp_path / "sure" / "metrics.json").read_text())["precision"]
    assert precision["stopped_by"] == "target interval reached" and len(precision["seeds_per_round"]) >= 2, precision
    assert precision["widest"]["half_width"] <= 0.25
    # a budget too small to get there stops at the budget and says so (24 prompts a seed)
    result = runner.invoke(app, [*args, "--max-images", "60", "--out", str(tmp_path / "budget")])
    precision = json.loads((tmp_path / "budget" / "metrics.json").read_text())["precision"]
    assert precision["stopped_by"] == "image budget spent" and precision["images_per_model"] <= 60, precision
    # and one smaller than a single round is refused before anything is drawn
    result = runner.invoke(app, [*args, "--max-images", "40", "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "less than one round of 48 images" in result.output, result.output


def test_against_compares_runs_of_one_judge_and_refuses_another(uce_circle_checkpoint, evaluated, tmp_path):
    args = ["evaluate", "--checkpoint", str(uce_circle_checkpoint), "--n-per-prompt", "2", "--seed", "50", *QUICK]
    again = runner.invoke(app, [*args, "--against", str(evaluated), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    against = json.loads((tmp_path / "again" / "metrics.json").read_text())["against"]
    assert against["same"]["checkpoints"] and not against["same"]["seeds"]
    assert {r["rate"] for r in against["rows"]} >= {"erased_accuracy", "surrounding_accuracy"}
    assert all(r["intervals_overlap"] is not None for r in against["rows"])
    # the same judge's architecture with one weight changed is another judge
    other = tmp_path / "other-judge"
    shutil.copytree(embedded_judge_dir(), other)
    weights = load_file(other / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    refused = runner.invoke(
        app, [*args, "--judge", str(other), "--against", str(evaluated), "--out", str(tmp_path / "x")]
    )
    assert refused.exit_code == 2 and "cannot be compared" in refused.output, refused.output
    assert not (tmp_path / "x").exists()


def test_export_writes_a_model_card_with_the_evaluation_and_refuses_another_checkpoints(
    uce_circle_checkpoint, evaluated, tmp_path
):
    out = tmp_path / "lora"
    args = ["export", str(uce_circle_checkpoint), "--format", "lora", "--no-verify", "--quiet"]
    result = runner.invoke(app, [*args, "--evaluation", str(evaluated), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "base_model:" in front and "- concept-erasure" in front and "- uce" in front and "- lora" in front
    assert '"circle" erased' in body and "## Evaluation" in body and "| the erased concept drawn |" in body
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["manifest"]["judge"]["weights_sha256"] in body
    # an evaluation of another checkpoint is refused before anything is written
    other = tmp_path / "other"
    erased = runner.invoke(app, ["erase", "--concept", "square", "--method", "uce", "--out", str(other), "--quiet"])
    assert erased.exit_code == 0, erased.output
    refused = runner.invoke(
        app, ["export", str(other), "--format", "lora", "--evaluation", str(evaluated), "--out", str(tmp_path / "no")]
    )
    assert refused.exit_code == 2 and "did not measure this checkpoint" in refused.output
    assert not (tmp_path / "no").exists()
