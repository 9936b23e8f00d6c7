"""docs/held-out.md's tables, written from benchmarks/results-held_out.json (no figure typed by hand).

"by outline": the held-out shapes as the shapes world's outline reader reads them (``-`` where the
concept's results predate it, or the concept is a style); a set's cell adds ``[outline X]`` where
that reader differs from the judge by 10 points or more.

    python benchmarks/held_out_tables.py [benchmarks/results-held_out.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.0f}%" if percent else f"{value:.2f}"


def in_prior(case: dict, concept: str) -> bool:
    """Held out from what was named, but its words are in a null-space erasure's automatic prior:
    from the result when it records it, else from the case's options (every world word is in the
    prior unless ``--prior-exclude`` names it)."""
    value = case["sets"].get(f"surrounding:{concept}", {})
    if "in_prior" in value:
        return bool(value["in_prior"])
    if not case["case"].startswith("nullspace"):
        return False
    excluded = (
        set(case["case"].split("--prior-exclude ", 1)[1].split(",")) if "--prior-exclude" in case["case"] else set()
    )
    return not set(concept.split()) & excluded


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results-held_out.json")
    results = json.loads(path.read_text())
    from erasectl.world.geometry import outlined

    for concept, group in results["concepts"].items():
        shaped = outlined(concept)  # a style's accuracy is no shape's: no outline beside it
        sets = [k for k in group["base"]["sets"]]
        names = [k.split(":", 1)[1] for k in sets]
        print(
            f"\n**{concept}** ({group['seeds_per_prompt'] if 'seeds_per_prompt' in group else results['seeds'][1] - results['seeds'][0] + 1} seeds per prompt; "
            f"p: preserved by the erasure; i: held out, but its words are in nullspace's automatic prior; unmarked: held out)\n"
        )
        print(
            "| erasure | "
            + " | ".join(names)
            + " | held-out shape | by outline | held-out colour | drift | SSIM | FID | what replaces it | time |"
        )
        print("|---|" + "---|" * (len(names) + 8))
        base = group["base"]["sets"]
        print("| base | " + " | ".join(cell(base[k]["accuracy"]) for k in sets) + " | - | - | - | - | - | - | - | - |")
        for case in group["cases"]:
            row = []
            for k in sets:
                value = case["sets"][k]
                mark = {"preserved": " p", "held-out": ""}.get(value.get("split") or "", "")
                if value.get("split") == "held-out" and in_prior(case, k.split(":", 1)[1]):
                    mark = " i"
                colour = value.get("colour_accuracy")
                style = value.get("style_accuracy")
                extra = (
                    f" ({cell(colour, True)} col" + (f", {cell(style, True)} style" if style is not None else "") + ")"
                    if colour is not None and colour < 0.95 or (style is not None and style < 0.95)
                    else ""
                )
                outline = value.get("outline_accuracy") if shaped else None
                if outline is not None and abs(outline - value["accuracy"]) >= 0.1:
                    extra += f" [outline {cell(outline)}]"
                row.append(f"{cell(value['accuracy'])}{mark}{extra}")
            h = case["headline"]
            d = case.get("distribution") or {}
            replaced = case.get("replacement") or {}
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(replaced.get("judged_as", {}).items())[:2])
            print(
                f"| {case['case']} | "
                + " | ".join(row)
                + f" | {cell(h['surrounding_accuracy'])} | {cell(h.get('held_out_outline_accuracy') if shaped else None)} | {cell(h['held_out_colour_accuracy'], True)} | "
                f"{cell(h['held_out_judge_distance'])} | {cell(h['held_out_ssim'])} | {cell(d.get('fid'))} | {top} | {case['method_wall_s']} s |"
            )


if __name__ == "__main__":
    main()
