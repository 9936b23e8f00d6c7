"""Memory of `erasectl generate` with a huge --n: it must not grow with the images drawn.

    python benchmarks/generate_memory.py [--seconds 90] [--json FILE]

Starts `generate --n 100000000` on the embedded model, samples the process's resident memory every
second, stops it with Ctrl-C (SIGINT) after --seconds and checks that every image it wrote is listed.
Prints the memory after the first images and at the end, and the images written.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from erasectl.provenance import versions

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "many"
        command = [
            sys.executable,
            "-m",
            "erasectl",
            "generate",
            "--prompts",
            "a red circle,a blue ring",
            "--n",
            "100000000",
            "--steps",
            "10",
            "--out",
            str(out),
            "--quiet",
        ]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        started, samples = time.time(), []
        while time.time() - started < args.seconds:
            time.sleep(1)
            samples.append(
                (round(time.time() - started, 1), round(rss_mb(process.pid), 1), len(list(out.glob("0*.png"))))
            )
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
        listed = list(csv.DictReader((out / "images.csv").open()))
        first = next(s for s in samples if s[2] > 0)
        result = {
            "exit_code": process.returncode,
            "images_written": len(listed),
            "all_listed_exist": all((out / row["file"]).is_file() for row in listed),
            "rss_mb_at_first_images": first[1],
            "rss_mb_at_end": samples[-1][1],
            "rss_mb_peak": max(s[1] for s in samples),
            "growth_mb_after_first_images": round(max(s[1] for s in samples if s[0] >= first[0]) - first[1], 1),
            "seconds": args.seconds,
            "stderr": stderr.strip().splitlines()[-1:],
            "versions": versions(),
        }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
