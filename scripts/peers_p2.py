"""The P2 rows only of /work/shared/peers/bench_peers.py, to time them between runs of ours.

Same problem (`problem_2d`), same functions (`np_conv_bary`; JAX's `conv_bary`, copied
verbatim because bench_peers defines it inside `bench_jax`), same `timeit`, and the thread
settings of its driver: OMP/OPENBLAS/MKL threads = BENCH_THREADS (default 2),
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE removed, XLA single-threaded when BENCH_THREADS=1.

Usage: BENCH_THREADS=2 ~/.venv-peers/bin/python scripts/peers_p2.py numpy|jax [64,128,256]
(BENCH_PEERS_DIR overrides /work/shared/peers.)
"""
import os, sys, json
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
lib = sys.argv[1]
sizes = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else bp.NS_P2
res = {}
if lib == "numpy":
    for n in sizes:
        A, t = bp.problem_2d(n)
        K1 = np.exp(-((t[:, None] - t[None, :]) ** 2) / bp.REG2D)
        w = np.ones(4) / 4
        res[n] = bp.timeit(lambda: bp.np_conv_bary(A, K1, w, 100))
else:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    sync = lambda r: jax.block_until_ready(r)
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
    conv_jit = jax.jit(conv_bary, static_argnums=3)
    for n in sizes:
        A, t = bp.problem_2d(n)
        K1 = np.exp(-((t[:, None] - t[None, :]) ** 2) / bp.REG2D)
        w = np.ones(4) / 4
        Aj, Kj, wj = map(jnp.asarray, (A, K1, w))
        res[n] = bp.timeit(lambda: conv_jit(Aj, Kj, wj, 100), sync)
for n, r in res.items():
    print(f"{lib} n={n} median {r['median_s']*1e3:.1f} ms min {r['min_s']*1e3:.1f} ms runs {r['runs']} cpu/wall {r['cpu_over_wall']:.2f} load {r['loadavg_after']}")
