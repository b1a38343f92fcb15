"""The P1 rows only of /work/shared/peers/bench_peers.py (dense barycenter, K given), to
time them in the same minutes as ours.

Same problem (`problem_1d`), same functions (`np_bary_loop`; JAX's `bary_loop`, copied
verbatim because bench_peers defines it inside `bench_jax`), same `timeit`, and the thread
settings of its driver (see scripts/peers_p2.py, whose header this follows).

Usage: BENCH_THREADS=2 ~/.venv-peers/bin/python scripts/peers_p1.py numpy|jax [256,1024,4096]
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
lib = sys.argv[1]
sizes = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else bp.NS_P1
res = {}
if lib == "numpy":
    for n in sizes:
        x, A, C, w, _ = bp.problem_1d(n)
        K = np.exp(-C / bp.REG1D)
        res[n] = bp.timeit(lambda: bp.np_bary_loop(A, K, w, 100))
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

    loop_jit = jax.jit(bary_loop, static_argnums=3)
    for n in sizes:
        x, A, C, w, _ = bp.problem_1d(n)
        Aj, Cj, wj = map(jnp.asarray, (A, C, w))
        Kj = jnp.exp(-Cj / bp.REG1D)
        res[n] = bp.timeit(lambda: loop_jit(Aj, Kj, wj, 100), sync)
for n, r in res.items():
    print(f"{lib} N={n} median {r['median_s']*1e3:.1f} ms min {r['min_s']*1e3:.1f} ms runs {r['runs']} cpu/wall {r['cpu_over_wall']:.2f} load {r['loadavg_after']}")
