//! P2 scaling-domain solves timed in alternation: `cargo bench --bench p2_alternate`.
//!
//! The problem of `benches/barycenter.rs`'s `p2_grid` (S = 4 random blobs plus 1e-8,
//! L = 100, γ = 4e-3 POT units, one `GridKernel` built per solve as there), solved with
//! each thread count of `P2_THREADS` (default `1,2`; `1` is `Par::Seq`, `k` is
//! `Par::rayon(k)`) in turn, `P2_REPS` rounds (default 7) after one warm-up round, for
//! each size of `P2_SIZES` (default `64,128,256`). Alternating keeps the settings'
//! medians comparable on a machine whose speed drifts (a shared 2-core VM: see
//! `docs/benchmarks.md`, "P2 scaling path, fourth sitting"). Prints medians, minima,
//! the load average, and a checksum of the barycenter's bits per setting (the thread
//! count must not change it).

#[path = "common/mod.rs"]
mod common;
use common::problem_2d;
use faer::Par;
use std::time::Instant;
use wassdl::{barycenters, BarycenterConfig, Batch, Grid, GridKernel};

fn list(var: &str, default: &str) -> Vec<usize> {
    let v = std::env::var(var).unwrap_or_else(|_| default.into());
    v.split(',').map(|x| x.trim().parse().expect(var)).collect()
}

fn main() {
    let sizes = list("P2_SIZES", "64,128,256");
    let threads = list("P2_THREADS", "1,2");
    let reps = list("P2_REPS", "7")[0].max(1);
    let w = Batch::filled(4, 1, 0.25);
    let cfg = BarycenterConfig::iterations(100);
    for &n in &sizes {
        let grid = Grid::new(&[n, n]).unwrap();
        let atoms = problem_2d(n, 4, 0);
        let mut times = vec![Vec::new(); threads.len()];
        let mut sums = vec![0u128; threads.len()];
        for round in 0..=reps {
            for (i, &th) in threads.iter().enumerate() {
                let par = if th == 1 { Par::Seq } else { Par::rayon(th) };
                let t0 = Instant::now();
                let k = GridKernel::new(&grid, 4e-3).unwrap().with_par(par);
                let out = barycenters(&k, &atoms, &w, &cfg, None).unwrap();
                let dt = t0.elapsed().as_secs_f64();
                if round == 0 {
                    sums[i] = out.p.as_slice().iter().map(|x| x.to_bits() as u128).sum();
                } else {
                    times[i].push(dt);
                }
            }
        }
        for (i, &th) in threads.iter().enumerate() {
            let t = &mut times[i];
            t.sort_by(f64::total_cmp);
            println!(
                "n = {n:3}, {th} thread(s): median {:8.2} ms, min {:8.2} ms ({reps} runs), checksum {:x}",
                1e3 * t[t.len() / 2],
                1e3 * t[0],
                sums[i]
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg {}", load.trim());
}
