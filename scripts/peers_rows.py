"""The P1 or P2 rows only of /work/shared/peers/bench_peers.py, to time them in the same
minutes as ours (between runs of our benches).

Same problems (`problem_1d`, `problem_2d`), same functions (`np_bary_loop`,
`np_conv_bary`; JAX's `bary_loop` and `conv_bary`, copied verbatim because bench_peers
defines them inside `bench_jax`), same `timeit`, and the thread settings of its driver:
OMP/OPENBLAS/MKL threads = BENCH_THREADS (default 2), OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE
removed, XLA single-threaded when BENCH_THREADS=1. `p1` is the loop with `K` given,
`p1full` the loop with `K = exp(-C/reg)` computed in the timed call.

Usage: BENCH_THREADS=2 ~/.venv-peers/bin/python scripts/peers_rows.py p1|p1full|p2 numpy|jax [sizes]
(e.g. `p1 jax 4096`, `p2 numpy 64,128,256`; BENCH_PEERS_DIR overrides /work/shared/peers.)
"""
import os, sys
for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(k, None)
TH = os.environ.get("BENCH_THREADS", "2")
for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[k] = TH
if TH == "1":  # as bench_peers.driver does for one thread
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
sys.path.insert(0, os.environ.get("BENCH_PEERS_DIR", "/work/shared/peers"))
import bench_peers as bp
import numpy as np
problem, lib = sys.argv[1], sys.argv[2]
default = bp.NS_P1 if problem.startswith("p1") else bp.NS_P2
sizes = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else default


def p1_inputs(n):
    x, A, C, w, _ = bp.problem_1d(n)
    return A, C, w


def p2_inputs(n):
    A, t = bp.problem_2d(n)
    K1 = np.exp(-((t[:, None] - t[None, :]) ** 2) / bp.REG2D)
    return A, K1, np.ones(4) / 4


res = {}
if lib == "numpy":
    for n in sizes:
        if problem == "p1":
            A, C, w = p1_inputs(n)
            K = np.exp(-C / bp.REG1D)
            res[n] = bp.timeit(lambda: bp.np_bary_loop(A, K, w, 100))
        elif problem == "p1full":
            A, C, w = p1_inputs(n)
            res[n] = bp.timeit(lambda: bp.np_bary_loop(A, np.exp(-C / bp.REG1D), w, 100))
        else:
            A, K1, w = p2_inputs(n)
            res[n] = bp.timeit(lambda: bp.np_conv_bary(A, K1, w, 100))
else:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    sync = lambda r: jax.block_until_ready(r)

    # verbatim from bench_peers.bench_jax
    def bary_loop(A, K, w, iters):
        def body(_, b):
            phi = K.T @ (A / (K @ b))
            p = jnp.exp(jnp.log(phi) @ w)
            return p[:, None] / phi

        b = jax.lax.fori_loop(0, iters - 1, body, jnp.ones_like(A))
        phi = K.T @ (A / (K @ b))
        return jnp.exp(jnp.log(phi) @ w)

    # verbatim from bench_peers.bench_jax
    def conv_bary(A, K1, w, iters):
        S, n, m = A.shape
        conv = lambda X: jnp.einsum("ij,sjk,lk->sil", K1, X, K1)
        def body(_, carry):
            bar, KU = carry
            V = bar[None] / KU
            KV = conv(V)
            U = A / KV
            KU = conv(U)
            bar = jnp.exp(jnp.einsum("s,sij->ij", w, jnp.log(KU + 1e-30)))
            return bar, KU
        bar0 = jnp.ones((n, m)) / (n * m)
        bar, _ = jax.lax.fori_loop(0, iters, body, (bar0, conv(jnp.ones_like(A))))
        return bar

    loop_jit = jax.jit(bary_loop, static_argnums=3)
    full_jit = jax.jit(lambda A, C, w: bary_loop(A, jnp.exp(-C / bp.REG1D), w, 100))
    conv_jit = jax.jit(conv_bary, static_argnums=3)
    for n in sizes:
        if problem == "p1":
            A, C, w = p1_inputs(n)
            Aj, Cj, wj = map(jnp.asarray, (A, C, w))
            Kj = jnp.exp(-Cj / bp.REG1D)
            res[n] = bp.timeit(lambda: loop_jit(Aj, Kj, wj, 100), sync)
        elif problem == "p1full":
            A, C, w = p1_inputs(n)
            Aj, Cj, wj = map(jnp.asarray, (A, C, w))
            res[n] = bp.timeit(lambda: full_jit(Aj, Cj, wj), sync)
        else:
            A, K1, w = p2_inputs(n)
            Aj, Kj, wj = map(jnp.asarray, (A, K1, w))
            res[n] = bp.timeit(lambda: conv_jit(Aj, Kj, wj, 100), sync)
for n, r in res.items():
    print(f"{problem} {lib} n={n} median {r['median_s']*1e3:.1f} ms min {r['min_s']*1e3:.1f} ms runs {r['runs']} cpu/wall {r['cpu_over_wall']:.2f} load {r['loadavg_after']}")
