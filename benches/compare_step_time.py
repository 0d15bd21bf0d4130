#!/usr/bin/env python3
"""Step time of two `strata` binaries side by side, on the same machine in one run.

    python3 benches/compare_step_time.py OLD_BINARY NEW_BINARY [--reps 3] [--steps 300]

Run from the workspace root. For each repetition and config, both binaries train the config
for --steps steps on the CPU (no evaluation until the end), alternating which goes first;
the step time is read from metrics.jsonl between step 50 and the last step, so start-up,
data preparation and the final evaluation are not counted. Prints every run, the medians
and the paired ratios new/old. Build an older commit's binary in a git worktree with its
own target directory (a shared one mixes the two trees' crates, which have the same names).
"""

import argparse
import json
import math
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

CONFIGS = ["configs/nanogpt-cpu.toml", "configs/denseformer-cpu.toml"]


def step_ms(binary, config, steps, folder):
    """Milliseconds per step of one run, between step 50 and the last."""
    shutil.rmtree(folder, ignore_errors=True)
    overrides = {
        "train.max_iters": steps,
        "train.lr_decay_iters": steps,
        "train.eval_interval": 10 * steps,
        "train.log_interval": 50,
        "train.device": '"cpu"',
    }
    command = [binary, "train", "--config", config, "--out", str(folder), "--quiet"]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    elapsed = {r["step"]: r["elapsed_s"] for r in records if r["kind"] == "train"}
    return (elapsed[steps] - elapsed[50]) / (steps - 50) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    binaries = [("old", args.old), ("new", args.new)]
    times = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "run"
        for rep in range(args.reps):
            for config in CONFIGS:
                order = binaries if rep % 2 == 0 else binaries[::-1]
                for name, binary in order:
                    ms = step_ms(binary, config, args.steps, folder)
                    times.setdefault((config, name), []).append(ms)
                    print(f"{config} {name} rep {rep + 1}: {ms:.1f} ms/step", flush=True)
    for config in CONFIGS:
        old, new = times[(config, "old")], times[(config, "new")]
        logs = [math.log(n / o) for n, o in zip(new, old)]
        mean = statistics.mean(logs)
        print(
            f"{config}: old median {statistics.median(old):.1f} ms, new median "
            f"{statistics.median(new):.1f} ms; paired ratios new/old "
            f"{', '.join(f'{math.exp(x):.3f}' for x in logs)}; geometric mean {math.exp(mean):.3f}"
            + (f" (log s.d. {statistics.stdev(logs):.3f})" if len(logs) > 1 else "")
        )


if __name__ == "__main__":
    main()
