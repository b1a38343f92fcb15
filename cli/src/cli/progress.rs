//! Progress bar on stderr, and the block runner that feeds it.
//!
//! The solvers run their whole iteration loop in one call, so to report progress the
//! command line cuts the run into blocks of iterations, each warm-started from the state
//! the previous block returned (the scalings, section 4.2). That is exactly what warm
//! starts are for; it costs one result extraction per block, so blocks grow until each
//! takes about half a second. Without a visible bar the run is a single call, identical
//! to calling the library directly.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use wassdl::{Barycenters, OtSolution, Real, Stop};

/// A solver result that reports its iteration count and final error.
pub trait Iterative {
    /// Iterations done by this call.
    fn iterations(&self) -> usize;
    /// Final error, if the solver computed one.
    fn error(&self) -> Option<f64>;
}

impl<T: Real> Iterative for OtSolution<T> {
    fn iterations(&self) -> usize {
        self.iterations
    }
    fn error(&self) -> Option<f64> {
        Some(self.error)
    }
}

impl<T: Real> Iterative for Barycenters<T> {
    fn iterations(&self) -> usize {
        self.iterations
    }
    fn error(&self) -> Option<f64> {
        self.error
    }
}

/// The bar, or nothing when quiet or when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar of `len` iterations labelled `label`.
    pub fn new(quiet: bool, len: usize, label: &str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} {elapsed_precise} [{wide_bar}] {pos}/{len} it, {per_sec}, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// Whether a bar is drawn (work may then be cut into blocks to feed it).
    pub fn visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Moves the bar to `pos` with the message `msg()` (not built when there is no bar).
    pub fn update(&self, pos: u64, msg: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
            bar.set_message(msg());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `solve` to the rule `stop`, in warm-started blocks when a bar is shown. `solve`
/// receives the rule for one block and the previous block's result. Returns the last
/// result and the total number of iterations.
pub fn run_blocks<S: Iterative>(
    stop: Stop,
    progress: &Progress,
    mut solve: impl FnMut(Stop, Option<&S>) -> wassdl::Result<S>,
) -> wassdl::Result<(S, usize)> {
    let Some(bar) = &progress.bar else {
        let s = solve(stop, None)?;
        let n = s.iterations();
        return Ok((s, n));
    };
    let (total, tol) = match stop {
        Stop::Iterations(l) => (l, None),
        Stop::Tolerance { tol, max_iter } => (max_iter, Some(tol)),
    };
    let (mut done, mut block) = (0usize, 10usize);
    let mut last: Option<S> = None;
    loop {
        let n = block.min(total - done).max(1);
        let rule = match tol {
            None => Stop::Iterations(n),
            Some(tol) => Stop::Tolerance { tol, max_iter: n },
        };
        let t0 = Instant::now();
        let s = solve(rule, last.as_ref()).map_err(|e| match e {
            // The library counts from the start of the block; report the run's count.
            wassdl::Error::Numerical {
                solver,
                iteration,
                message,
            } => wassdl::Error::Numerical {
                solver,
                iteration: iteration + done,
                message,
            },
            e => e,
        })?;
        done += s.iterations();
        bar.set_position(done as u64);
        if let Some(e) = s.error() {
            bar.set_message(format!("error {e:.3e}"));
        }
        let converged = tol.is_some_and(|t| s.error().is_some_and(|e| e < t));
        let stalled = s.iterations() == 0;
        last = Some(s);
        if converged || stalled || done >= total {
            break;
        }
        if t0.elapsed() < Duration::from_millis(500) {
            block = block.saturating_mul(2);
        }
    }
    let s = last.expect("at least one block ran");
    Ok((s, done))
}
