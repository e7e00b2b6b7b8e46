"""The channel benchmark's CPU gate: this tree against a baseline commit, in the same run.

    python -m benchmarks.gate --base 17b9dd7 [--rounds 3] [--limit 1.10]

Runs ``benchmarks.channel --only p2pworld`` (a writer, a sequencer and two subscribers as
separate processes, library defaults on) with 100 publishes in flight, alternating between a
worktree of ``--base`` and this tree, ``--rounds`` times each (interleaved, so a busy moment of
the machine hits both). Prints the CPU µs per message summed over the four processes for every
run, the median of each side and their ratio; exits 1 if the ratio is above ``--limit``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_once(tree: Path, window100: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.channel", "--only", "p2pworld", "--json",
         "--window1", "200", "--window100", str(window100), "--rate-seconds", "1"],
        cwd=tree, capture_output=True, text=True, timeout=1800, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cpu_total(result: dict[str, Any]) -> float:
    c = result["cpu_us_per_msg"]
    return float(c["writer"] + sum(c["subscribers"]) + sum(
        v for k, v in c.items() if k not in {"writer", "subscribers"}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the baseline commit")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=float, default=1.10)
    ap.add_argument("--window100", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pw-gate-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            runs: dict[str, list[float]] = {"base": [], "head": []}
            rates: dict[str, list[float]] = {"base": [], "head": []}
            for r in range(args.rounds):
                order = [("base", base), ("head", ROOT)]
                for name, tree in order if r % 2 == 0 else order[::-1]:
                    res = run_once(tree, args.window100)
                    runs[name].append(cpu_total(res))
                    rates[name].append(float(res["acked_msgs_per_s"]))
                    print(f"round {r + 1} {name}: {runs[name][-1]:7.1f} µs/msg CPU over the "
                          f"four processes, {rates[name][-1]:7.0f} msgs/s acked (100 in "
                          f"flight)", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False, capture_output=True)
    mb, mh = statistics.median(runs["base"]), statistics.median(runs["head"])
    ratio = mh / mb
    print(json.dumps({"base": args.base, "base_cpu_us_per_msg": runs["base"],
                      "head_cpu_us_per_msg": runs["head"], "median_base": mb,
                      "median_head": mh, "ratio": ratio, "limit": args.limit,
                      "base_msgs_per_s": rates["base"], "head_msgs_per_s": rates["head"]}))
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
