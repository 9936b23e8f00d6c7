"""What an evaluate run was, so that another can be compared with it: the judge's identity, the
model's and checkpoints' hashes, versions, seeds and the prompts' hash; and ``--against``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from erasectl.checkpoint import checkpoint_file
from erasectl.errors import UserError
from erasectl.evaluation.protocol import HEADLINE_RATES
from erasectl.provenance import file_sha256, pipeline_modules, versions, weights_sha256
from erasectl.statistics import half_width


def prompts_sha256(protocol, general_prompts: list[str] | None = None) -> str:
    """The hash of every prompt drawn and of the classes the judge chooses among."""
    sets = [[s.role, s.concept, s.label, s.prompts] for s in protocol.prompt_sets()] if protocol is not None else []
    found = {
        "sets": sets,
        "general": list(general_prompts or []),
        "candidates": getattr(protocol, "candidates", []),
        "judge_template": getattr(protocol, "judge_template", None),
    }
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def build_manifest(models, judge_identity: dict, prompts_hash: str) -> dict:
    """``models``: evaluate's ``(name, load, info)``, the base first (loaded here without any checkpoint)."""
    _, load_base, base_info = models[0]
    return {
        "judge": judge_identity,
        "base_model": {"name": base_info["model"], "weights_sha256": weights_sha256(pipeline_modules(load_base()))},
        "checkpoints": {
            info["checkpoint"]: file_sha256(checkpoint_file(info["checkpoint"])) for _, _, info in models[1:]
        },
        "versions": versions(),
        "prompts_sha256": prompts_hash,
    }


def read_earlier(path: Path) -> dict:
    """An earlier run's metrics.json (or its folder), refused in one line where it cannot be compared."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    try:
        earlier = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"--against {path}: cannot read it as metrics.json ({error})") from None
    if "manifest" not in earlier:
        raise UserError(f"--against {path}: it has no manifest (made before erasectl 0.3); evaluate it again")
    return earlier


def check_same_judge(identity: dict, earlier: dict, path) -> None:
    judged_by = earlier["manifest"]["judge"]
    if judged_by != identity:
        raise UserError(
            f"--against {path}: it was judged by {_named(judged_by)}, this run by {_named(identity)}; "
            "figures from different judges cannot be compared: evaluate both with the same --judge"
        )


def _named(identity: dict) -> str:
    weights = identity.get("weights_sha256")
    short = weights[:12] if isinstance(weights, str) else identity.get("version", "?")
    return f"{identity.get('name')} ({short})"


def compare_runs(metrics: dict, earlier: dict, path) -> dict:
    """Each headline rate of each model both runs measured: the change, and whether the two 95%
    intervals overlap (if not, the change is more than another draw of seeds explains)."""
    before = {row["model"]: row for row in earlier["tables"]["erased_vs_surrounding"]}
    rows = []
    for row in metrics["tables"]["erased_vs_surrounding"]:
        old = before.get(row["model"])
        for rate in HEADLINE_RATES:
            if old is None or row.get(rate) is None or old.get(rate) is None:
                continue
            now, then = row.get(f"{rate}_interval95"), old.get(f"{rate}_interval95")
            overlap = None if now is None or then is None else bool(now[0] <= then[1] and then[0] <= now[1])
            rows.append({
                "model": row["model"], "rate": rate, "before": old[rate], "now": row[rate],
                "change": round(row[rate] - old[rate], 4), "before_interval95": then, "now_interval95": now,
                "intervals_overlap": overlap, "now_half_width": half_width(row[rate], now),
            })  # fmt: skip
    same = {
        "checkpoints": earlier["manifest"]["checkpoints"] == metrics["manifest"]["checkpoints"],
        "base_model": earlier["manifest"]["base_model"] == metrics["manifest"]["base_model"],
        "prompts": earlier["manifest"]["prompts_sha256"] == metrics["manifest"]["prompts_sha256"],
        "seeds": earlier.get("seeds") == metrics.get("seeds"),
    }
    return {"file": str(path), "same": same, "rows": rows}
