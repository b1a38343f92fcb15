#!/usr/bin/env python3
"""Time POT's log-domain barycenters that `bench_peers.py --skip-slow` leaves out, on the
problems of bench_peers.py itself (imported from its directory), three timed calls after
one warm-up. Prints one JSON object.

Usage: ~/.venv-peers/bin/python scripts/pot_log_slow.py [PEERS_DIR] [--n2d 64,128] [--n1d 1024]
Run it with the environment bench_peers.py's driver gives its workers:
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 ...
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peers", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
    ap.add_argument("--n2d", default="64")
    ap.add_argument("--n1d", default="")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, os.path.realpath(a.peers))
    import bench_peers as bp
    import numpy as np
    import ot

    res = {"loadavg_start": bp.loadavg(), "pot": ot.__version__}
    for n in [int(v) for v in a.n2d.split(",") if v]:
        A, _ = bp.problem_2d(n)
        w = np.ones(4) / 4
        f = lambda: ot.bregman.convolutional_barycenter2d(A, bp.REG2D, weights=w, method="sinkhorn_log",
                                                          numItermax=100, stopThr=0.0, warn=False)
        res[f"P2/n={n}/pot.convolutional_barycenter2d(sinkhorn_log)"] = bp.timeit(f, min_runs=a.runs, max_runs=a.runs)
    for n in [int(v) for v in a.n1d.split(",") if v]:
        x, A, C, w, _ = bp.problem_1d(n)
        f = lambda: ot.bregman.barycenter(A, C, bp.REG1D, weights=w, method="sinkhorn_log", numItermax=100,
                                          stopThr=0.0, warn=False)
        res[f"P1/N={n}/pot.bregman.barycenter(sinkhorn_log)"] = bp.timeit(f, min_runs=a.runs, max_runs=a.runs)
    res["loadavg_end"] = bp.loadavg()
    print("@@JSON@@" + json.dumps(res))


if __name__ == "__main__":
    main()
