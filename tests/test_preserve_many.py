"""--preserve and several concepts at once for the trained methods, on the embedded model.

These erase for real with each method's defaults (about a minute each on 2 cores); the figures
they assert are the ones benchmarks/preservation.py and benchmarks/erase_world.py print.
"""

import json

import pytest
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.world.protocol import world_protocol
from erasectl.world.judging import shape_report

runner = CliRunner()
SEEDS = list(range(1000, 1004))


def _erase(out, *args):
    result = runner.invoke(app, ["erase", *args, "--out", str(out), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    return out / "erased.safetensors"


# Ablation's anchor keeps the concept's colour ("red shape"): with "shape" it maps red circles
# onto shapes of any colour, which --preserve of red's other shapes then fights.
@pytest.mark.parametrize("method, anchor", [("esd", []), ("ablate", ["--anchor", "red shape"])], ids=["esd", "ablate"])
def test_preserve_halves_the_worst_damage(method, anchor, tmp_path):
    concept = "red circle"
    preserve = ",".join(world_protocol(concept, None, None, None).surrounding)
    plain = _erase(tmp_path / "plain", "--concept", concept, "--method", method, *anchor)
    kept = _erase(tmp_path / "kept", "--concept", concept, "--method", method, *anchor, "--preserve", preserve)
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(plain), "--checkpoint", str(kept), "--out", str(tmp_path / "eval"), "--json"])
    assert result.exit_code == 0, result.output
    rows = {}
    for row in json.loads(result.stdout)["tables"]["per_concept"]:
        rows.setdefault(row["model"], {})[(row["role"], row["concept"])] = row["accuracy"]
    base = rows["base"]

    def damage(model):
        return {c: base[(r, c)] - acc for (r, c), acc in rows[model].items() if r == "surrounding"}

    without, with_preserve = damage("plain"), damage("kept")
    worst = max(without, key=without.get)
    assert without[worst] >= 0.25, without  # the plain erasure does hurt a neighbour
    assert max(with_preserve.values()) <= without[worst] / 2, (without, with_preserve)
    assert rows["kept"][("erased", concept)] <= 0.1


@pytest.mark.parametrize("method, anchor", [("esd", []), ("ablate", ["--anchor", "shape"])], ids=["esd", "ablate"])
def test_two_concepts_at_once(method, anchor, tmp_path, world_judge):
    path = _erase(tmp_path / "run", "--concept", "circle,triangle", "--method", method, *anchor)
    from erasectl.models import load_erased_pipeline, load_pipeline

    base = shape_report(load_pipeline(), world_judge, SEEDS)
    report = shape_report(load_erased_pipeline(path), world_judge, SEEDS)
    assert report["circle"]["accuracy"] <= 0.1 and report["triangle"]["accuracy"] <= 0.1, report
    for shape in ("square", "cross", "ring"):
        assert report[shape]["accuracy"] >= 0.8 * base[shape]["accuracy"], (shape, report[shape])
