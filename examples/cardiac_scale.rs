//! Section 5.2 of the paper at its real size: a dictionary of 4 atoms learned from 13
//! frames of 272 × 240 pixels of a beating heart, and the check of Figure 10 that the
//! barycentric path of consecutive frames closes into a cycle.
//!
//! Data: the paper's reconstructed MRI sequence is not available; this example draws a
//! synthetic one of the same size: a ring (the myocardium) whose radius and thickness
//! beat with period 13 frames, plus a blob (an atrium) that swells and shrinks a quarter
//! period out of phase, on a faint uniform background (`1e-4` of the mass, so that no
//! pixel is exactly zero). Frame `k` is the phase `2πk/13`, so frame 12 is followed by
//! frame 0 in the cycle.
//!
//! Settings of section 5.2: S = 4 atoms initialized constant (`1/N`), weights random,
//! γ = 2 px² (`K = exp(-|i-j|²/γ)`, the authors' convention), ζ = N/(100·M), quadratic
//! loss, L = 25 plain Sinkhorn iterations, 200 L-BFGS iterations (`--iters` changes it),
//! `f64`; with `--f32`, `f32`; with `--mixed`, `f32` until its line searches stall, then
//! `f64` (200 iterations in 650 s on 2 cores with `--threads 2`, docs/benchmarks.md).
//!
//! Cycle check (Figure 10): with `w_k` the learned weights of frame `k`, the closing step
//! `‖w_12 − w_0‖` is compared with the mean step `‖w_{k+1} − w_k‖` between consecutive
//! frames (`closure_ratio`; near 1 when the path closes like any other step, much larger
//! when it is an open curve whose ends are far apart), and the path must actually move:
//! `spread` is the largest distance of any `w_k` from `w_0`, which has to be several
//! mean steps for the path to be a loop rather than a point, and `loop_area`, the area
//! the projected path (below) encloses in squared mean steps (a regular 13-gon: 13.4),
//! near 0 when the path goes out and comes back the same way.
//!
//! The quarter period matters: with ring and blob both driven by `cos(2πk/13)` (as a
//! first version of this example had them), frame `13 − k` equals frame `k` and no
//! dictionary can give a loop; the learned path went out and back along one edge of the
//! simplex (`loop_area` 0).
//!
//! Output: a progress line every few iterations on stderr (iteration, loss, evaluations,
//! elapsed), the peak resident memory (`VmHWM` of `/proc/self/status`), the frames and
//! their reconstructions, the atoms, and the barycentric path projected on the plane
//! (the 4 vertices of the simplex at the corners of a square).
//!
//! Run: `cargo run --release -p wassdl-cli --example cardiac_scale -- [--f32 | --mixed
//! [--f32-iters K]] [--iters N] [--threads N] [--unit-first-step] [--zeta Z] [--seed S]
//! [--cyclic-init] [--downsample K] [--quick]`.

#[path = "common/mod.rs"]
pub mod common;

use common::{result_line, Settings};
use std::time::Instant;
use wassdl::dictionary::{fit, AtomInit, IterationInfo, Observer, WdlConfig, WeightInit};
use wassdl::lbfgs::Control;
use wassdl::{BarycenterConfig, Batch, Grid, GridKernel, GridUnits, Loss, Real, Result};
use wassdl_cli::figures::{save_image_grid, save_line_plot};

/// Frames of the sequence (the paper's 13).
const FRAMES: usize = 13;
/// Atoms (the paper's 4).
const ATOMS: usize = 4;

/// What the example measured.
#[derive(Clone, Debug)]
pub struct CardiacMetrics {
    /// Final objective.
    pub loss: f64,
    /// L-BFGS iterations run.
    pub iterations: u64,
    /// Objective-and-gradient evaluations.
    pub evaluations: usize,
    /// Seconds spent in the fit.
    pub fit_seconds: f64,
    /// Peak resident memory of the process, MiB (`VmHWM`; 0 where `/proc` is missing).
    pub peak_mib: f64,
    /// `‖w_12 − w_0‖` over the mean consecutive step (see the module docs).
    pub closure_ratio: f64,
    /// Largest `‖w_k − w_0‖` over the mean consecutive step.
    pub spread: f64,
    /// Area enclosed by the projected path, in squared mean (projected) steps.
    pub loop_area: f64,
}

impl CardiacMetrics {
    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        result_line(&[
            ("loss", self.loss),
            ("iterations", self.iterations as f64),
            ("evaluations", self.evaluations as f64),
            ("fit_seconds", self.fit_seconds),
            ("peak_mib", self.peak_mib),
            ("closure_ratio", self.closure_ratio),
            ("spread", self.spread),
            ("loop_area", self.loop_area),
        ])
    }
}

/// The precision the fit is computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// `f64` throughout (the default).
    F64,
    /// `f32` throughout (`--f32`).
    F32,
    /// `f32` until an iteration stalls (more than 4 evaluations for a relative decrease
    /// below 10⁻⁴) or for at most `f32_iters` iterations (`--mixed`, `--f32-iters K`,
    /// default the whole budget), then `f64` from the atoms and weights reached. Near
    /// convergence the `f32` objective and gradient are too coarse for the line searches,
    /// which then spend tens of evaluations per iteration; the `f64` stage starts a fresh
    /// L-BFGS there.
    Mixed {
        /// Iterations done in `f32`.
        f32_iters: u64,
    },
}

/// Options beyond the common ones.
#[derive(Clone, Debug)]
pub struct Options {
    /// Precision of the fit.
    pub precision: Precision,
    /// L-BFGS iterations (default 200, 3 with `--quick`), over all stages.
    pub iters: Option<u64>,
    /// Threads per kernel application (`--threads N`, default 1): the grid kernel
    /// splits an application over `N` scoped threads above its work threshold.
    pub threads: usize,
    /// L-BFGS's first step `1` instead of `1/‖∇G‖` (`--unit-first-step`, for comparison;
    /// see `LbfgsConfig::scale_first_step`).
    pub unit_first_step: bool,
    /// The weight scale ζ instead of the paper's `N/(100 M)` (`--zeta`).
    pub zeta: Option<f64>,
    /// Seed of the random weights (`--seed`, default 10).
    pub seed: Option<u64>,
    /// Weights initialized on the cycle ([`cyclic_weights`], `--cyclic-init`) instead of
    /// at random (the paper's setting).
    pub cyclic_init: bool,
    /// Frames of `272/k × 240/k` pixels (`--downsample k`; `--quick` is 8).
    pub downsample: Option<usize>,
}

impl Default for Options {
    /// The paper's settings in `f64` on one thread per kernel application.
    fn default() -> Self {
        Options {
            precision: Precision::F64,
            iters: None,
            threads: 1,
            unit_first_step: false,
            zeta: None,
            seed: None,
            cyclic_init: false,
            downsample: None,
        }
    }
}

/// Weights that go once around the cycle: frame `k` (phase `θ = 2πk/13`) puts
/// `max(0, cos(θ − sπ/2)) + 0.05` on atom `s`, normalized (`S × M`, column-major). An
/// initialization for the experiment of docs/benchmarks.md ("Figure 10: local minima"),
/// not the paper's.
pub fn cyclic_weights() -> Vec<f64> {
    (0..FRAMES)
        .flat_map(|k| {
            let th = 2.0 * std::f64::consts::PI * k as f64 / FRAMES as f64;
            let v: Vec<f64> = (0..ATOMS)
                .map(|s| (th - s as f64 * std::f64::consts::FRAC_PI_2).cos().max(0.0) + 0.05)
                .collect();
            let t: f64 = v.iter().sum();
            v.into_iter().map(move |x| x / t)
        })
        .collect()
}

/// Frame `k` of the synthetic sequence, `h × w`, row-major, summing to 1.
pub fn frame(k: usize, h: usize, w: usize) -> Vec<f64> {
    // periodic by construction: sin(2π) is not exactly 0 in floating point
    let phase = 2.0 * std::f64::consts::PI * (k % FRAMES) as f64 / FRAMES as f64;
    let s = h.min(w) as f64;
    // The ring beats around its centre; the blob sits above-right and swells a quarter
    // period later, so that the sequence is a loop in (cos, sin), not a back-and-forth.
    let (cy, cx) = (0.55 * h as f64, 0.45 * w as f64);
    let radius = s * (0.22 + 0.05 * phase.cos());
    let thick = s * (0.045 + 0.015 * phase.cos());
    let (by, bx) = (0.25 * h as f64, 0.68 * w as f64);
    let blob = s * (0.07 - 0.03 * phase.sin());
    let mut img: Vec<f64> = (0..h * w)
        .map(|p| {
            let (y, x) = ((p / w) as f64, (p % w) as f64);
            let r = ((y - cy).powi(2) + (x - cx).powi(2)).sqrt();
            let ring = (-((r - radius) / thick).powi(2)).exp();
            let b = 0.8 * (-((y - by).powi(2) + (x - bx).powi(2)) / (blob * blob)).exp();
            ring + b
        })
        .collect();
    let total: f64 = img.iter().sum();
    let bg = 1e-4 / (h * w) as f64;
    for v in &mut img {
        *v = (1.0 - 1e-4) * *v / total + bg;
    }
    img
}

/// Peak resident memory in MiB from `/proc/self/status` (`VmHWM`), 0 if unavailable.
pub fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Prints a progress line every `every` iterations (and the first), to stderr.
struct ProgressLine {
    every: u64,
    total: u64,
    quiet: bool,
    start: Instant,
    /// Iterations and evaluations of the earlier stages of a mixed-precision fit.
    done: (u64, usize),
    precision: &'static str,
    /// Stop at the first stalled iteration ([`stalled`]): the `f32` stage of `--mixed`.
    stop_on_stall: bool,
    /// (evaluations, loss) at the previous iteration.
    last: Option<(usize, f64)>,
}

/// Evaluations above which an iteration counts as a stall if it also lowered the loss by
/// less than [`STALL_DECREASE`] of its value. More-Thuente accepts L-BFGS's unit step at
/// the first evaluation on most iterations (1-3 evaluations); in the flat `f32` tail of the
/// cardiac fit the line searches took 10-25 evaluations per iteration for relative
/// decreases of 10⁻⁵ (`docs/benchmarks.md`), while the costly early iterations (up to 8
/// evaluations) lower the loss by 10⁻³ and more.
const STALL_EVALUATIONS: usize = 4;
/// See [`STALL_EVALUATIONS`].
const STALL_DECREASE: f64 = 1e-4;

/// Whether an iteration that took `evals` evaluations from `prev` to `loss` is a stall.
pub fn stalled(evals: usize, prev: f64, loss: f64) -> bool {
    evals > STALL_EVALUATIONS && prev - loss < STALL_DECREASE * prev
}

impl Observer for ProgressLine {
    fn observe(&mut self, it: &IterationInfo) -> Control {
        let iteration = it.iteration + self.done.0;
        if !self.quiet && (iteration % self.every == 0 || iteration == self.total) {
            eprintln!(
                "  it {:>4}/{} ({})  loss {:.6e}  |grad| {:.2e}  evals {:>4}  {:.1} s  peak {:.0} MiB",
                iteration,
                self.total,
                self.precision,
                it.loss,
                it.grad_norm,
                it.evaluations + self.done.1,
                self.start.elapsed().as_secs_f64(),
                peak_mib()
            );
        }
        let last = self.last.replace((it.evaluations, it.loss));
        match last {
            Some((e, prev)) if self.stop_on_stall && stalled(it.evaluations - e, prev, it.loss) => {
                if !self.quiet {
                    eprintln!(
                        "  it {iteration:>4}: {} evaluations for a relative decrease of {:.1e}: \
                         the {} objective is flat to its rounding, switching",
                        it.evaluations - e,
                        (prev - it.loss) / prev,
                        self.precision
                    );
                }
                Control::Stop
            }
            _ => Control::Continue,
        }
    }
}

/// Euclidean distance between the weight columns `a` and `b`.
fn dist<T: Real>(w: &Batch<T>, a: usize, b: usize) -> f64 {
    (0..w.rows())
        .map(|s| (w.get(s, a).to_f64_() - w.get(s, b).to_f64_()).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The path of Figure 10: the weights of frames `0, 1, …, 12, 0` projected on the plane,
/// the simplex's vertices at the corners of the unit square. The fit numbers its atoms
/// arbitrarily: a loop through them in the order 1, 4, 2, 3 drawn with atom `s` at corner
/// `s` crosses itself (a bow tie, whose signed areas cancel). The corners are therefore
/// assigned in the order, of the 24, whose path encloses the largest area ([`loop_area`]).
pub fn projected_path(w: &Batch<f64>) -> Vec<(f64, f64)> {
    let mut best: Option<(f64, Vec<(f64, f64)>)> = None;
    for code in 0..24 {
        // The permutation number `code` of the 4 corners (factorial number system).
        let mut free = vec![0usize, 1, 2, 3];
        let mut c = code;
        let corner_of: Vec<usize> = (1..=4)
            .rev()
            .map(|n| {
                let pick = free.remove(c % n);
                c /= n;
                pick
            })
            .collect();
        let path = path_with(w, &corner_of);
        let area = loop_area(&path);
        if best.as_ref().is_none_or(|(a, _)| area > *a) {
            best = Some((area, path));
        }
    }
    best.expect("24 orders").1
}

/// The path with atom `s` at corner `corner_of[s % 4]` of the unit square.
fn path_with(w: &Batch<f64>, corner_of: &[usize]) -> Vec<(f64, f64)> {
    let corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)];
    (0..=w.cols())
        .map(|k| {
            let j = k % w.cols();
            (0..w.rows()).fold((0.0, 0.0), |(x, y), s| {
                let (cx, cy) = corners[corner_of[s % 4]];
                let a = w.get(s, j);
                (x + a * cx, y + a * cy)
            })
        })
        .collect()
}

/// The area the closed polygon `path` (last point = first) encloses (shoelace), over its
/// mean side squared.
pub fn loop_area(path: &[(f64, f64)]) -> f64 {
    let sides = path.len() - 1;
    let area = 0.5
        * path
            .windows(2)
            .map(|p| p[0].0 * p[1].1 - p[1].0 * p[0].1)
            .sum::<f64>()
            .abs();
    let mean = path
        .windows(2)
        .map(|p| ((p[1].0 - p[0].0).powi(2) + (p[1].1 - p[0].1).powi(2)).sqrt())
        .sum::<f64>()
        / sides as f64;
    area / (mean * mean)
}

/// The cycle check of Figure 10: (closure ratio, spread), both in mean steps.
pub fn cycle_check<T: Real>(w: &Batch<T>) -> (f64, f64) {
    let m = w.cols();
    let mean_step = (0..m - 1).map(|k| dist(w, k, k + 1)).sum::<f64>() / (m - 1) as f64;
    let closure = dist(w, m - 1, 0) / mean_step;
    let spread = (1..m).map(|k| dist(w, k, 0)).fold(0.0, f64::max) / mean_step;
    (closure, spread)
}

/// The sequence as a batch in precision `T`, each column renormalized there so that it
/// is in the simplex of that precision.
fn frames_in<T: Real>(h: usize, w: usize) -> Batch<T> {
    let frames: Vec<Vec<f64>> = (0..FRAMES).map(|k| frame(k, h, w)).collect();
    let mut d = Batch::<T>::from_fn(h * w, FRAMES, |i, j| T::of(frames[j][i]));
    for j in 0..FRAMES {
        let s: f64 = d.col(j).iter().map(|v| v.to_f64_()).sum();
        for v in d.col_mut(j) {
            *v = T::of(v.to_f64_() / s);
        }
    }
    d
}

/// `b`'s columns in `f64`, renormalized there: the given initialization of the next stage
/// (an `f32` simplex column sums to 1 only to `f32` rounding). An entry that underflowed
/// to 0 in `T` (a weight `exp(ζβ̃)` at ζ = 50 does) becomes `T`'s smallest normal number,
/// the least it could have been: a softmax cannot represent 0, and a weight of 10⁻³⁸
/// changes the barycenter's geometric mean by about 10⁻³⁶.
fn simplex_f64<T: Real>(b: &Batch<T>) -> Vec<f64> {
    let tiny = T::min_positive_value().to_f64_();
    let mut v = b.cast::<f64>().map(|x| x.max(tiny));
    for j in 0..v.cols() {
        let s: f64 = v.col(j).iter().sum();
        v.col_mut(j).iter_mut().for_each(|x| *x /= s);
    }
    v.as_slice().to_vec()
}

/// What a stage hands on, in `f64`.
struct Stage {
    atoms: Batch<f64>,
    weights: Batch<f64>,
    reconstruction: Batch<f64>,
    loss: f64,
    iterations: u64,
    evaluations: usize,
    termination: wassdl::lbfgs::Termination,
}

/// `cfg.lbfgs.max_iter` L-BFGS iterations in precision `T` from `cfg`'s initialization.
fn stage<T: Real>(
    (h, w): (usize, usize),
    threads: usize,
    cfg: &WdlConfig,
    obs: &mut ProgressLine,
) -> Result<Stage> {
    let data = frames_in::<T>(h, w);
    let grid = Grid::new(&[h, w])?.with_units(GridUnits::Pixel);
    let par = if threads > 1 {
        faer::Par::rayon(threads)
    } else {
        faer::Par::Seq
    };
    let kernel = GridKernel::<T>::new(&grid, T::of(2.0))?.with_par(par);
    println!(
        "stage: {} iterations in {}; kernel: {}",
        cfg.lbfgs.max_iter,
        T::NAME,
        wassdl::Kernel::describe(&kernel)
    );
    obs.precision = T::NAME;
    let learned = fit(&kernel, &data, cfg, obs)?;
    Ok(Stage {
        atoms: learned.atoms.cast(),
        weights: learned.weights.cast(),
        reconstruction: learned.reconstruction.cast(),
        loss: learned.loss,
        iterations: learned.iterations,
        evaluations: learned.evaluations,
        termination: learned.termination,
    })
}

/// Runs the experiment in the precision `opts` asks for and writes its figures.
pub fn run_with(settings: &Settings, opts: &Options) -> Result<CardiacMetrics> {
    let k = opts
        .downsample
        .unwrap_or(if settings.quick { 8 } else { 1 })
        .max(1);
    let (h, w) = (272 / k, 240 / k);
    let iters = opts.iters.unwrap_or(if settings.quick { 3 } else { 200 });
    let n = h * w;
    let zeta = opts.zeta.unwrap_or(n as f64 / (100.0 * FRAMES as f64));
    let mut cfg = WdlConfig::new(ATOMS)
        .barycenter(BarycenterConfig::iterations(25))
        .loss(Loss::Quadratic)
        .zeta(zeta)
        .atom_init(AtomInit::Constant)
        .weight_init(if opts.cyclic_init {
            WeightInit::Given(cyclic_weights())
        } else {
            WeightInit::Random
        })
        .seed(opts.seed.unwrap_or(10))
        .max_iter(iters);
    // At ζ = N/(100 M) the initial gradient norm is about 1e-6: a first step of 1 would
    // make the first line search extrapolate over tens of evaluations.
    cfg.lbfgs.scale_first_step = !opts.unit_first_step;
    println!(
        "cardiac_scale: {FRAMES} frames {h}x{w}, S = {ATOMS}, L = 25, γ = 2 px², ζ = {zeta:.3}, \
         {iters} L-BFGS iterations, {}, {} thread(s) per kernel application",
        match opts.precision {
            Precision::F64 => "f64".to_string(),
            Precision::F32 => "f32".to_string(),
            Precision::Mixed { f32_iters } if f32_iters >= iters =>
                "f32 until its line searches stall, then f64".to_string(),
            Precision::Mixed { f32_iters } =>
                format!("f32 until its line searches stall or for {f32_iters} iterations, then f64"),
        },
        opts.threads.max(1),
    );
    let t0 = Instant::now();
    let mut obs = ProgressLine {
        every: if iters <= 20 { 1 } else { 10 },
        total: iters,
        quiet: !settings.progress,
        start: t0,
        done: (0, 0),
        precision: "",
        stop_on_stall: false,
        last: None,
    };
    let size = (h, w);
    let learned = match opts.precision {
        Precision::F64 => stage::<f64>(size, opts.threads, &cfg, &mut obs)?,
        Precision::F32 => stage::<f32>(size, opts.threads, &cfg, &mut obs)?,
        Precision::Mixed { f32_iters } => {
            obs.stop_on_stall = true;
            let first = stage::<f32>(
                size,
                opts.threads,
                &cfg.clone().max_iter(f32_iters.min(iters)),
                &mut obs,
            )?;
            (obs.stop_on_stall, obs.last) = (false, None);
            let rest = iters - first.iterations;
            if rest == 0 {
                first
            } else {
                // A fresh L-BFGS in f64 from the atoms and weights reached in f32.
                let cfg64 = cfg
                    .clone()
                    .atom_init(AtomInit::Given(simplex_f64(&first.atoms)))
                    .weight_init(WeightInit::Given(simplex_f64(&first.weights)))
                    .max_iter(rest);
                obs.done = (first.iterations, first.evaluations);
                let second = stage::<f64>(size, opts.threads, &cfg64, &mut obs)?;
                Stage {
                    iterations: first.iterations + second.iterations,
                    evaluations: first.evaluations + second.evaluations,
                    ..second
                }
            }
        }
    };
    let fit_seconds = t0.elapsed().as_secs_f64();
    let peak = peak_mib();
    println!(
        "fit: {} iterations, {} evaluations in {fit_seconds:.1} s ({:.2} s per evaluation), \
         loss {:.4e}, {}; peak memory {peak:.0} MiB (VmHWM)",
        learned.iterations,
        learned.evaluations,
        fit_seconds / learned.evaluations.max(1) as f64,
        learned.loss,
        learned.termination
    );
    let (closure_ratio, spread) = cycle_check(&learned.weights);
    let area = loop_area(&projected_path(&learned.weights));
    println!(
        "Figure 10 check: closing step {closure_ratio:.2} mean steps, path spread \
         {spread:.2} mean steps, enclosed area {area:.2} squared mean steps"
    );
    println!("weights (frame: atom 1..{ATOMS}):");
    for j in 0..FRAMES {
        let w: Vec<String> = (0..ATOMS)
            .map(|s| format!("{:.4}", learned.weights.get(s, j)))
            .collect();
        println!("  {j:>2}: {}", w.join(" "));
    }
    let data = frames_in::<f64>(h, w);

    // Figures: frames and reconstructions, atoms, the barycentric path.
    let f64col = |b: &Batch<f64>, j: usize| -> Vec<f64> { b.col(j).to_vec() };
    let picks = [0, 3, 6, 9, 12];
    let mut imgs: Vec<Vec<f64>> = picks.iter().map(|&j| f64col(&data, j)).collect();
    imgs.extend(picks.iter().map(|&j| f64col(&learned.reconstruction, j)));
    let refs: Vec<&[f64]> = imgs.iter().map(Vec::as_slice).collect();
    let titles: Vec<String> = picks
        .iter()
        .map(|j| format!("frame {j}"))
        .chain(picks.iter().map(|j| format!("recon. {j}")))
        .collect();
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    save_image_grid(
        settings.path("frames.png"),
        &refs,
        h,
        w,
        picks.len(),
        &titles,
    )?;
    let atoms: Vec<Vec<f64>> = (0..ATOMS).map(|s| f64col(&learned.atoms, s)).collect();
    let refs: Vec<&[f64]> = atoms.iter().map(Vec::as_slice).collect();
    save_image_grid(
        settings.path("atoms.png"),
        &refs,
        h,
        w,
        ATOMS,
        &["atom 1", "atom 2", "atom 3", "atom 4"],
    )?;
    let path = projected_path(&learned.weights);
    let square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)];
    save_line_plot(
        settings.path("fig10_barycentric_path.png"),
        "Figure 10: barycentric path of consecutive frames",
        "x",
        "y",
        // The square first: a path along its edges (one-hot weights moving from atom to
        // neighbouring atom) would be hidden under it otherwise.
        &[
            ("simplex vertices", &square),
            ("path (frame 0 repeated)", &path),
        ],
    )?;
    Ok(CardiacMetrics {
        loss: learned.loss,
        iterations: learned.iterations,
        evaluations: learned.evaluations,
        fit_seconds,
        peak_mib: peak,
        closure_ratio,
        spread,
        loop_area: area,
    })
}

/// [`run_with`] in `f64` with the default iteration count.
pub fn run(settings: &Settings) -> Result<CardiacMetrics> {
    run_with(settings, &Options::default())
}

/// The example's command line: the common options and its own.
#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    common: common::Args,
    /// The fit in `f32` throughout.
    #[arg(long, conflicts_with = "mixed")]
    f32: bool,
    /// `f32` until its line searches stall (or for `--f32-iters`), then `f64`.
    #[arg(long)]
    mixed: bool,
    /// Most iterations done in `f32` by `--mixed` (default: all of them).
    #[arg(long)]
    f32_iters: Option<u64>,
    /// L-BFGS iterations (default 200, 3 with `--quick`).
    #[arg(long)]
    iters: Option<u64>,
    /// Threads per kernel application.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// L-BFGS's first step `1` instead of `1/‖∇G‖`.
    #[arg(long)]
    unit_first_step: bool,
    /// The weight scale ζ (default the paper's `N/(100 M)`).
    #[arg(long)]
    zeta: Option<f64>,
    /// Seed of the random weights (default 10).
    #[arg(long)]
    seed: Option<u64>,
    /// Weights initialized on the cycle instead of at random.
    #[arg(long)]
    cyclic_init: bool,
    /// Frames of 272/k × 240/k pixels (`--quick`: 8).
    #[arg(long)]
    downsample: Option<usize>,
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let settings = Settings {
        quick: cli.common.quick,
        out_dir: cli
            .common
            .out
            .unwrap_or_else(|| std::path::Path::new("out").join("cardiac_scale")),
        progress: !cli.common.quiet,
    };
    let precision = match (cli.f32, cli.mixed) {
        (true, _) => Precision::F32,
        (false, true) => Precision::Mixed {
            f32_iters: cli.f32_iters.unwrap_or(u64::MAX),
        },
        (false, false) => Precision::F64,
    };
    match run_with(
        &settings,
        &Options {
            precision,
            iters: cli.iters,
            threads: cli.threads,
            unit_first_step: cli.unit_first_step,
            zeta: cli.zeta,
            seed: cli.seed,
            cyclic_init: cli.cyclic_init,
            downsample: cli.downsample,
        },
    ) {
        Ok(m) => {
            println!("figures in {}", settings.out_dir.display());
            println!("{}", m.result_line());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cardiac_scale: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
