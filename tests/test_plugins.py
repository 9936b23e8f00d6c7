"""A method from another package: docs/adding-a-method.md's example, installed with pip exactly as the
page writes it, registers through the entry-point group and works like a built-in method."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding-a-method.md"


def _block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, f"{DOC} must hold exactly one ```{language} block, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment in which the page's package is installed (pip, into a target folder)."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "erasectl-redirect"
    package.mkdir()
    (package / "erasectl_redirect.py").write_text(_block("python"))
    (package / "pyproject.toml").write_text(_block("toml"))
    site = root / "site"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(site),
        str(package),
    ]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return env, root


def _erasectl(env, *args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "erasectl", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_the_documented_plugin_is_listed_with_its_settings(plugin_env):
    env, root = plugin_env
    helped = _erasectl(env, "erase", "--help", cwd=root)
    assert helped.returncode == 0 and "--strength" in helped.stdout and "redirect" in helped.stdout, helped.stdout
    shown = _erasectl(env, "defaults", "--method", "redirect", "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    defaults = json.loads(shown.stdout)["defaults"]["redirect"]
    assert defaults["strength"] == {"value": 10.0, "source": "erasectl-redirect"} and defaults["steps"]["value"] == 1


def test_the_documented_plugin_erases_and_its_checkpoint_is_evaluated_and_exported(plugin_env):
    env, root = plugin_env
    out = root / "runs" / "circle-redirect"
    erased = _erasectl(
        env,
        "erase",
        "--concept",
        "circle",
        "--method",
        "redirect",
        "--anchor",
        "square",
        "--out",
        str(out),
        "--json",
        cwd=root,
    )
    assert erased.returncode == 0, erased.stderr
    recipe = json.loads(erased.stdout)
    assert recipe["method"] == "redirect" and recipe["config"]["strength"] == 10.0 and recipe["guide"] == "square"
    assert recipe["changed_tensors"] == 14 and recipe["preserve_source"] == "default: words"
    bad = _erasectl(
        env,
        "erase",
        "--concept",
        "circle",
        "--method",
        "redirect",
        "--strength",
        "0",
        "--out",
        str(root / "bad"),
        cwd=root,
    )
    assert bad.returncode == 2 and "strength must be positive" in bad.stderr and not (root / "bad").exists()
    evaluated = _erasectl(
        env,
        "evaluate",
        "--checkpoint",
        str(out),
        "--n-per-prompt",
        "2",
        "--steps",
        "10",
        "--out",
        str(root / "ev"),
        "--json",
        cwd=root,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    rows = {row["model"] == "base": row for row in json.loads(evaluated.stdout)["tables"]["erased_vs_surrounding"]}
    base, after = rows[True]["erased_accuracy"], rows[False]["erased_accuracy"]
    assert after <= base - 0.5, f"circle still judged a circle: {after:.2f} after, {base:.2f} before"
    exported = _erasectl(
        env, "export", str(out), "--format", "diffusers", "--out", str(root / "exported"), "--json", cwd=root
    )
    assert exported.returncode == 0, exported.stderr
