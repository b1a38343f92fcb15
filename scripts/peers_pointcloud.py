#!/usr/bin/env python3
"""Peer timings for the point-cloud benchmarks of `benches/pointcloud.rs` (issue 5, item 8).

Usage (with the peers venv, see ../shared/peers/README.md):
    ~/.venv-peers/bin/python scripts/peers_pointcloud.py              # driver: POT then OTT
    ~/.venv-peers/bin/python scripts/peers_pointcloud.py --lib pot    # one worker, JSON
    ~/.venv-peers/bin/python scripts/peers_pointcloud.py --lib ott --skip-slow

Problems (the same formula as benches/pointcloud.rs; frac(t) = t - floor(t), k = i + 1):
    x_i = (frac(k*0.6180339887498949), frac(k*0.41421356237309515)),
    a_i ~ 1 + frac(k*0.7320508075688772);
    y_j = (0.25 + 0.6*frac(k*0.7548776662466927), 0.35 + 0.5*frac(k*0.5698402909980532)),
    b_j ~ 1 + frac(k*0.2360679774997898).

P5 POT `ot.emd2(a, b, M)`, M = ||x - y||^2 (built exactly as ours, (x - y)^2 summed), n in
   {100, 500, 2000}, numItermax = 10^8 (convergence checked through `log=True`). Also the
   user path `ot.dist(x, y)` + `ot.emd2` (POT's dist uses the expanded |x|^2+|y|^2-2xy).
P6 OTT-JAX `ott.tools.sinkhorn_divergence.sinkdiv` on CPU, N = M in {500, 2000},
   blur in {0.05, 0.01}. Ours (GeomLoss convention) uses cost ||x - y||^2 / 2 and
   eps = blur^2; OTT's PointCloud default cost is ||x - y||^2 (costs.SqEuclidean, no 1/2),
   so OTT runs with eps_ott = 2 blur^2 (absolute: relative_epsilon=None) and its
   divergence is exactly twice ours: the printed `value_half` is comparable to ours.
   Fixed eps (OTT's default, no eps-scaling), lse_mode, threshold on the L1 marginal
   error (norm_error=1, checked every inner_iterations=10), max_iterations 20000.
   Timed: jit(value) and jit(value_and_grad wrt a, b, x, y) (OTT's default implicit
   differentiation), compilation excluded (warm-up), block_until_ready.

Timing as ../shared/peers/bench_peers.py: each worker runs in a subprocess whose
environment has OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed, OMP/OPENBLAS/MKL threads 2
and XLA_FLAGS=--xla_force_host_platform_device_count=1; one warm-up call, then the median
of >= 5 timed runs (up to 15, or until a 20 s budget is spent). float64 throughout.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

THREADS = 2
C_X = (0.6180339887498949, 0.41421356237309515)
C_Y = (0.7548776662466927, 0.5698402909980532)
C_A = 0.7320508075688772
C_B = 0.2360679774997898


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except Exception:
        return None


def timeit(fn, sync=lambda r: r, min_runs=5, max_runs=15, budget_s=20.0):
    """One warm-up call, then >= min_runs timed calls (more if fast, up to max_runs / budget)."""
    t0 = time.perf_counter()
    sync(fn())
    first = time.perf_counter() - t0
    walls, cpus = [], []
    tstart = time.perf_counter()
    while True:
        c0 = time.process_time()
        t0 = time.perf_counter()
        sync(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        n = len(walls)
        if n >= max_runs or (n >= min_runs and time.perf_counter() - tstart > budget_s):
            break
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "runs": len(walls),
        "first_call_s": first,
        "cpu_over_wall": statistics.median(cpus) / max(statistics.median(walls), 1e-12),
        "loadavg_after": loadavg(),
    }


def cloud(n, c, origin, scale, cw):
    import numpy as np

    k = np.arange(1, n + 1, dtype=np.float64)
    frac = lambda t: t - np.floor(t)
    pts = np.stack([origin[0] + scale[0] * frac(k * c[0]), origin[1] + scale[1] * frac(k * c[1])], 1)
    w = 1.0 + frac(k * cw)
    return pts, w / w.sum()


def problem(n):
    x, a = cloud(n, C_X, (0.0, 0.0), (1.0, 1.0), C_A)
    y, b = cloud(n, C_Y, (0.25, 0.35), (0.6, 0.5), C_B)
    return x, a, y, b


def sq_cost(x, y):
    # the same arithmetic as Cost::SqEuclidean: sum_k (x_k - y_k)^2
    d = x[:, None, :] - y[None, :, :]
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]


def bench_pot(args):
    import numpy as np
    import ot

    res = {"_ot_version": ot.__version__}
    for n in (100, 500, 2000):
        x, a, y, b = problem(n)
        M = sq_cost(x, y)
        cost, log = ot.emd2(a, b, M, numItermax=100_000_000, log=True)
        assert log["warning"] is None and log["result_code"] == 1, log["warning"]
        r = timeit(lambda: ot.emd2(a, b, M, numItermax=100_000_000))
        r["value"] = float(cost)
        r["result_code"] = int(log["result_code"])
        res[f"p5_emd/solve/{n}"] = r
        r = timeit(lambda: ot.emd2(a, b, ot.dist(x, y), numItermax=100_000_000))
        r["value"] = float(ot.emd2(a, b, ot.dist(x, y), numItermax=100_000_000))
        res[f"p5_emd/dist+solve/{n}"] = r
        res[f"p5_emd/cost_matrix(numpy, ours' arithmetic)/{n}"] = timeit(lambda: sq_cost(x, y))
        res[f"p5_emd/ot.dist/{n}"] = timeit(lambda: ot.dist(x, y))
        print(f"# POT n={n} cost={cost:.17e}", file=sys.stderr, flush=True)
    return res


def bench_ott(args):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import ott
    from ott.tools.sinkhorn_divergence import sinkdiv

    sync = jax.block_until_ready
    res = {"_ott_version": ott.__version__, "_jax_version": jax.__version__, "_devices": [str(d) for d in jax.devices()]}
    cases = [(n, blur) for n in (500, 2000) for blur in (0.05, 0.01)]
    for n, blur in cases:
        if args.skip_slow and n == 2000 and blur == 0.01:
            res[f"p6_divergence/n={n}/blur={blur}"] = {"skipped": "--skip-slow"}
            continue
        x, a, y, b = (jnp.asarray(v) for v in problem(n))
        eps = 2.0 * blur * blur
        skw = dict(threshold=args.threshold, max_iterations=args.max_iterations)

        def value(a, b, x, y):
            d, out = sinkdiv(x, y, a=a, b=b, epsilon=eps, solve_kwargs=skw)
            return d, (out.n_iters, out.converged, out.errors)

        fval = jax.jit(value)
        fvg = jax.jit(jax.value_and_grad(lambda a, b, x, y: value(a, b, x, y)[0], argnums=(0, 1, 2, 3)))
        d, (iters, conv, _errs) = fval(a, b, x, y)
        d = float(d)
        info = {
            "value_ott": d,
            "value_half": d / 2.0,
            "eps_ott": eps,
            "n_iters(xy,xx,yy)": [int(i) for i in iters],
            "converged(xy,xx,yy)": [bool(c) for c in conv],
        }
        print(f"# OTT n={n} blur={blur} value/2={d / 2:.17e} iters={info['n_iters(xy,xx,yy)']} "
              f"converged={info['converged(xy,xx,yy)']}", file=sys.stderr, flush=True)
        r = timeit(lambda: fval(a, b, x, y), sync, max_runs=15, budget_s=args.budget)
        r.update(info)
        res[f"p6_divergence/value/n={n}/blur={blur}"] = r
        if not args.no_grad and n <= args.grad_max_n:
            r = timeit(lambda: fvg(a, b, x, y), sync, max_runs=15, budget_s=args.budget)
            v, g = fvg(a, b, x, y)
            r["value_half"] = float(v) / 2.0
            r["grad_x_norm_half"] = float(jnp.linalg.norm(g[2])) / 2.0
            res[f"p6_divergence/value_and_grad/n={n}/blur={blur}"] = r
    return res


def worker(args):
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")}
    env["loadavg_start"] = loadavg()
    t0 = time.time()
    res = {"pot": bench_pot, "ott": bench_ott}[args.lib](args)
    env["loadavg_end"] = loadavg()
    env["worker_seconds"] = round(time.time() - t0, 1)
    print("@@JSON@@" + json.dumps({"env": env, "results": res}))


def driver(args):
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(THREADS)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    extra = []
    if args.skip_slow:
        extra.append("--skip-slow")
    if args.no_grad:
        extra.append("--no-grad")
    extra += ["--grad-max-n", str(args.grad_max_n), "--threshold", str(args.threshold), "--max-iterations", str(args.max_iterations), "--budget", str(args.budget)]
    out = {}
    for lib in args.libs.split(","):
        print(f"# worker {lib}: loadavg before {loadavg()}", flush=True)
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--lib", lib] + extra, env=env,
                           capture_output=True, text=True)
        sys.stdout.write(p.stderr)
        line = [l for l in p.stdout.splitlines() if l.startswith("@@JSON@@")]
        if p.returncode != 0 or not line:
            print(f"# worker {lib} FAILED")
            continue
        d = json.loads(line[0][len("@@JSON@@"):])
        out[lib] = d
        print(f"# worker {lib}: loadavg after {loadavg()}, env {d['env']}", flush=True)
        for k, r in d["results"].items():
            if k.startswith("_"):
                print(f"{k}: {r}")
                continue
            if "median_s" not in r:
                print(f"{k}: {r}")
                continue
            extra_s = {kk: vv for kk, vv in r.items() if kk in ("value", "value_half", "n_iters(xy,xx,yy)", "converged(xy,xx,yy)", "grad_x_norm_half")}
            print(f"{k}: median {r['median_s'] * 1e3:.3f} ms (min {r['min_s'] * 1e3:.3f}, runs {r['runs']}, "
                  f"first {r['first_call_s']:.2f} s, cpu/wall {r['cpu_over_wall']:.2f}) {extra_s}")
    print("@@RAW_JSON@@")
    print(json.dumps(out, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["pot", "ott"])
    ap.add_argument("--libs", default="pot,ott")
    ap.add_argument("--skip-slow", action="store_true", help="skip OTT at N=2000, blur=0.01")
    ap.add_argument("--no-grad", action="store_true", help="time OTT's value only")
    ap.add_argument("--threshold", type=float, default=1e-5, help="OTT L1 marginal-error threshold")
    ap.add_argument("--max-iterations", type=int, default=20000)
    ap.add_argument("--grad-max-n", type=int, default=500, help="time value_and_grad only up to this N")
    ap.add_argument("--budget", type=float, default=20.0)
    args = ap.parse_args()
    if args.lib:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
