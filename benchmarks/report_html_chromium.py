"""Render an evaluate report.html in a real headless browser and check what a person would see.

    apt-get install chromium   # Debian's package
    python benchmarks/report_html_chromium.py [--report runs/evaluate-.../report.html] [--screenshot report.png]

Without --report it erases "circle" with UCE (keeping square and triangle, so cross and ring are
held out) and evaluates it. Chromium loads the file with no network, dumps the DOM after load, and
takes a full-page screenshot; the script asserts that the tables are there, that both inline
images decoded (each <img> records its decoded width on load), that the verdict comes before the
first table, and that at 1280 px wide the page needs no sideways scrolling (a copy of the report
with one line of script records the page's scroll width after load).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found; apt-get install chromium")


def make_report(folder: Path) -> Path:
    from typer.testing import CliRunner

    from erasectl.cli import app

    runner = CliRunner()
    run = folder / "uce"
    assert (
        runner.invoke(
            app,
            [
                "erase",
                "--concept",
                "circle",
                "--method",
                "uce",
                "--preserve",
                "square,triangle",
                "--out",
                str(run),
                "--quiet",
            ],
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "erased.safetensors"), "--out", str(folder / "ev"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    return folder / "ev" / "report.html"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=Path("report-screenshot.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = args.report or make_report(Path(tmp))
        common = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ]
        dom = subprocess.run(
            [*common, "--dump-dom", report.resolve().as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
        measured = Path(tmp) / "measured.html"
        measured.write_text(report.read_text().replace("</body>", WIDTH_PROBE + "</body>"))
        wide = subprocess.run(
            [*common, "--window-size=1280,900", "--dump-dom", measured.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        subprocess.run(
            [
                *common,
                "--window-size=1400,4000",
                f"--screenshot={args.screenshot.resolve()}",
                report.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    tables = dom.count("<table>")
    rendered = [int(w) for w in re.findall(r'data-rendered="(\d+)"', dom)]
    print(f"tables: {tables}; images decoded: {len(rendered)} (widths {rendered}); screenshot: {args.screenshot}")
    assert tables >= 5, "the report's tables are missing"
    assert len(rendered) == 2 and all(w > 100 for w in rendered), "an inline image did not decode"
    assert "Warning" in dom or "held-out" in dom
    width = int(re.search(r'data-scroll-width="(\d+)"', wide).group(1))
    print(f"page width at a 1280 px window: {width} px")
    assert width <= 1280, f"the report scrolls sideways at 1280 px: it is {width} px wide"
    assert dom.index("Verdict") < dom.index("<table>"), "the verdict does not open the report"


# Records the laid-out page's width on the body, for --dump-dom to show
WIDTH_PROBE = (
    "<script>addEventListener('load',()=>{document.body.dataset.scrollWidth="
    "document.documentElement.scrollWidth})</script>"
)


if __name__ == "__main__":
    main()
