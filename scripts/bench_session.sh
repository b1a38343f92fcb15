#!/usr/bin/env bash
# One benchmark sitting: our criterion groups and the peers of ../shared/peers, alternated,
# with the load average logged around every step. Results land in target/bench-session/<stamp>/;
# scripts/compare.py turns them into the tables of docs/benchmarks.md.
#
# Usage: scripts/bench_session.sh [--with-slow]
#   PY=~/.venv-peers/bin/python PEERS=../shared/peers  (defaults)
#   --with-slow also times POT's log-domain barycenters (2-D n=64, 1-D N=1024; minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$HOME/.venv-peers/bin/python}
PEERS=${PEERS:-../shared/peers}
OUT=target/bench-session/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
echo "results in $OUT"
load() { echo "$(date +%T) $1 loadavg $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load.log"; }
ours() { # $1 = criterion filter, $2 = tag
    load "ours $2 start"
    cargo bench --bench barycenter -- "$1" > "$OUT/ours_$2.txt" 2>&1
    load "ours $2 end"
}
ours_threads() { # the same with every kernel split over all cores (results apart)
    load "ours $2 (threads) start"
    WASSDL_BENCH_PAR=rayon CRITERION_HOME=target/criterion-threads \
        cargo bench --bench barycenter -- "$1" > "$OUT/ours_$2_threads.txt" 2>&1
    load "ours $2 (threads) end"
}
peer() { # $1 = lib
    load "peer $1 start"
    "$PY" "$PEERS/bench_peers.py" --libs "$1" --skip-slow > "$OUT/peer_$1.txt" 2>&1 || true
    load "peer $1 end"
}
cargo bench --bench barycenter --bench pointcloud --no-run > "$OUT/build.txt" 2>&1
ours 'p1_dense|kernel_gemm' p1
ours_threads 'p1_dense/(full|loop)_f64' p1
peer pot
ours 'p2_grid|variants' p2
ours_threads 'p2_grid/(scaling|log)_f64' p2
peer numpy
peer jax
ours 'p3_grad|p4_wdl' p34
if "$PY" -c 'import torch' 2> /dev/null; then peer torch; fi
if [[ "${1:-}" == "--with-slow" ]]; then
    load "pot-log start"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 \
        "$PY" scripts/pot_log_slow.py "$PEERS" --n2d 64 --n1d 1024 > "$OUT/peer_pot_log.txt" 2>&1 || true
    load "pot-log end"
fi
# point clouds (P5 exact OT, P6 Sinkhorn divergences)
load "ours pointcloud start"
cargo bench --bench pointcloud > "$OUT/ours_pointcloud.txt" 2>&1
load "ours pointcloud end"
load "peer pointcloud start"
"$PY" scripts/peers_pointcloud.py --skip-slow > "$OUT/peer_pointcloud.txt" 2>&1 || true
load "peer pointcloud end"
lscpu > "$OUT/lscpu.txt"
python3 scripts/criterion_medians.py --json > "$OUT/ours.json"
python3 scripts/criterion_medians.py target/criterion-threads --json > "$OUT/ours_threads.json"
python3 scripts/compare.py "$OUT" > "$OUT/tables.md"
echo "tables: $OUT/tables.md"
