#!/usr/bin/env python3
"""Print the median time of every criterion benchmark under target/criterion.

Usage: scripts/criterion_medians.py [CRITERION_DIR] [--json]

Criterion's own summary line shows a mean; docs/benchmarks.md quotes medians, read
here from each benchmark's `new/sample.json` (per-iteration time of every sample) so the
number is the plain median of the ten samples, not a bootstrap estimate.
"""
import json
import os
import statistics
import sys


def medians(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "sample.json" not in files:
            continue
        with open(os.path.join(dirpath, "sample.json")) as f:
            s = json.load(f)
        per_iter = [t / n for t, n in zip(s["times"], s["iters"])]  # nanoseconds
        bench_id = os.path.relpath(os.path.dirname(dirpath), root)
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench_id = json.load(f).get("full_id", bench_id)
        out[bench_id] = {
            "median_s": statistics.median(per_iter) * 1e-9,
            "min_s": min(per_iter) * 1e-9,
            "samples": len(per_iter),
            "mtime": os.path.getmtime(os.path.join(dirpath, "sample.json")),
        }
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else os.path.join("target", "criterion")
    m = medians(root)
    if "--json" in sys.argv:
        print(json.dumps(m, indent=1, sort_keys=True))
        return
    for k in sorted(m):
        v = m[k]
        print(f"{k:45s} median {v['median_s']:10.5f} s   min {v['min_s']:10.5f} s   ({v['samples']} samples)")


if __name__ == "__main__":
    main()
