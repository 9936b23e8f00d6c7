"""evaluate: the fixed protocol, its files, its gates and its neighbours."""

import csv
import json
import shutil
from importlib import resources

import jsonschema
import pytest
from typer.testing import CliRunner

from erasectl.assets import embedded_judge_dir
from erasectl.cli import app
from erasectl.judge import ClipJudge
from erasectl.models import load_pipeline
from erasectl.neighbours import find_neighbours, tokenizer_words

runner = CliRunner()
SCHEMA = json.loads((resources.files("erasectl") / "schemas" / "metrics.schema.json").read_text())


@pytest.fixture(scope="module")
def weak_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("weak") / "run"
    result = runner.invoke(app, ["erase", "--concept", "circle", "--steps", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "erased.safetensors"


def test_base_model_draws_every_concept(tmp_path):
    result = runner.invoke(
        app, ["evaluate", "--concept", "circle", "--n-per-prompt", "4", "--out", str(tmp_path / "ev"), "--json"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    jsonschema.validate(metrics, SCHEMA)
    sets = metrics["models"]["base"]["sets"]
    assert set(sets) == {
        "erased:circle",
        "surrounding:square",
        "surrounding:triangle",
        "surrounding:cross",
        "surrounding:ring",
        "paraphrase:disc",
    }
    for key, value in sets.items():
        assert value["accuracy"] >= 0.9, f"base {key}: {value['accuracy']:.3f} of {value['n']}"


@pytest.fixture(scope="module")
def uce_runs(tmp_path_factory):
    """UCE erasures of circle: onto ring keeping the other three shapes (ring is then held out, and
    kept); keeping square and triangle only; and every other shape preserved (none held out)."""
    runs = {}
    for name, args in (
        ("to-ring", ["--anchor", "ring", "--preserve", "square,triangle,cross"]),
        ("two-kept", ["--preserve", "square,triangle"]),
        ("all-kept", ["--preserve", "square,triangle,cross,ring"]),
    ):
        out = tmp_path_factory.mktemp("uce") / name
        result = runner.invoke(
            app, ["erase", "--concept", "circle", "--method", "uce", "--out", str(out), "--quiet", *args]
        )
        assert result.exit_code == 0, result.output
        runs[name] = out / "erased.safetensors"
    return runs


def test_report_of_an_erasure_passes_its_gates(uce_runs, tmp_path):
    path = uce_runs["to-ring"]
    out = tmp_path / "ev"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(path),
            "--n-per-prompt",
            "4",
            "--steps",
            "10",
            "--out",
            str(out),
            "--json",
            "--max-erased-accuracy",
            "0.1",
            "--min-surrounding-ratio",
            "0.8",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    jsonschema.validate(metrics, SCHEMA)
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert {g["gate"] for g in metrics["gates"]} == {"max-erased-accuracy", "min-surrounding-ratio"}
    assert all(g["passed"] for g in metrics["gates"])
    erased_row = next(r for r in metrics["tables"]["erased_vs_surrounding"] if r["model"] != "base")
    assert erased_row["erased_accuracy"] <= 0.1
    assert (erased_row["held_out_surrounding"], erased_row["preserved_surrounding"]) == (1, 3)
    assert [g["concept"] for g in metrics["gates"] if g["gate"] == "min-surrounding-ratio"] == ["ring"]  # held-out only
    assert [r["concept"] for r in metrics["tables"]["distance_vs_accuracy"]] == ["square", "triangle", "cross", "ring"]
    assert metrics["tables"]["timing"][0]["method"] == "uce" and metrics["tables"]["timing"][0]["wall_time_s"] > 0
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 2 * 6 * 4 * 4  # models x prompt sets x colour templates x seeds
    # every image's shape by outline beside the judge's; on the base model's prompts they agree
    base_shapes = [r for r in rows if r["model"] == "base" and r["role"] != "paraphrase"]
    assert sum(r["read_outline"] == r["read_shape"] for r in base_shapes) >= 0.9 * len(base_shapes)
    report = (out / "report.md").read_text()
    assert "| circle |" in report and "thumbnails.png" in report
    for name in ("distance_vs_accuracy.png", "thumbnails.png"):
        assert (out / name).stat().st_size > 1000


def test_gate_fails_with_exit_1_naming_gate_and_figure(weak_checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(weak_checkpoint),
            "--n-per-prompt",
            "2",
            "--steps",
            "10",
            "--out",
            str(tmp_path / "ev"),
            "--quiet",
            "--max-erased-accuracy",
            "0.1",
        ],
    )
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    import re

    found = re.fullmatch(r"gate failed: max-erased-accuracy 0\.1: run circle is (\d\.\d{3})", line)
    assert found and float(found.group(1)) > 0.1, line
    assert (tmp_path / "ev" / "metrics.json").exists()  # the evidence is kept


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--concept", "circle", "--max-erased-accuracy", "2"], "between 0 and 1"),
        (["--concept", "circle", "--surrounding", "ring", "--auto-surrounding", "2"], "not both"),
        (["--concept", "grumpy"], "does not know 'grumpy'"),
        (["--concept", "circle", "--n-per-prompt", "0"], "n-per-prompt"),
        (["--concept", "circle", "--judge", "/nonexistent/judge"], "cannot load the judge"),
    ],
)
def test_bad_evaluate_inputs_exit_2(args, needle, tmp_path):
    result = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "ev"), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("mode", ["nearest", "gaussian"])
def test_auto_surrounding_returns_valid_phrases_only(mode):
    pipeline = load_pipeline()
    words = tokenizer_words(pipeline.tokenizer)
    found = find_neighbours(pipeline, "circle", 5, mode=mode)
    assert len(found) == 5 == len(set(found))
    assert all(phrase in words and phrase != "circle" for phrase in found), found
    listed = ["a blue ring", "a red square", "a yellow plus", "a green disc", "a striped hoop"]
    chosen = find_neighbours(pipeline, "circle", 2, vocabulary=listed, mode=mode)
    assert set(chosen) <= set(listed) and len(chosen) == 2


def test_a_judge_from_a_local_path_loads_and_agrees(tmp_path):
    from PIL import Image

    from erasectl.world.judging import read_attributes
    from erasectl.world.render import render_dataset

    copy = tmp_path / "my-clip"
    shutil.copytree(embedded_judge_dir(), copy)
    judge = ClipJudge.load(str(copy))
    assert judge.name == str(copy)
    images = [Image.fromarray(a) for a in render_dataset(20, seed=5)[0]]
    assert read_attributes(judge, images) == read_attributes(ClipJudge.load(), images)


def _split_rows(metrics, model):
    return {
        r["concept"]: r for r in metrics["tables"]["per_concept"] if r["model"] == model and r["role"] == "surrounding"
    }


def test_no_default_preservation_is_a_default_surrounding_concept():
    """On the embedded model, what UCE preserves by default is never what evaluate judges around
    the concept, for shapes, two-word concepts, colours and styles."""
    from erasectl.world.profile import WorldProfile
    from erasectl.world.protocol import world_protocol

    for concept in ("circle", "ring", "blue square", "red circle", "striped", "red"):
        preserved = set(WorldProfile().default_preserve([concept]))
        assert preserved and not preserved & set(world_protocol(concept, None, None, None).surrounding), concept
        assert concept not in preserved and f"{concept} shape" not in preserved


def test_held_out_surroundings_are_the_headline_and_an_empty_set_is_said(uce_runs, tmp_path):
    out = tmp_path / "ev"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_runs["two-kept"]),
            "--checkpoint",
            str(uce_runs["all-kept"]),
            "--n-per-prompt",
            "2",
            "--steps",
            "10",
            "--out",
            str(out),
            "--json",
            "--min-surrounding-ratio",
            "0.5",
        ],
    )
    metrics = json.loads(result.stdout)
    jsonschema.validate(metrics, SCHEMA)
    rows = _split_rows(metrics, "two-kept")
    assert {c: r["split"] for c, r in rows.items()} == {
        "square": "preserved",
        "triangle": "preserved",
        "cross": "held-out",
        "ring": "held-out",
    }
    headline = {r["model"]: r for r in metrics["tables"]["erased_vs_surrounding"]}
    assert headline["two-kept"]["surrounding_accuracy"] == pytest.approx(
        (rows["cross"]["accuracy"] + rows["ring"]["accuracy"]) / 2, abs=1e-4
    )
    assert headline["two-kept"]["preserved_surrounding_accuracy"] == pytest.approx(
        (rows["square"]["accuracy"] + rows["triangle"]["accuracy"]) / 2, abs=1e-4
    )
    # every surrounding shape preserved: no silent 1.00, a warning and a gate that cannot pass
    assert headline["all-kept"]["surrounding_accuracy"] is None and headline["all-kept"]["held_out_surrounding"] == 0
    assert any(w.startswith("all-kept:") for w in metrics["warnings"])
    unmeasured = [g for g in metrics["gates"] if g["model"] == "all-kept" and g["gate"] == "min-surrounding-ratio"]
    assert len(unmeasured) == 1 and unmeasured[0]["value"] is None and not unmeasured[0]["passed"]
    assert result.exit_code == 1
    assert "**Warning:** all-kept: every surrounding concept was preserved" in (out / "report.md").read_text()


def test_every_image_is_read_for_colour_and_style_and_what_replaces_the_concept(uce_runs, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_runs["to-ring"]),
            "--n-per-prompt",
            "2",
            "--steps",
            "10",
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    images = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open()))
    for row in metrics["tables"]["per_concept"]:  # every world prompt names a colour: the share read as that colour
        mine = [
            i for i in images if (i["model"], i["role"], i["concept"]) == (row["model"], row["role"], row["concept"])
        ]
        asked = [i["read_colour"] in i["prompt"].split() for i in mine]
        assert mine and row["colour_accuracy"] == pytest.approx(sum(asked) / len(asked), abs=1e-4), row
    replaced = {(r["model"], r["role"]): r for r in metrics["tables"]["replacement"]}
    erased = replaced[("to-ring", "erased")]
    assert (
        max(erased["judged_as"], key=erased["judged_as"].get) == "ring"
        and max(erased["shape_read"], key=erased["shape_read"].get) == "ring"
    )
    assert sum(erased["colour_read"].values()) == pytest.approx(1.0, abs=1e-3) and set(erased["style_read"]) <= {
        "plain",
        "striped",
    }
    assert replaced[("base", "erased")]["judged_as"] == {"circle": 1.0}


def test_report_html_is_one_self_contained_file(uce_runs, tmp_path):
    import re

    out = tmp_path / "ev"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_runs["two-kept"]),
            "--n-per-prompt",
            "1",
            "--steps",
            "10",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<table>") >= 5
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2  # the distance plot and the thumbnails
    assert not re.search(r'(src|href)="(https?:|//|[^"d#])', page)  # nothing outside the file
    assert (
        "held-out" in page
        and "two-kept" in page
        and "&quot;method&quot;: &quot;uce&quot;" in page
        and "diffusers" in page
    )


def test_ablation_filters_no_anchor_image_with_the_judge_by_default_and_evaluate_flags_one_that_does(tmp_path):
    """Independent judging: the world's default ablation uses no judge; an opt-in filter is recorded
    and evaluate warns when it is the judge that scores the erasure."""
    runs = {}
    for name, extra in (("plain", []), ("filtered", ["--filter-anchor-images"])):
        out = tmp_path / name
        result = runner.invoke(
            app,
            [
                "erase",
                "--concept",
                "circle",
                "--method",
                "ablate",
                "--anchor",
                "shape",
                "--steps",
                "2",
                "--anchor-images",
                "8",
                "--out",
                str(out),
                "--json",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        runs[name] = (json.loads(result.stdout), out / "erased.safetensors")
    assert runs["plain"][0]["config"]["filter_anchor_images"] is False and "anchor_filter" not in runs["plain"][0]
    assert runs["filtered"][0]["anchor_filter"] == "embedded:shapes-judge"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(runs["plain"][1]),
            "--checkpoint",
            str(runs["filtered"][1]),
            "--n-per-prompt",
            "1",
            "--steps",
            "10",
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["judging"] == {
        "judge": "embedded:shapes-judge",
        "erasure_filters": {"plain": None, "filtered": "embedded:shapes-judge"},
    }
    assert [w.split(":")[0] for w in metrics["warnings"] if "not independent" in w] == ["filtered"]


def test_image_drift_and_distribution_distance_see_what_the_class_does_not(uce_runs, tmp_path):
    """Same prompt, same seed: the erased concept's pictures move far, the preserved ones barely;
    FID/KID are given over the held-out surroundings and over --general-prompts."""
    general = tmp_path / "captions.csv"
    general.write_text("id,caption\n1,a green ring\n2,a yellow square\n")
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_runs["two-kept"]),
            "--n-per-prompt",
            "2",
            "--steps",
            "10",
            "--general-prompts",
            str(general),
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    jsonschema.validate(metrics, SCHEMA)
    rows = {r["concept"]: r for r in metrics["tables"]["per_concept"] if r["model"] == "two-kept"}
    assert rows["circle"]["judge_distance"] > 3 * rows["square"]["judge_distance"]
    assert rows["circle"]["ssim"] < rows["square"]["ssim"] <= 1
    assert all("judge_distance" not in r for r in metrics["tables"]["per_concept"] if r["model"] == "base")
    headline = {r["model"]: r for r in metrics["tables"]["erased_vs_surrounding"]}["two-kept"]
    assert headline["held_out_judge_distance"] == pytest.approx(
        (rows["cross"]["judge_distance"] + rows["ring"]["judge_distance"]) / 2, abs=1e-4
    )
    over = {r["over"]: r for r in metrics["tables"]["distribution"]}
    assert set(over) == {"held-out surroundings", "general prompts"}
    assert over["held-out surroundings"]["n"] == 2 * 4 * 2 and over["general prompts"]["n"] == 2 * 2
    assert over["held-out surroundings"]["fid"] > 0 and metrics["general_prompts"] == 2
    assert (
        "FID and KID" in (tmp_path / "ev" / "report.md").read_text()
        and "ssim" in (tmp_path / "ev" / "report.html").read_text()
    )


def test_drift_measures_are_zero_for_the_same_pictures(embedded_pipeline, world_judge):
    from erasectl.evaluation.drift import distribution_distances, feature_distances, ssim_pairs
    from erasectl.generation import SamplerSettings, generate

    items = generate(
        embedded_pipeline, ["a red circle", "a blue square"], [0, 1, 2, 3], SamplerSettings(steps=10, batch_size=8)
    )
    images = [item.image for item in items]
    embeds = world_judge.embed_images(images)
    assert ssim_pairs(images, images) == pytest.approx([1.0] * 8)
    assert feature_distances(embeds, embeds) == pytest.approx([0.0] * 8, abs=1e-5)
    assert distribution_distances(embeds, embeds)["fid"] == pytest.approx(0.0, abs=1e-3)
    circles, squares = embeds[:4], embeds[4:]
    assert distribution_distances(circles, squares)["fid"] > 0.05
    assert min(ssim_pairs(images[:4], images[4:])) < 0.9
