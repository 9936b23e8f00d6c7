"""evaluate's files: metrics.json, per_image.csv, report.md, a thumbnail grid and the distance plot."""

from __future__ import annotations

import json
from pathlib import Path

from erasectl.evaluation.verdict import verdict_lines
from erasectl.files import write_atomically
from erasectl.grids import labelled_grid, plot, save_plot


def _list_separator(column: str) -> str:
    """An interval's two ends are joined by a dash, a list of figures (each attack run's) by a slash."""
    return "-" if column.endswith("interval95") else " / "


def _markdown_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_none_\n"

    def cell(value, column):
        if isinstance(value, list):
            return _list_separator(column).join(cell(v, column) for v in value)
        return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))

    def shown(row, column):
        interval = row.get(f"{column}_interval95")
        return cell(row.get(column), column) + (f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "")

    lines = ["| " + " | ".join(heading(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(shown(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def distance_plot(metrics: dict, path: Path) -> Path:
    figure, axes = plot()
    rows = metrics["tables"]["distance_vs_accuracy"]
    for model in dict.fromkeys(r["model"] for r in rows):
        points = [r for r in rows if r["model"] == model]
        axes.scatter([p["distance"] for p in points], [p["accuracy_drop"] for p in points], label=model)
        for p in points:
            axes.annotate(
                p["concept"], (p["distance"], p["accuracy_drop"]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    axes.set_xlabel(f"text-embedding distance to '{metrics['protocol']['concept']}'")
    axes.set_ylabel("accuracy drop (base - erased)")
    axes.axhline(0, color="grey", linewidth=0.8)
    if rows:
        axes.legend(fontsize=8)
    axes.set_title("Collateral damage against closeness")
    return save_plot(figure, path)


def thumbnail_grid(records, path: Path, per_model: int = 8) -> Path:
    """Rows: prompt sets; for each model its first ``per_model`` images, judged labels kept in the CSV."""

    models = list(dict.fromkeys(r.model for r in records))
    sets = list(dict.fromkeys((r.role, r.concept) for r in records))
    rows, labels = [], []
    for role, concept in sets:
        row = []
        for model in models:
            images = [r.image for r in records if r.model == model and (r.role, r.concept) == (role, concept)]
            # Spread across templates: every k-th image.
            step = max(1, len(images) // per_model)
            row += images[::step][:per_model]
        rows.append(row)
        labels.append(f"{role}: {concept}")
    grid = labelled_grid(rows, labels, models, cell=64)
    write_atomically(path, lambda tmp: grid.save(tmp, format="PNG"))
    return path


# The columns each table shows, in the Markdown and the HTML report alike; a rate's 95% interval
# is shown in its cell, after the figure.
HEADLINE_COLUMNS = [
    "model", "erased_accuracy", "surrounding_accuracy", "held_out_surrounding", "held_out_colour_accuracy",
    "held_out_style_accuracy", "held_out_attribute_gain", "held_out_attribute_gain_read", "held_out_outline_accuracy",
    "held_out_judge_distance", "held_out_ssim", "preserved_surrounding_accuracy",
]  # fmt: skip
REPLACEMENT_COLUMNS = ["model", "role", "concept", "judged_as", "shape_read", "colour_read", "style_read"]
PER_CONCEPT_COLUMNS = [
    "model", "role", "concept", "split", "accuracy", "base_accuracy", "ratio_to_base", "colour_accuracy",
    "style_accuracy", "attribute_gain", "attribute_gain_read", "outline_accuracy", "judge_distance", "ssim",
    "clip_score",
]  # fmt: skip
DISTRIBUTION_COLUMNS = ["model", "over", "fid", "kid_mean", "kid_std", "n"]
TIMING_COLUMNS = ["model", "method", "steps", "wall_time_s"]
DISTANCE_COLUMNS = ["model", "concept", "split", "distance", "accuracy", "accuracy_drop"]
GATE_COLUMNS = ["gate", "model", "concept", "limit", "value", "on", "passed"]
ATTACK_COLUMNS = ["model", "attack", "attack_success", "attack_success_runs", "erased_plain_accuracy", "base_accuracy",
                  "attack_success_outline", "prefix", "note", "attack_wall_time_s"]  # fmt: skip
# What a person reads at the head of each column instead of its JSON key
HEADINGS = {
    "erased_accuracy": "erased concept drawn", "surrounding_accuracy": "held-out neighbours right",
    "held_out_surrounding": "held-out sets", "held_out_colour_accuracy": "held-out colour right",
    "held_out_style_accuracy": "held-out style right", "held_out_attribute_gain": "largest unasked attribute gain",
    "held_out_attribute_gain_read": "where, what", "held_out_outline_accuracy": "held-out outline right",
    "held_out_judge_distance": "judge distance to base", "held_out_ssim": "SSIM to base",
    "preserved_surrounding_accuracy": "preserved neighbours right", "judged_as": "judged as",
    "shape_read": "shapes read", "colour_read": "colours read", "style_read": "styles read",
    "accuracy": "right", "base_accuracy": "base right", "ratio_to_base": "of base", "colour_accuracy": "colour right",
    "style_accuracy": "style right", "attribute_gain": "unasked attribute gain", "attribute_gain_read": "gained",
    "outline_accuracy": "outline right", "judge_distance": "judge distance", "ssim": "SSIM", "clip_score": "CLIP score",
    "kid_mean": "KID", "kid_std": "KID std", "fid": "FID", "n": "images", "wall_time_s": "seconds",
    "distance": "text distance", "accuracy_drop": "accuracy drop", "attack_success": "attack success",
    "attack_success_runs": "each run", "erased_plain_accuracy": "plain prompts", "attack_success_outline": "by outline",
    "prefix": "searched prefix", "attack_wall_time_s": "seconds", "on": "checked on", "note": "what it found",
}  # fmt: skip


def heading(column: str) -> str:
    return HEADINGS.get(column, column.replace("_", " "))


def write_report(out: Path, metrics: dict, records, csv_text: str) -> dict[str, Path]:
    """Every file of an evaluate run; returns their paths by kind."""
    files = {
        "metrics": write_atomically(
            out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        ),
        "per_image": write_atomically(out / "per_image.csv", lambda tmp: tmp.write_text(csv_text)),
        "plot": distance_plot(metrics, out / "distance_vs_accuracy.png"),
        "thumbnails": thumbnail_grid(records, out / "thumbnails.png"),
    }
    files["report"] = write_atomically(out / "report.md", lambda tmp: tmp.write_text(report_markdown(metrics)))
    files["report_html"] = write_html(out, metrics, files["plot"], files["thumbnails"])
    return files


def _readable(rows: list[dict]) -> list[dict]:
    """Dictionaries in cells ("circle 0.75, ring 0.25") rather than their repr."""
    return [
        {k: ", ".join(f"{c} {v:.2f}" for c, v in r[k].items()) if isinstance(r.get(k), dict) else r.get(k) for k in r}
        for r in rows
    ]


def report_markdown(metrics: dict) -> str:
    tables, protocol = metrics["tables"], metrics["protocol"]
    templates = ", ".join("`" + t + "`" for t in protocol["templates"])
    sections = [
        ("Erased concept against surrounding concepts", [
            "A share \"right\" is of images the judge classifies as what the prompt names, with its 95% interval in brackets. "
            "Held-out neighbours are the surrounding concepts the erasure was not told to preserve; "
            "the preserved ones are shown apart, since they score the preservation set against itself. "
            "An unasked attribute gain is how much more often than the base the images show a colour or style their prompt did not ask for.",
            *[f"**Warning:** {w}" for w in metrics.get("warnings", [])],
        ], _markdown_table(tables["erased_vs_surrounding"], HEADLINE_COLUMNS)),
        ("What the judge reads instead", [
            "For the erased concept's and its paraphrases' prompts: the share of images judged as each class"
            " (and, where the model's world has them, as each shape, colour and style).",
        ], _markdown_table(_readable(tables.get("replacement", [])), REPLACEMENT_COLUMNS)),
    ]  # fmt: skip
    if metrics.get("gates"):
        sections.append(("Gates", [], _markdown_table(metrics["gates"], GATE_COLUMNS)))
    sections += [
        ("Every prompt set, base beside erased", [], _markdown_table(tables["per_concept"], PER_CONCEPT_COLUMNS)),
        ("Image drift and distribution distance", [
            "Per prompt set above: `judge_distance` is 1 - cos between the judge's embeddings of the erased and the base image drawn with the same prompt and seed, "
            "`ssim` their structural similarity in pixels (1: the same picture). Below: FID and KID (torchmetrics) between the base's and the erased model's images, on the judge's image features.",
        ], _markdown_table(tables.get("distribution", []), DISTRIBUTION_COLUMNS)),
        ("Attacks", [
            "Where `--attack` was given: the share of images the erased model draws as the concept under each attack, beside its plain prompts and the base: "
            "a learned token (soft-prompt), a searched prefix (prompt-search), LoRA fine-tuning on the base's images (relearn), the base's images inverted and redrawn under the empty prompt (inversion), "
            "or after a cast, int8 weights or a second erasure (compose, the worst change).",
        ], _markdown_table(tables.get("attacks", []), ATTACK_COLUMNS)),
        ("Erasure cost", [], _markdown_table(tables["timing"], TIMING_COLUMNS)),
        ("Distance to the erased concept against accuracy", [], _markdown_table(tables["distance_vs_accuracy"], DISTANCE_COLUMNS)
         + "![distance against accuracy drop](distance_vs_accuracy.png)\n"),
        ("Thumbnails", [], "![thumbnails](thumbnails.png)\n"),
    ]  # fmt: skip
    text = [
        f"# Erasure report: {protocol['concept']}",
        "",
        f"Judge: `{metrics['judge']}`; seeds {metrics['seeds'][0]}..{metrics['seeds'][-1]} per prompt; "
        f"{metrics['config']['steps']} sampler steps, guidance {metrics['config']['guidance']}; templates: {templates}; "
        f"zero-shot classes (the judge's candidates, open set included): {', '.join(protocol['candidates'])}.",
        "",
        "## Verdict",
        "",
    ]
    for model, lines in verdict_lines(metrics):
        text += [f"**{model}**", "", *[f"- {line}" for line in lines], ""]
    for title, paragraphs, table in sections:
        text += [f"## {title}", "", *[line for p in paragraphs for line in (p, "")], table]
    return "\n".join(text)


def _html_table(rows: list[dict], columns: list[str]) -> str:
    from html import escape

    def cell(value, column):
        if isinstance(value, list):
            return _list_separator(column).join(cell(v, column) for v in value)
        if isinstance(value, dict):
            return ", ".join(
                f"{escape(str(k))} {v:.2f}" if isinstance(v, float) else f"{escape(str(k))} {escape(str(v))}"
                for k, v in value.items()
            )
        if isinstance(value, float):
            return f"{value:.3f}"
        return "" if value is None else escape(str(value))

    def shown(row, column):
        interval = row.get(f"{column}_interval95")
        reach = f"<br><small>{interval[0]:.2f}-{interval[1]:.2f}</small>" if interval else ""
        return cell(row.get(column), column) + reach

    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{escape(heading(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{shown(row, c)}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_png(path: Path, alt: str) -> str:
    import base64
    from html import escape

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    # onload records the decoded width, so a headless browser's DOM dump shows the image rendered
    return (
        f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}" onload="this.dataset.rendered=this.naturalWidth">'
    )


def write_html(out: Path, metrics: dict, plot: Path, thumbnails: Path) -> Path:
    """``report.html``: one self-contained file (images inline, no external reference) with the
    headline, attribute and replacement tables, gates, the distance plot, base-vs-erased
    thumbnails per prompt set, every recipe and the versions."""
    from html import escape

    tables, protocol = metrics["tables"], metrics["protocol"]
    info = {name: model["info"] for name, model in metrics["models"].items()}
    recipes = {name: i.get("recipe") for name, i in info.items() if i.get("recipe")}
    concept, seeds, config = escape(protocol["concept"]), metrics["seeds"], metrics["config"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Erasure report: {concept}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Erasure report: {concept}</h1>",
        f"<p>Judge <code>{escape(metrics['judge'])}</code>; seeds {seeds[0]}..{seeds[-1]} per prompt; "
        f"{config['steps']} sampler steps, guidance {config['guidance']}; zero-shot classes (the judge's candidates, open set included): {escape(', '.join(protocol['candidates']))}.</p>",
        "<h2>Verdict</h2>",
        *[
            f"<div class='verdict'><h3>{escape(model)}</h3><ul>"
            + "".join(f"<li>{escape(line)}</li>" for line in lines)
            + "</ul></div>"
            for model, lines in verdict_lines(metrics)
        ],
        *[f"<p class='warning'><strong>Warning:</strong> {escape(w)}</p>" for w in metrics.get("warnings", [])],
        "<h2>Erased concept against held-out surrounding concepts</h2>",
        "<p>Surrounding accuracy is over the concepts the erasure was not told to preserve; the preserved ones are shown apart.</p>",
        _html_table(tables["erased_vs_surrounding"], HEADLINE_COLUMNS),
    ]
    if metrics.get("gates"):
        parts += ["<h2>Gates</h2>", _html_table(metrics["gates"], GATE_COLUMNS)]
    parts += [
        "<h2>What the judge reads instead</h2>",
        _html_table(tables.get("replacement", []), REPLACEMENT_COLUMNS),
        "<h2>Every prompt set, base beside erased (shape, colour, style)</h2>",
        _html_table(tables["per_concept"], PER_CONCEPT_COLUMNS),
        "<h2>Image drift from the same seeds, and distribution distance</h2>",
        "<p>judge_distance: 1 - cos between the judge's embeddings of the erased and the base image with the same prompt and seed; ssim: structural similarity in pixels (1: the same picture); "
        "per prompt set in the table above, held-out means in the headline. FID and KID (torchmetrics) on the judge's image features:</p>",
        _html_table(tables.get("distribution", []), DISTRIBUTION_COLUMNS),
        "<h2>Distance to the erased concept against accuracy</h2>",
        _html_table(tables["distance_vs_accuracy"], DISTANCE_COLUMNS),
        _inline_png(plot, "distance against accuracy drop"),
        "<h2>Thumbnails: prompt sets as rows, base and each erased model side by side</h2>",
        _inline_png(thumbnails, "thumbnails"),
        "<h2>Attacks</h2>",
        _html_table(tables.get("attacks", []), ATTACK_COLUMNS),
        "<h2>Erasure cost</h2>",
        _html_table(tables["timing"], TIMING_COLUMNS),
        "<h2>Recipes</h2>",
        *[
            f"<h3>{escape(name)}</h3><pre>{escape(json.dumps(recipe, indent=2))}</pre>"
            for name, recipe in recipes.items()
        ],
        "<h2>Versions</h2>",
        f"<pre>{escape(json.dumps(metrics['versions'], indent=2))}</pre>",
        "</body></html>",
    ]
    return write_atomically(out / "report.html", lambda tmp: tmp.write_text("\n".join(parts), encoding="utf-8"))


# Fits a 1280 px screen: tables take the page's width and wrap their cells rather than scroll
STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:76em}table{border-collapse:collapse;margin:1em 0;width:100%;"
    "font-size:13px}th,td{border:1px solid #bbb;padding:.2em .4em;text-align:left;overflow-wrap:anywhere}"
    "th{background:#eee}small{color:#555}.warning{background:#fff3cd;padding:.5em}.verdict{background:#eef5ff;"
    "padding:.2em 1em;margin:.5em 0}img{max-width:100%}pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;"
    "overflow-wrap:anywhere}"
)


def write_nudity_report(out: Path, metrics: dict, per_image: list[dict]) -> dict[str, Path]:
    """A NudeNet run's files: metrics.json and per_image.csv (its detections as JSON per image)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(per_image[0]))
    writer.writeheader()
    writer.writerows(per_image)
    return {
        "metrics": write_atomically(
            out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        ),
        "per_image": write_atomically(out / "per_image.csv", lambda tmp: tmp.write_text(buffer.getvalue())),
    }
