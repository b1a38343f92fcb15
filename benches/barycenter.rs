//! Criterion benchmarks of the problems of `../shared/peers/bench_peers.py` (P1-P4), so
//! that every row of `docs/benchmarks.md` has a peer measured on the same machine.
//!
//! Groups (run one with `cargo bench --bench barycenter -- <group>`):
//! * `p1_dense`: dense barycenter, N ∈ {256, 1024, 4096}, S = 4, L = 100, γ = 1e-2 on the
//!   `linspace(0, 1, N)` squared cost. `full` times `K = exp(-C/γ)` and the iterations
//!   (what POT's `ot.bregman.barycenter` and the peers' `full` rows time); `loop` times
//!   the iterations with `K` given (the peers' `K given` rows).
//! * `p2_grid`: 2-D barycenter on an n×n grid, n ∈ {64, 128, 256}, S = 4, L = 100,
//!   γ = 4e-3 in POT units, scaling and log domain (kernel build included, as in POT).
//! * `variants`: heavy-ball (τ = -0.5) and unbalanced (ρ = 1) at dense N = 1024.
//! * `kernel_gemm`: one dense kernel application against faer's own GEMM of the same shape.
//! * `p3_grad`: forward, tape gradient and analytic gradient (Algorithm 1), dense
//!   N = 1024 and a 128×128 grid, S = 4, L = 50, quadratic loss.
//! * `p4_wdl`: WDL objective and gradient (softmax change of variables, eq. 13), M = 20
//!   images 64×64, S = 5, L = 25 at γ = 4e-3 (POT units, as the peers), and S = 4 at
//!   γ = 2 pixel² (the authors' C++ code), f64 and f32.
//! * `avx_state`: a scalar `f64::ln` loop with the upper vector state clean, dirtied by one
//!   AVX-512 or AVX instruction, and after a faer GEMM, with and without `vzeroupper`
//!   (issue 10; `WASSDL_KEEP_UPPER_STATE=1` turns the library's clearing off everywhere).
//! * `digits`: the digits-size WDL evaluation (8×8, S = 3, M = 60, L = 50) and faer's
//!   single-core GEMM rate on square shapes (the arithmetic bounds of issue 10).
//!
//! Each group takes ten samples (`sample_size(10)`); `docs/benchmarks.md` quotes the
//! median of `target/criterion/<id>/new/estimates.json` via `scripts/criterion_medians.py`.
//! The parallelism is the library default (see [`wassdl::kernel`]); set
//! `WASSDL_BENCH_PAR=seq` or `=rayon` to force one for every kernel built here.

#[path = "common/mod.rs"]
mod common;
use common::problem_2d;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use faer::linalg::matmul::matmul;
use faer::{Accum, Par};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Duration;
use wassdl::analytic::sinkhorn_grads;
use wassdl::gradient::{loss_and_grad, loss_and_grad_in, GradConfig};
use wassdl::kernel::apply_new;
use wassdl::tape::TapeBuffers;
use wassdl::*;

/// The parallelism forced by `WASSDL_BENCH_PAR`, if any.
fn forced_par() -> Option<Par> {
    match std::env::var("WASSDL_BENCH_PAR").ok()?.as_str() {
        "seq" => Some(Par::Seq),
        "rayon" => Some(Par::rayon(0)),
        _ => None,
    }
}

fn dense_kernel<T: Real>(c: &Batch<T>, gamma: T) -> DenseKernel<T> {
    let k = DenseKernel::new(c.view(), gamma).unwrap();
    match forced_par() {
        Some(p) => k.with_par(p),
        None => k,
    }
}

fn grid_kernel<T: Real>(grid: &Grid, gamma: T) -> GridKernel<T> {
    let k = GridKernel::new(grid, gamma).unwrap();
    match forced_par() {
        Some(p) => k.with_par(p),
        None => k,
    }
}

/// `bench_peers.problem_1d`: Gaussian atoms on `linspace(0, 1, N)`, its squared cost,
/// weights `[.1, .2, .3, .4]` and the target of P3.
struct Problem1d {
    atoms: Batch<f64>,
    cost: Batch<f64>,
    weights: Batch<f64>,
    target: Batch<f64>,
}

fn problem_1d(n: usize, s: usize) -> Problem1d {
    let x: Vec<f64> = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
    let stds = [0.05, 0.08, 0.04, 0.06, 0.07];
    let gauss = |m: f64, sd: f64| -> Vec<f64> {
        let v: Vec<f64> = x
            .iter()
            .map(|&xi| (-(xi - m).powi(2) / (2.0 * sd * sd)).exp())
            .collect();
        let t: f64 = v.iter().sum();
        v.into_iter().map(|a| a / t).collect()
    };
    let mut atoms = Vec::with_capacity(n * s);
    for (k, &sd) in stds.iter().take(s).enumerate() {
        let mean = if s > 1 {
            0.2 + 0.6 * k as f64 / (s - 1) as f64
        } else {
            0.2
        };
        atoms.extend(gauss(mean, sd));
    }
    let w: Vec<f64> = (1..=s).map(|k| 0.1 * k as f64).collect();
    let ws: f64 = w.iter().sum();
    Problem1d {
        atoms: Batch::from_vec(n, s, atoms),
        cost: Batch::from_fn(n, n, |i, j| (x[i] - x[j]).powi(2)),
        weights: Batch::from_vec(s, 1, w.into_iter().map(|v| v / ws).collect()),
        target: Batch::from_vec(n, 1, gauss(0.45, 0.1)),
    }
}

/// Like `bench_peers.problem_wdl`: `m` images of three random blobs each plus 1e-6,
/// and the initial logits `alpha` (`N × S`) and `beta` (`S × M`), N(0, 0.1²).
fn problem_wdl(m: usize, n: usize, s: usize) -> (Batch<f64>, Batch<f64>, Batch<f64>) {
    let mut rng = StdRng::seed_from_u64(1);
    let nf = n as f64;
    let mut y = Vec::with_capacity(n * n * m);
    for _ in 0..m {
        let mut im = vec![1e-6; n * n];
        for _ in 0..3 {
            let (ci, cj) = (
                rng.random_range(0.2 * nf..0.8 * nf),
                rng.random_range(0.2 * nf..0.8 * nf),
            );
            let r = rng.random_range(0.04 * nf..0.12 * nf);
            let amp = rng.random_range(0.5..1.5);
            for (q, v) in im.iter_mut().enumerate() {
                let (i, j) = ((q / n) as f64, (q % n) as f64);
                *v += amp * (-((i - ci).powi(2) + (j - cj).powi(2)) / (2.0 * r * r)).exp();
            }
        }
        let t: f64 = im.iter().sum();
        y.extend(im.into_iter().map(|v| v / t));
    }
    let normal = rand_distr::Normal::new(0.0, 0.1).unwrap();
    let mut draw = |k: usize| -> Vec<f64> { (0..k).map(|_| rng.sample(normal)).collect() };
    let alpha = Batch::from_vec(n * n, s, draw(n * n * s));
    let beta = Batch::from_vec(s, m, draw(s * m));
    (Batch::from_vec(n * n, m, y), alpha, beta)
}

/// Column-wise softmax (eq. 13).
fn softmax_cols<T: Real>(x: &Batch<T>) -> Batch<T> {
    let mut out = x.clone();
    for j in 0..x.cols() {
        let c = out.col_mut(j);
        let mx = c.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        let mut s = T::zero();
        for v in c.iter_mut() {
            *v = (*v - mx).exp();
            s += *v;
        }
        for v in c.iter_mut() {
            *v /= s;
        }
    }
    out
}

/// Pulls a gradient `g` with respect to `y = softmax(x)` (per column) back to `x`:
/// `y ⊙ (g − ⟨g, y⟩)`.
fn softmax_back<T: Real>(y: &Batch<T>, g: &Batch<T>) -> Batch<T> {
    let mut out = g.clone();
    for j in 0..y.cols() {
        let dot = y
            .col(j)
            .iter()
            .zip(g.col(j))
            .fold(T::zero(), |a, (&p, &q)| a + p * q);
        for (o, &p) in out.col_mut(j).iter_mut().zip(y.col(j)) {
            *o = p * (*o - dot);
        }
    }
    out
}

thread_local! {
    /// The tape buffers of the last `wdl_eval` on this thread (one precision at a time).
    static TAPE: std::cell::RefCell<Option<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(None) };
}

/// The WDL objective `Σ_m ‖P(softmax(α), softmax(β_m)) − y_m‖²` and its gradient with
/// respect to `(α, β)`, one evaluation as Algorithm 2 performs it: the tape's buffers
/// are reused from the previous call, as within a fit. `WASSDL_BENCH_FRESH_TAPE=1`
/// records into fresh memory every time instead (the earlier behaviour, for
/// before/after comparisons in one binary).
fn wdl_eval<T: Real + 'static>(
    k: &dyn Kernel<T>,
    y: &Batch<T>,
    alpha: &Batch<T>,
    beta: &Batch<T>,
    cfg: &BarycenterConfig,
    opts: &GradConfig,
) -> (T, Batch<T>, Batch<T>, usize) {
    let d = softmax_cols(alpha);
    let w = softmax_cols(beta);
    let g = if std::env::var_os("WASSDL_BENCH_FRESH_TAPE").is_some() {
        loss_and_grad(k, &d, &w, y, &Loss::Quadratic, cfg, None, opts).unwrap()
    } else {
        TAPE.with(|slot| {
            let mut slot = slot.borrow_mut();
            let mut buffers = slot
                .take()
                .and_then(|b| b.downcast::<TapeBuffers<T>>().ok())
                .map_or_else(TapeBuffers::new, |b| *b);
            let g = loss_and_grad_in(
                k,
                &d,
                &w,
                y,
                &Loss::Quadratic,
                cfg,
                None,
                opts,
                &mut buffers,
            )
            .unwrap();
            *slot = Some(Box::new(buffers));
            g
        })
    };
    (
        g.loss,
        softmax_back(&d, &g.grad_atoms),
        softmax_back(&w, &g.grad_weights),
        g.peak_bytes,
    )
}

/// The tape formula of `docs/memory.md` (plain balanced iteration, quadratic loss), in
/// scalars: `N·S + S·M + 3·N·S·M + L·(6·N·S·M + 2·N·M) + 2·N·M + 1`.
fn tape_formula(n: usize, s: usize, m: usize, l: usize) -> usize {
    n * s + s * m + 3 * n * s * m + l * (6 * n * s * m + 2 * n * m) + 2 * n * m + 1
}

/// Prints one `MEMORY` line: measured peak bytes of a gradient evaluation and the formula.
fn memory_line(id: &str, peak: usize, formula_bytes: usize) {
    println!(
        "MEMORY {id}: peak {:.2} MB, formula {:.2} MB",
        peak as f64 / 1e6,
        formula_bytes as f64 / 1e6
    );
}

/// On-CPU seconds of this thread per call of `f` (median of three), from
/// `/proc/thread-self/schedstat`: comparable with numbers measured on an idle machine
/// (the C++ and torch figures quoted by the issues) when this one is shared. `None`
/// where the file does not exist.
fn cpu_seconds(mut f: impl FnMut()) -> Option<f64> {
    let now = || -> Option<f64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        Some(s.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
    };
    let mut v = Vec::new();
    for _ in 0..3 {
        let t0 = now()?;
        f();
        v.push(now()? - t0);
    }
    v.sort_by(f64::total_cmp);
    Some(v[1])
}

/// Prints one `CPU` line (see [`cpu_seconds`]).
fn cpu_line(id: &str, f: impl FnMut()) {
    if let Some(t) = cpu_seconds(f) {
        println!("CPU {id}: {t:.4} s per call (on-CPU time, median of 3)");
    }
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
    secs: u64,
) -> criterion::BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(secs))
        .sampling_mode(SamplingMode::Flat);
    g
}

fn p1_dense(c: &mut Criterion) {
    let mut g = configure(c, "p1_dense", 5);
    for &n in &[256usize, 1024, 4096] {
        let p = problem_1d(n, 4);
        let cfg = BarycenterConfig::iterations(100);
        g.bench_with_input(BenchmarkId::new("full_f64", n), &n, |b, _| {
            b.iter(|| {
                let k = dense_kernel(&p.cost, 1e-2);
                black_box(barycenters(&k, &p.atoms, &p.weights, &cfg, None).unwrap())
            })
        });
        let k = dense_kernel(&p.cost, 1e-2);
        g.bench_with_input(BenchmarkId::new("loop_f64", n), &n, |b, _| {
            b.iter(|| black_box(barycenters(&k, &p.atoms, &p.weights, &cfg, None).unwrap()))
        });
        let (c32, a32, w32) = (
            p.cost.cast::<f32>(),
            p.atoms.cast::<f32>(),
            p.weights.cast::<f32>(),
        );
        let k32 = dense_kernel(&c32, 1e-2f32);
        g.bench_with_input(BenchmarkId::new("loop_f32", n), &n, |b, _| {
            b.iter(|| black_box(barycenters(&k32, &a32, &w32, &cfg, None).unwrap()))
        });
    }
    g.finish();
}

fn p2_grid(c: &mut Criterion) {
    let mut g = configure(c, "p2_grid", 5);
    let w = Batch::filled(4, 1, 0.25);
    for &n in &[64usize, 128, 256] {
        let grid = Grid::new(&[n, n]).unwrap();
        let atoms = problem_2d(n, 4, 0);
        let cfg = BarycenterConfig::iterations(100);
        g.bench_with_input(BenchmarkId::new("scaling_f64", n), &n, |b, _| {
            b.iter(|| {
                let k = grid_kernel(&grid, 4e-3);
                black_box(barycenters(&k, &atoms, &w, &cfg, None).unwrap())
            })
        });
        // No f32 scaling row: at γ = 4e-3 the kernel spans exp(-250), below f32's range,
        // and the scalings overflow (the solver says so); f32 runs in the log domain.
        let (a32, w32) = (atoms.cast::<f32>(), w.cast::<f32>());
        if n > 128 {
            // One log-domain solve at n = 256 takes about a minute; POT's is not timed either.
            continue;
        }
        let lcfg = cfg.log_domain(true);
        g.bench_with_input(BenchmarkId::new("log_f64", n), &n, |b, _| {
            b.iter(|| {
                let k = grid_kernel(&grid, 4e-3);
                black_box(barycenters(&k, &atoms, &w, &lcfg, None).unwrap())
            })
        });
        g.bench_with_input(BenchmarkId::new("log_f32", n), &n, |b, _| {
            b.iter(|| {
                let k = grid_kernel(&grid, 4e-3f32);
                black_box(barycenters(&k, &a32, &w32, &lcfg, None).unwrap())
            })
        });
        // How often the shifted-GEMM log path fell back to the windowed sum (one solve).
        let (k64, k32) = (grid_kernel(&grid, 4e-3), grid_kernel(&grid, 4e-3f32));
        barycenters(&k64, &atoms, &w, &lcfg, None).unwrap();
        barycenters(&k32, &a32, &w32, &lcfg, None).unwrap();
        eprintln!(
            "p2_grid n = {n}: log fallback fraction f64 {:?}, f32 {:?}; mean window f64 {:?}",
            k64.log_fallback_fraction(),
            k32.log_fallback_fraction(),
            k64.mean_log_window()
        );
    }
    g.finish();
}

fn variants(c: &mut Criterion) {
    let mut g = configure(c, "variants", 5);
    let n = 1024;
    let p = problem_1d(n, 4);
    let k = dense_kernel(&p.cost, 1e-2);
    let cases = [
        ("plain", BarycenterConfig::iterations(100)),
        (
            "heavy_ball_tau-0.5",
            BarycenterConfig::iterations(100).tau(-0.5),
        ),
        (
            "unbalanced_rho1",
            BarycenterConfig::iterations(100).rho(1.0),
        ),
        (
            "log_domain",
            BarycenterConfig::iterations(100).log_domain(true),
        ),
    ];
    for (name, cfg) in cases {
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| black_box(barycenters(&k, &p.atoms, &p.weights, &cfg, None).unwrap()))
        });
    }
    g.finish();
}

fn kernel_gemm(c: &mut Criterion) {
    let mut g = configure(c, "kernel_gemm", 3);
    let mut rng = StdRng::seed_from_u64(3);
    for &(n, cols) in &[
        (256usize, 4usize),
        (1024, 4),
        (4096, 4),
        (1024, 64),
        (4096, 64),
    ] {
        let p = problem_1d(n, 4);
        let k = dense_kernel(&p.cost, 1e-2);
        let x = Batch::from_fn(n, cols, |_, _| rng.random_range(0.5..1.5));
        let id = format!("{n}x{cols}");
        g.throughput(criterion::Throughput::Elements((2 * n * n * cols) as u64));
        g.bench_function(BenchmarkId::new("kernel_apply", &id), |b| {
            b.iter(|| black_box(apply_new(&k, &x, false)))
        });
        let km = k.matrix().clone();
        for (name, par) in [("faer_seq", Par::Seq), ("faer_rayon", Par::rayon(0))] {
            g.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| {
                    let mut out = Batch::zeros(n, cols);
                    matmul(
                        out.view_mut(),
                        Accum::Replace,
                        km.view(),
                        x.view(),
                        1.0,
                        par,
                    );
                    black_box(out)
                })
            });
        }
    }
    g.finish();
}

fn p3_grad(c: &mut Criterion) {
    let mut g = configure(c, "p3_grad", 5);
    let l = 50;
    let cfg = BarycenterConfig::iterations(l);
    let quad_grad = |x: &Batch<f64>| {
        let x = x.clone();
        move |p: &Batch<f64>| {
            Batch::from_fn(p.rows(), p.cols(), |i, j| 2.0 * (p.get(i, j) - x.get(i, j)))
        }
    };
    // Dense N = 1024: the peers' P3 problem exactly.
    let p = problem_1d(1024, 4);
    let dk = dense_kernel(&p.cost, 1e-2);
    // 128×128 grid, γ = 4e-3 (POT units), four blob atoms, a blob target.
    let grid = Grid::new(&[128, 128]).unwrap();
    let gk = grid_kernel(&grid, 4e-3);
    let ga = problem_2d(128, 4, 0);
    let gt = problem_2d(128, 1, 7);
    let gw = Batch::from_vec(4, 1, vec![0.1, 0.2, 0.3, 0.4]);
    // (name, kernel, atoms, weights, target)
    type Case<'a> = (
        &'a str,
        &'a dyn Kernel<f64>,
        &'a Batch<f64>,
        &'a Batch<f64>,
        &'a Batch<f64>,
    );
    let cases: [Case; 2] = [
        ("dense1024", &dk, &p.atoms, &p.weights, &p.target),
        ("grid128", &gk, &ga, &gw, &gt),
    ];
    let opts = GradConfig::default();
    for (name, k, atoms, w, x) in cases {
        let (n, s) = (atoms.rows(), atoms.cols());
        let tape = || loss_and_grad(k, atoms, w, x, &Loss::Quadratic, &cfg, None, &opts);
        let peak = tape().unwrap().peak_bytes;
        memory_line(
            &format!("p3_grad/tape/{name}"),
            peak,
            8 * tape_formula(n, s, 1, l),
        );
        println!(
            "MEMORY p3_grad/analytic/{name}: formula 2·S·N·L·M = {:.2} MB (stored scalings)",
            wassdl::analytic::memory_bytes(n, s, 1, l, 8) as f64 / 1e6
        );
        let lg = quad_grad(x);
        let forward = || {
            let out = barycenters(k, atoms, w, &cfg, None).unwrap();
            Loss::Quadratic.value_and_grad(&out.p, x, k).unwrap().0
        };
        let analytic = || sinkhorn_grads(k, atoms, w, l, &mut |p| lg(p)).unwrap();
        let runs: [(&str, &dyn Fn()); 3] = [
            ("forward", &|| {
                black_box(forward());
            }),
            ("tape", &|| drop(black_box(tape().unwrap()))),
            ("analytic", &|| drop(black_box(analytic()))),
        ];
        for (what, run) in runs {
            cpu_line(&format!("p3_grad/{what}/{name}"), run);
            g.bench_function(BenchmarkId::new(what, name), |b| b.iter(run));
        }
    }
    g.finish();
}

/// Benchmarks `f` as `p4_wdl/{name}/20` after printing its on-CPU time per call.
fn wdl_case(g: &mut criterion::BenchmarkGroup<'_, WallTime>, name: &str, mut f: impl FnMut()) {
    cpu_line(&format!("p4_wdl/{name}/20"), &mut f);
    g.bench_function(BenchmarkId::new(name, 20), |b| b.iter(&mut f));
}

fn p4_wdl(c: &mut Criterion) {
    let mut g = configure(c, "p4_wdl", 8);
    let m = 20;
    let opts = GradConfig::default();
    let cfg = BarycenterConfig::iterations(25);
    let lcfg = cfg.log_domain(true);
    let pot64 = Grid::new(&[64, 64]).unwrap();
    let pix64 = pot64.clone().with_units(GridUnits::Pixel);
    let pix128 = Grid::new(&[128, 128]).unwrap().with_units(GridUnits::Pixel);
    // The peers' problem: S = 5, γ = 4e-3 (POT units). The authors' C++ comparison:
    // S = 4, γ = 2 pixel², 64×64 and 128×128, scaling and log domain.
    for (name, grid, gamma, s) in [
        ("pot_s5", &pot64, 4e-3, 5usize),
        ("pixel_g2_s4", &pix64, 2.0, 4),
        ("pixel128_g2_s4", &pix128, 2.0, 4),
    ] {
        let n = grid.shape()[0];
        let (y, alpha, beta) = problem_wdl(m, n, s);
        let (y32, a32, b32) = (y.cast::<f32>(), alpha.cast::<f32>(), beta.cast::<f32>());
        let k = grid_kernel(grid, gamma);
        let k32 = grid_kernel(grid, gamma as f32);
        let peak = wdl_eval(&k, &y, &alpha, &beta, &cfg, &opts).3;
        memory_line(
            &format!("p4_wdl/{name}_f64"),
            peak,
            8 * tape_formula(n * n, s, m, 25),
        );
        wdl_case(&mut g, &format!("{name}_f64"), || {
            black_box(wdl_eval(&k, &y, &alpha, &beta, &cfg, &opts));
        });
        wdl_case(&mut g, &format!("{name}_f32"), || {
            black_box(wdl_eval(&k32, &y32, &a32, &b32, &cfg, &opts));
        });
        if name == "pot_s5" {
            // Chunks of 4 images bound the tape to a fifth.
            let chunked = GradConfig {
                chunk: Some(4),
                ..Default::default()
            };
            let peak = wdl_eval(&k, &y, &alpha, &beta, &cfg, &chunked).3;
            let formula = 8 * tape_formula(n * n, s, 4, 25);
            memory_line(&format!("p4_wdl/{name}_f64_chunk4"), peak, formula);
            wdl_case(&mut g, &format!("{name}_f64_chunk4"), || {
                black_box(wdl_eval(&k, &y, &alpha, &beta, &cfg, &chunked));
            });
        }
        if name == "pixel_g2_s4" {
            // Against the authors' log-domain build (about 105 s per evaluation).
            wdl_case(&mut g, &format!("{name}_log_f64"), || {
                black_box(wdl_eval(&k, &y, &alpha, &beta, &lcfg, &opts));
            });
            wdl_case(&mut g, &format!("{name}_log_f32"), || {
                black_box(wdl_eval(&k32, &y32, &a32, &b32, &lcfg, &opts));
            });
        }
    }
    g.finish();
}

/// Scalar `f64::ln` calls per sample of the `avx_state` group.
const LN_CALLS: usize = 1000;

/// `LN_CALLS` scalar natural logarithms (libm, baseline SSE-encoded glue): what pays the
/// AVX→SSE transition penalty when the upper vector state is dirty.
fn ln_loop(xs: &[f64]) -> f64 {
    xs.iter().map(|&x| black_box(x).ln()).sum()
}

/// Dirties the upper state as faer's AVX-512 microkernels leave it: one EVEX instruction
/// writing all 512 bits of `zmm1` (or 256 bits of `ymm1` with `wide = false`).
#[cfg(target_arch = "x86_64")]
fn dirty_upper(wide: bool) {
    // SAFETY: called only after run-time detection of AVX-512F (AVX for `ymm`); the
    // register is declared clobbered and is caller-saved.
    unsafe {
        if wide {
            std::arch::asm!("vaddpd zmm1, zmm1, zmm1", out("xmm1") _);
        } else {
            std::arch::asm!("vaddpd ymm1, ymm1, ymm1", out("xmm1") _);
        }
    }
}

/// The issue-10 microbenchmark: a scalar `ln` loop with the upper vector state clean,
/// dirtied by one AVX-512 (or AVX) instruction, dirtied then cleared with `vzeroupper`,
/// and after a real faer GEMM with and without [`wassdl::kernel::clear_upper_state`].
#[cfg(target_arch = "x86_64")]
fn avx_state(c: &mut Criterion) {
    let xs: Vec<f64> = (0..LN_CALLS).map(|i| 1.0 + i as f64 * 0.37).collect();
    let mut g = configure(c, "avx_state", 3);
    g.bench_function("ln_clean", |b| {
        b.iter(|| {
            wassdl::kernel::clear_upper_state();
            ln_loop(&xs)
        })
    });
    if is_x86_feature_detected!("avx") {
        g.bench_function("ln_dirty_ymm", |b| {
            b.iter(|| {
                dirty_upper(false);
                ln_loop(&xs)
            })
        });
    }
    if is_x86_feature_detected!("avx512f") {
        g.bench_function("ln_dirty_zmm", |b| {
            b.iter(|| {
                dirty_upper(true);
                ln_loop(&xs)
            })
        });
        g.bench_function("ln_dirty_zmm_zeroupper", |b| {
            b.iter(|| {
                dirty_upper(true);
                wassdl::kernel::clear_upper_state();
                ln_loop(&xs)
            })
        });
    }
    let (a, x) = (
        faer::Mat::<f64>::ones(64, 64),
        faer::Mat::<f64>::ones(64, 8),
    );
    let mut out = faer::Mat::<f64>::zeros(64, 8);
    for clear in [false, true] {
        let name = if clear { "gemm_clear_ln" } else { "gemm_ln" };
        g.bench_function(name, |b| {
            b.iter(|| {
                matmul(
                    out.as_mut(),
                    Accum::Replace,
                    a.as_ref(),
                    x.as_ref(),
                    1.0,
                    Par::Seq,
                );
                if clear {
                    wassdl::kernel::clear_upper_state();
                }
                ln_loop(&xs)
            })
        });
    }
    g.bench_function("gemm_only", |b| {
        b.iter(|| {
            matmul(
                out.as_mut(),
                Accum::Replace,
                a.as_ref(),
                x.as_ref(),
                1.0,
                Par::Seq,
            );
            wassdl::kernel::clear_upper_state();
        })
    });
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn avx_state(_: &mut Criterion) {}

/// The digits-size WDL evaluation of issue 10 (N = 64 on an 8×8 grid, S = 3, M = 60,
/// L = 50, γ = 2 px², f64 and f32), and faer's single-thread GEMM rate on the square
/// shapes the arithmetic bounds of `docs/benchmarks.md` divide by.
fn digits(c: &mut Criterion) {
    let mut g = configure(c, "digits", 3);
    let grid = Grid::new(&[8, 8]).unwrap().with_units(GridUnits::Pixel);
    let (y, alpha, beta) = problem_wdl(60, 8, 3);
    let cfg = BarycenterConfig::iterations(50);
    let opts = GradConfig::default();
    let k = grid_kernel(&grid, 2.0);
    let mut f64_eval = || drop(black_box(wdl_eval(&k, &y, &alpha, &beta, &cfg, &opts)));
    cpu_line("digits/wdl_f64", &mut f64_eval);
    g.bench_function("wdl_f64", |b| b.iter(&mut f64_eval));
    let (y32, a32, b32) = (y.cast::<f32>(), alpha.cast::<f32>(), beta.cast::<f32>());
    let k32 = grid_kernel(&grid, 2.0f32);
    let mut f32_eval = || drop(black_box(wdl_eval(&k32, &y32, &a32, &b32, &cfg, &opts)));
    cpu_line("digits/wdl_f32", &mut f32_eval);
    g.bench_function("wdl_f32", |b| b.iter(&mut f32_eval));
    for n in [64usize, 256, 1024] {
        let a = faer::Mat::<f64>::from_fn(n, n, |i, j| ((i + j) % 7) as f64);
        let x = faer::Mat::<f64>::from_fn(n, n, |i, j| ((i * j) % 5) as f64);
        let mut out = faer::Mat::<f64>::zeros(n, n);
        let mut run = || {
            matmul(
                out.as_mut(),
                Accum::Replace,
                a.as_ref(),
                x.as_ref(),
                1.0,
                Par::Seq,
            );
            wassdl::kernel::clear_upper_state();
        };
        // On-CPU time of about 2 GFLOP of products, as a rate (robust to a shared
        // machine; the thread's run-time counter is too coarse for a single small product).
        let reps = ((1usize << 30) / (n * n * n)).max(20);
        if let Some(t) = cpu_seconds(|| (0..reps).for_each(|_| run())) {
            let flop = 2.0 * (n * n * n) as f64 * reps as f64;
            println!(
                "CPU digits/gemm_square_f64/{n}: {:.1} GFLOP/s on one core",
                flop / t / 1e9
            );
        }
        g.bench_with_input(BenchmarkId::new("gemm_square_f64", n), &n, |b, _| {
            b.iter(&mut run)
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    avx_state,
    digits,
    p1_dense,
    p2_grid,
    variants,
    kernel_gemm,
    p3_grad,
    p4_wdl
);
criterion_main!(benches);
