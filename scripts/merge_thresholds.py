#!/usr/bin/env python3
"""Merges p90 threshold files of several benchmark runs into one baseline (the slowest run per
metric): wall clock and other smaller-is-better metrics take the largest p90, throughput and
MB/s the smallest. One short run's p90 moves by up to 2x on a shared VM; the slowest of three is
the baseline a later run must not fall below by more than the tolerance.

usage: merge_thresholds.py OUT_DIR RUN_DIR [RUN_DIR ...]
"""
import json
import os
import sys

LARGER_IS_BETTER = {"throughput", "MB/s"}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, runs = sys.argv[1], sys.argv[2:]
    names = sorted(set().union(*(set(os.listdir(r)) for r in runs)))
    os.makedirs(out, exist_ok=True)
    for name in names:
        merged = {}
        for r in runs:
            path = os.path.join(r, name)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                for metric, value in json.load(f).items():
                    if metric not in merged:
                        merged[metric] = value
                    elif metric in LARGER_IS_BETTER:
                        merged[metric] = min(merged[metric], value)
                    else:
                        merged[metric] = max(merged[metric], value)
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(merged, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(out, name))
    print(f"merge_thresholds.py: {len(names)} benchmarks from {len(runs)} runs into {out}")


if __name__ == "__main__":
    main()
