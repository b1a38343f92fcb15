"""Overhead of the Python binding: each P-problem of /work/shared/peers/bench_peers.py
(P1 dense barycenter, P2 2-D convolutional barycenter, P3 loss + gradient, P4 WDL
objective + gradient) timed through `wassdl` (Python), through the same core calls in
Rust (bench_rust.rs, a separate process reading the very same arrays), and through POT
where POT has the computation, in the same sitting.

The machine may be shared: the three are run in alternating rounds (Python, Rust, POT,
Python, Rust, POT, ...), each round a few calls after a warm-up, and the report gives
medians over all calls and the load average before and after.

    python python/bench/bench_binding.py [--rounds 5] [--reps 3] [--only P1,P3] [--json out.json]

Needs the package installed (`pip install ./python`) and builds the Rust example with
`cargo build --release -p wassdl-python --example bench_rust` unless --no-build.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import wassdl

ROOT = pathlib.Path(__file__).resolve().parents[2]


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


# the problems of bench_peers.py, same formulas and seeds
def problem_1d(N, S=4):
    x = np.linspace(0, 1, N)
    means = np.linspace(0.2, 0.8, S)
    stds = np.array([0.05, 0.08, 0.04, 0.06, 0.07])[:S]
    A = np.stack([np.exp(-((x - m) ** 2) / (2 * s**2)) for m, s in zip(means, stds)], 1)
    A = A / A.sum(0, keepdims=True)
    C = (x[:, None] - x[None, :]) ** 2
    w = np.array([0.1, 0.2, 0.3, 0.4, 0.5])[:S]
    w = w / w.sum()
    target = np.exp(-((x - 0.45) ** 2) / (2 * 0.1**2))
    return x, A, C, w, target / target.sum()


def problem_2d(n, S=4):
    rng = np.random.RandomState(0)
    I, J = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    imgs = []
    for s in range(S):
        ci, cj = rng.uniform(0.3 * n, 0.7 * n, size=2)
        r = rng.uniform(0.1 * n, 0.25 * n)
        im = np.exp(-((I - ci) ** 2 + (J - cj) ** 2) / (2 * r**2)) + 1e-8
        imgs.append(im / im.sum())
    return np.stack(imgs)


def problem_wdl(M=20, n=64, S=5):
    rng = np.random.RandomState(1)
    I, J = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    Y = []
    for m in range(M):
        im = np.zeros((n, n)) + 1e-6
        for _ in range(3):
            ci, cj = rng.uniform(0.2 * n, 0.8 * n, size=2)
            r = rng.uniform(0.04 * n, 0.12 * n)
            im += rng.uniform(0.5, 1.5) * np.exp(-((I - ci) ** 2 + (J - cj) ** 2) / (2 * r**2))
        Y.append(im / im.sum())
    alpha0 = rng.randn(S, n * n) * 0.1
    beta0 = rng.randn(M, S) * 0.1
    return np.stack(Y), alpha0, beta0


def setup(name, d):
    """Writes the inputs for bench_rust and returns (python call, POT call or None, label)."""
    d = pathlib.Path(d)

    def save(key, arr):
        np.ascontiguousarray(arr, dtype="<f8").tofile(d / f"{key}.f64")

    ot = None
    try:
        import ot  # noqa: F811
    except ImportError:
        pass
    if name in ("P0", "P1"):
        # P0: P1's call on a tiny problem (N = 8, S = 2): what remains is the fixed cost
        # of a call through the binding (argument handling, conversions, GIL release).
        N, S = (8, 2) if name == "P0" else (1024, 4)
        _, A, C, w, _ = problem_1d(N, S)
        # rows layout: atoms (S, N) C-ordered = the core's column-major N × S
        save("atoms", A.T), save("weights", w), save("cost", C)
        (d / "dims.txt").write_text(f"{N} {S}")
        py = lambda: wassdl.barycenter(A, C, 1e-2, weights=w, n_iter=100)  # noqa: E731
        pot = ot and (lambda: ot.bregman.barycenter(A, C, 1e-2, weights=w, method="sinkhorn", numItermax=100, stopThr=0.0, warn=False))
        return py, pot, f"dense barycenter N={N} S={S} L=100 reg=1e-2 f64"
    if name == "P2":
        n, S = 128, 4
        A = problem_2d(n, S)
        w = np.full(S, 1 / S)
        save("atoms", A.reshape(S, -1)), save("weights", w)
        (d / "dims.txt").write_text(f"{n} {S}")
        py = lambda: wassdl.convolutional_barycenter2d(A, 4e-3, weights=w, n_iter=100)  # noqa: E731
        pot = ot and (lambda: ot.bregman.convolutional_barycenter2d(A, 4e-3, weights=w, method="sinkhorn", numItermax=100, stopThr=0.0, warn=False))
        return py, pot, f"2-D conv barycenter {n}x{n} S={S} L=100 reg=4e-3 f64"
    if name == "P3":
        N, S = 1024, 4
        _, A, C, w, t = problem_1d(N, S)
        save("atoms", A.T), save("weights", w), save("cost", C), save("target", t)
        (d / "dims.txt").write_text(f"{N} {S}")
        D = np.ascontiguousarray(A.T)
        py = lambda: wassdl.barycenter_loss_and_grad(D, w, t, 1e-2, M=C, n_iter=50)  # noqa: E731
        return py, None, f"quadratic loss + gradient (tape) N={N} S={S} L=50 f64"
    if name == "P4":
        M, n, S = 20, 64, 5
        Y, alpha, beta = problem_wdl(M, n, S)
        X = Y.reshape(M, -1)
        save("data", X), save("theta", np.concatenate([alpha.ravel(), beta.ravel()]))
        (d / "dims.txt").write_text(f"{n} {M} {S}")
        py = lambda: wassdl.wdl_objective(X, alpha, beta, 4e-3, grid=(n, n), n_iter=25)  # noqa: E731
        return py, None, f"WDL objective + gradient M={M} {n}x{n} S={S} L=25 f64"
    raise ValueError(name)


def time_python(f, reps):
    wall, cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        f()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="calls per round and side")
    ap.add_argument("--only", default="P0,P1,P2,P3,P4")
    ap.add_argument("--no-pot", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", help="write the raw timings here")
    args = ap.parse_args()
    exe = ROOT / "target" / "release" / "examples" / "bench_rust"
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "wassdl-python", "--example", "bench_rust"],
                       cwd=ROOT, check=True)
    print(f"loadavg before: {loadavg()}   cpus: {os.cpu_count()}   wassdl {wassdl.__version__}")
    results = {}
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory() as d:
            py, pot, label = setup(name, d)
            if args.no_pot:
                pot = None
            py()  # warm-up
            if pot:
                pot()
            tp, tr, to, cp, cr = [], [], [], [], []
            la = [loadavg()]
            reps = args.reps * (200 if name == "P0" else 1)
            for _ in range(args.rounds):
                w, c = time_python(py, reps)
                tp += w
                cp += c
                out = subprocess.run([str(exe), "P1" if name == "P0" else name, d, str(reps)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout)
                tr += r["times"]
                cr += r["cpu"]
                if pot:
                    to += time_python(pot, max(1, reps // 2))[0]
            la.append(loadavg())
        mp, mr = statistics.median(tp), statistics.median(tr)
        res = {
            "label": label,
            "python_median_s": mp,
            "rust_median_s": mr,
            "overhead": mp / mr - 1,
            "python_min_s": min(tp),
            "rust_min_s": min(tr),
            "overhead_of_minima": min(tp) / min(tr) - 1,
            "python_cpu_median_s": statistics.median(cp),
            "rust_cpu_median_s": statistics.median(cr),
            "cpu_overhead": statistics.median(cp) / statistics.median(cr) - 1,
            "pot_median_s": statistics.median(to) if to else None,
            "runs": len(tp),
            "loadavg": la,
        }
        results[name] = res
        pot_s = f"{res['pot_median_s']:.4f} s" if to else "n/a (no such function in POT)"
        if name == "P0":
            print(f"P0 fixed cost of a call: python {1e6 * mp:.1f} us, rust {1e6 * mr:.1f} us: "
                  f"{1e6 * (mp - mr):.1f} us per call through the binding (median of {len(tp)})")
        print(f"{name} {label}\n    wall: python {mp:.4f} s  rust {mr:.4f} s  overhead {100 * res['overhead']:+.1f}% "
              f"(of minima {100 * res['overhead_of_minima']:+.1f}%)\n"
              f"    cpu:  python {res['python_cpu_median_s']:.4f} s  rust {res['rust_cpu_median_s']:.4f} s  "
              f"overhead {100 * res['cpu_overhead']:+.1f}%\n    POT (wall) {pot_s}   "
              f"[{len(tp)} calls each, load {la[0]} -> {la[1]}]", flush=True)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"loadavg after: {loadavg()}")


if __name__ == "__main__":
    main()
