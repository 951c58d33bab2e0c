"""Start-up costs a user feels on every command (foundation targets).

* ``halluguard --help``: must answer in under 2 s (no heavy imports at CLI start).
* Second load of the embedded policy (cached safetensors, fresh process): under 5 s.
* ``halluguard build --cfg job`` (Hydra composition + schema check, no model).

Each figure is the median of several fresh processes after one warm-up run.
Usage: python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "halluguard"
LOAD_SNIPPET = """
import time; t = time.perf_counter()
from pathlib import Path
from omegaconf import OmegaConf
from halluguard.config import ModelConfig, resolve_cache_dir, RootConfig
from halluguard.models import load_policy
cfg = OmegaConf.structured(RootConfig)
load_policy(cfg.model, resolve_cache_dir(cfg))
print(time.perf_counter() - t)
"""


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def median_of(fn, repeats: int) -> float:
    fn()  # warm-up (page cache, first-run costs)
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {
        "help_s": median_of(lambda: timed([str(BIN), "--help"]), args.repeats),
        "cfg_job_s": median_of(lambda: timed([str(BIN), "build", "--cfg", "job"]), args.repeats),
        # total process time, and the part inside Python (imports + load) the snippet measures itself
        "policy_second_load_process_s": median_of(lambda: timed([sys.executable, "-c", LOAD_SNIPPET]), 3),
    }
    results["policy_second_load_in_python_s"] = statistics.median(
        float(subprocess.run([sys.executable, "-c", LOAD_SNIPPET], check=True, capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]) for _ in range(3))
    targets = {"help_s": 2.0, "policy_second_load_process_s": 5.0}
    print(f"{'measure':<34}{'median s':>10}{'target':>10}")
    for key, value in results.items():
        target = targets.get(key)
        flag = "" if target is None else ("  ok" if value < target else "  MISSED")
        print(f"{key:<34}{value:>10.2f}{(f'< {target:.0f}' if target else ''):>10}{flag}")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
