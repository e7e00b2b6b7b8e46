"""The simulator's speed: simulated frame deliveries per second of wall time.

    python -m benchmarks.sim_speed [--seeds 0:5] [--scenarios steady,churn,swarm]

Runs each scenario once per seed (as ``python -m simulations`` does, without the second,
determinism run) and prints the frames delivered to nodes, the wall and CPU seconds, and
deliveries per wall second, per scenario and in total.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

from simulations.scenarios import SCENARIOS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0:5")
    ap.add_argument("--scenarios", default="steady,churn,swarm,compute-contention")
    args = ap.parse_args()
    a, b = (int(x) for x in args.seeds.split(":"))
    out: dict[str, dict[str, float]] = {}
    total = {"deliveries": 0.0, "wall_s": 0.0, "cpu_s": 0.0}
    for name in args.scenarios.split(","):
        frames, wall, cpu = 0, 0.0, 0.0
        for seed in range(a, b):
            w0, c0 = time.perf_counter(), time.process_time()
            sim, _, _ = SCENARIOS[name](seed)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            frames += sum(n.frames_in for n in [*sim.nodes.values(),
                                                *getattr(sim, "retired", {}).values()])
            if hasattr(sim, "close"):
                sim.close()
        out[name] = {"deliveries": frames, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "deliveries_per_s": round(frames / wall)}
        total["deliveries"] += frames
        total["wall_s"] += wall
        total["cpu_s"] += cpu
    out["total"] = {**{k: round(v, 2) for k, v in total.items()},
                    "deliveries_per_s": round(total["deliveries"] / total["wall_s"])}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
