//! Problems shared by the benches (`#[path = "common/mod.rs"] mod common;`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wassdl::Batch;

/// Like `bench_peers.problem_2d` (same distribution, Rust RNG): `s` round Gaussian
/// blobs plus 1e-8 on an n×n grid, row-major, normalized.
pub fn problem_2d(n: usize, s: usize, seed: u64) -> Batch<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let nf = n as f64;
    let mut data = Vec::with_capacity(n * n * s);
    for _ in 0..s {
        let (ci, cj) = (
            rng.random_range(0.3 * nf..0.7 * nf),
            rng.random_range(0.3 * nf..0.7 * nf),
        );
        let r = rng.random_range(0.1 * nf..0.25 * nf);
        let im: Vec<f64> = (0..n * n)
            .map(|q| {
                let (i, j) = ((q / n) as f64, (q % n) as f64);
                (-((i - ci).powi(2) + (j - cj).powi(2)) / (2.0 * r * r)).exp() + 1e-8
            })
            .collect();
        let t: f64 = im.iter().sum();
        data.extend(im.into_iter().map(|v| v / t));
    }
    Batch::from_vec(n * n, s, data)
}
