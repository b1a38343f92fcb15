//! What every iterative solver of the crate shares: the stopping rule ([`Stop`]) and its
//! validation, the marginal error the tolerance is compared with, the convergence check
//! of an inner solve, and the one threading policy.
//!
//! **Threading.** The caller chooses the parallelism with a [`faer::Par`] (`Par::Seq`,
//! or `Par::rayon(k)`: at most `k` threads, `0` for every core); a piece of work smaller
//! than [`PAR_MIN_WORK`] units (multiply-adds or exponentials) stays on the calling thread
//! whatever the setting, because handing work to another thread and waiting for it costs
//! tens of microseconds on an idle machine and up to milliseconds on a loaded one.
//! [`threads`] turns the two into a thread count and [`run_parts`] runs independent parts
//! on the calling thread and the crate's persistent worker threads, results in order, so
//! a result never depends on the number of threads.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;
use crate::validate;
use faer::Par;

/// When to stop the iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Stop {
    /// Exactly `L` iterations (what learning differentiates, eq. 10).
    Iterations(usize),
    /// Until the error falls below `tol`, at most `max_iter` iterations. The error is the
    /// largest L¹ marginal violation `‖a_s ⊙ K b_s − d_s‖₁` over atoms and barycenters
    /// (balanced), or the relative sup-norm change of the barycenter (unbalanced, as POT).
    Tolerance {
        /// Threshold on the error.
        tol: f64,
        /// Iteration cap.
        max_iter: usize,
    },
}

impl Stop {
    /// Checks the rule: `L ≥ 1`, `tol` finite and `> 0`, `max_iter ≥ 1`; errors name the
    /// field (`iterations`, `tol`, `max_iter`).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Stop::Iterations(0) => Err(Error::InvalidParameter {
                arg: "iterations",
                requirement: ">= 1",
                value: 0.0,
            }),
            Stop::Tolerance { tol, .. } if !(tol.is_finite() && tol > 0.0) => {
                validate::positive("tol", tol)
            }
            Stop::Tolerance { max_iter: 0, .. } => Err(Error::InvalidParameter {
                arg: "max_iter",
                requirement: ">= 1",
                value: 0.0,
            }),
            _ => Ok(()),
        }
    }

    /// The tolerance (`None` for a fixed count) and the iteration cap.
    pub(crate) fn parts(&self) -> (Option<f64>, usize) {
        match *self {
            Stop::Iterations(l) => (None, l),
            Stop::Tolerance { tol, max_iter } => (Some(tol), max_iter),
        }
    }

    /// The iteration cap (`L` for a fixed count).
    pub(crate) fn max_iter(&self) -> usize {
        self.parts().1
    }

    /// An inner solve that stopped on its iteration cap before its tolerance has a plan
    /// off its marginals: an error (naming `solver`) rather than a silently wrong result.
    /// A NaN error fails too. A fixed count always passes. Parameter names are
    /// backticked, so that front ends can rename them to their own options.
    pub(crate) fn check_converged(
        &self,
        error: f64,
        iterations: usize,
        solver: &'static str,
    ) -> Result<()> {
        match *self {
            Stop::Tolerance { tol, max_iter } if error.is_nan() || error >= tol => {
                Err(Error::Numerical {
                    solver,
                    iteration: iterations,
                    message: format!(
                        "the inner Sinkhorn did not converge: marginal error {error:e} > \
                         `tol` = {tol:e} after `max_iter` = {max_iter} iterations; raise \
                         `max_iter` or `reg`"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The marginal error of a scaling solve, `max_col ‖x ⊙ y − d‖₁` (`x ⊙ y` is `a ⊙ K b`
/// for a barycenter's atom marginals, eq. 6-8, or `v ⊙ Kᵀ u` for the second marginal of
/// an OT plan, eq. 4), or with log inputs (`log`) `max_col ‖exp(x + y) − d‖₁` with
/// `exp(−∞) = 0`. The max over columns propagates NaN, so that a diverged column fails
/// the `err < tol` test instead of reading as 0.
pub(crate) fn marginal_error<T: Real>(x: &Batch<T>, y: &Batch<T>, d: &Batch<T>, log: bool) -> f64 {
    validate::nan_max((0..d.cols()).map(|j| {
        x.col(j)
            .iter()
            .zip(y.col(j))
            .zip(d.col(j))
            .map(|((&x, &y), &di)| {
                let r = if log {
                    if x == T::neg_infinity() || y == T::neg_infinity() {
                        T::zero()
                    } else {
                        (x + y).exp()
                    }
                } else {
                    x * y
                };
                (r - di).abs().to_f64_()
            })
            .sum::<f64>()
    }))
}

/// Work (in multiply-adds) below which a computation stays on one thread even when
/// several are allowed (see the module docs).
pub(crate) const PAR_MIN_WORK: usize = 1 << 24;

/// What one exponential counts in [`PAR_MIN_WORK`]'s units: the vectorized `exp` is a
/// polynomial of about a dozen multiply-adds plus its range reduction. Counting it as one
/// kept every log-domain and point-cloud application of the benchmarks on one thread
/// (the divergence at N = 2000 ran 1.6× slower than with two threads in the 2026-12-06
/// sitting).
pub(crate) const EXP_WORK: usize = 16;

/// Threads for one computation of `work` units under the caller's setting `par`: one for
/// `Par::Seq` or work below [`PAR_MIN_WORK`], else the number `Par::Rayon` holds.
pub(crate) fn threads(par: Par, work: usize) -> usize {
    threads_above(par, work, PAR_MIN_WORK)
}

/// [`threads`] with another threshold than [`PAR_MIN_WORK`].
pub(crate) fn threads_above(par: Par, work: usize, min_work: usize) -> usize {
    match par {
        Par::Rayon(n) if work >= min_work => n.get(),
        _ => 1,
    }
}

/// The threshold of a scaling-domain grid application (multiply-adds of its GEMMs, all
/// axes) and of the barycenter's fused elementwise step, lower than [`PAR_MIN_WORK`]:
/// such work starts its threads once and has nothing else to wait for. At this value a
/// 128×128 grid with 4 images (16.8·10⁶ multiply-adds per application, about 0.6 ms on
/// one core) goes on two threads, whose start costs 55 µs on the benchmark VM; 64×64
/// (2.1·10⁶) stays on one, as 2²⁰ (64×64 on two threads) measured 1.5-2.4× slower there.
/// That two threads pay at 128×128 was not measured on two free cores (see
/// `docs/benchmarks.md`, "P2 scaling path, fourth sitting").
pub(crate) const GEMM_PAR_MIN_WORK: usize = 1 << 22;

/// The caller's thread count as a [`Par`]: `1` sequential, `0` every core, `k` at most
/// `k` threads (for configurations that store a plain count, e.g. to serialize it).
pub(crate) fn par_from_count(threads: usize) -> Par {
    match threads {
        1 => Par::Seq,
        k => Par::rayon(k),
    }
}

/// The crate's worker threads: one fewer than the cores, since the thread that hands out
/// the parts computes one of them. Built at the first parallel call and kept, so that a
/// thread's caches outlive one call: faer's GEMM keeps its packing buffers in
/// thread-local storage, and a thread started per call (scoped threads did that) faults a
/// fresh buffer in at its first GEMM, about half a megabyte per start on the 256×256
/// grid, 0.4 ms of system time per kernel application (see `docs/benchmarks.md`, "P2:
/// persistent threads"). Not rayon's global pool, which has a thread per core: its idle
/// thread spins beside the caller's part and cost 8% of a two-thread cardiac-size fit
/// there. `None` when the threads cannot be started, or in a child process forked after
/// they were (the child has none of the parent's threads, so a job handed to the pool
/// would never run: multiprocessing's default on Linux); then parts run on scoped threads.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<(u32, rayon::ThreadPool)>> = std::sync::OnceLock::new();
    let (pid, pool) = POOL
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(cores.saturating_sub(1).max(1))
                .thread_name(|i| format!("wassdl-{i}"))
                .build()
                .ok()?;
            Some((std::process::id(), pool))
        })
        .as_ref()?;
    (*pid == std::process::id()).then_some(pool)
}

/// Runs `f` on every part (independent pieces of one computation: disjoint slices of the
/// output, ranges of indices), the first on the calling thread and the others as jobs of
/// the crate's persistent worker threads ([`pool`]), and returns the results in the order
/// of the parts. The one place the crate hands work to other threads; a panic in a part
/// reaches the caller (the part's own panic from the pool, "a scoped thread panicked"
/// from the scoped fallback). When the workers are busy (several callers at once), a part
/// waits for a free worker; the results are the same.
pub(crate) fn run_parts<P: Send, R: Send>(
    parts: impl IntoIterator<Item = P>,
    f: impl Fn(P) -> R + Sync,
) -> Vec<R> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    let rest: Vec<P> = parts.collect();
    if rest.is_empty() {
        return vec![f(first)];
    }
    let f = &f;
    let mut slots: Vec<Option<R>> = rest.iter().map(|_| None).collect();
    let mut head = None;
    match pool() {
        Some(pool) => pool.in_place_scope(|s| {
            for (p, slot) in rest.into_iter().zip(slots.iter_mut()) {
                s.spawn(move |_| *slot = Some(f(p)));
            }
            head = Some(f(first));
        }),
        None => std::thread::scope(|s| {
            for (p, slot) in rest.into_iter().zip(slots.iter_mut()) {
                s.spawn(move || *slot = Some(f(p)));
            }
            head = Some(f(first));
        }),
    }
    // Both scopes return after every part has run, or panic on the caller if one did.
    let mut out = Vec::with_capacity(slots.len() + 1);
    out.extend(head);
    out.extend(slots.into_iter().map(|r| r.expect("every part ran")));
    out
}

/// Runs `f` on every part on `threads` threads (the caller and `threads − 1` pool jobs)
/// that take the next part from a shared queue as they finish the previous one, and
/// returns the results in the order of the parts. With more parts than threads, a thread
/// slowed down by another process on its core takes fewer parts instead of holding up the
/// whole computation, which an even split per thread cannot do. Which thread computes a
/// part changes nothing in its result.
pub(crate) fn run_parts_queued<P: Send, R: Send>(
    threads: usize,
    parts: impl Iterator<Item = P> + Send,
    f: impl Fn(P) -> R + Sync,
) -> Vec<R> {
    let queue = std::sync::Mutex::new(parts.enumerate());
    let work = || {
        let mut done = Vec::new();
        loop {
            // The lock is held only to take a part, never while computing one.
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            match next {
                Some((i, p)) => done.push((i, f(p))),
                None => return done,
            }
        }
    };
    let mut all: Vec<(usize, R)> = run_parts(0..threads.max(1), |_| work())
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// Parts per thread when [`in_parts`] runs on several: enough for a thread that shares
/// its core with another process to hand most of the parts to the other thread.
pub(crate) const PARTS_PER_THREAD: usize = 4;

/// Part length for cutting `len` items in at most `threads` parts at multiples of `unit`
/// (the last part may be shorter).
pub(crate) fn part_len(len: usize, unit: usize, threads: usize) -> usize {
    let unit = unit.max(1);
    let units = len.div_ceil(unit).max(1);
    units.div_ceil(threads.clamp(1, units)) * unit
}

/// `f(0), …, f(n − 1)` in order, spread over [`threads`]`(par, work)` threads (at most
/// `n`) by stride, for independent tasks of `work` units in total (datasets of a learner).
pub(crate) fn par_map<R: Send>(
    par: Par,
    work: usize,
    n: usize,
    f: impl Fn(usize) -> R + Sync,
) -> Vec<R> {
    let th = threads(par, work).clamp(1, n.max(1));
    if th == 1 {
        return (0..n).map(f).collect();
    }
    let f = &f;
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    let strided = run_parts(0..th, |t| {
        (t..n).step_by(th).map(|i| (i, f(i))).collect::<Vec<_>>()
    });
    for (i, r) in strided.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter().flatten().collect()
}

/// Runs `f` on contiguous parts of `src` and `dst` cut at multiples of `unit` and returns
/// the results in order: the split of a kernel application over independent blocks of a
/// batch. One part on one thread; on several, up to [`PARTS_PER_THREAD`] parts per thread
/// taken from a queue ([`run_parts_queued`]).
pub(crate) fn in_parts<T: Real, R: Send>(
    threads: usize,
    unit: usize,
    src: &[T],
    dst: &mut [T],
    f: impl Fn(&[T], &mut [T]) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 {
        return vec![f(src, dst)];
    }
    let per = part_len(src.len(), unit, threads * PARTS_PER_THREAD);
    let parts = src.chunks(per).zip(dst.chunks_mut(per));
    run_parts_queued(threads, parts, |(a, b)| f(a, b))
}

/// [`in_parts`] for two sources and two destinations cut at the same places (a signed
/// log-domain batch: values and signs).
pub(crate) fn in_parts2<T: Real, R: Send>(
    threads: usize,
    unit: usize,
    src: (&[T], &[T]),
    dst: (&mut [T], &mut [T]),
    f: impl Fn((&[T], &[T]), (&mut [T], &mut [T])) -> R + Sync,
) -> Vec<R> {
    let per = part_len(src.0.len(), unit, threads);
    let parts = src.0.chunks(per).zip(src.1.chunks(per));
    let outs = dst.0.chunks_mut(per).zip(dst.1.chunks_mut(per));
    run_parts(parts.zip(outs), |(a, b)| f(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_run_in_order_and_cover_everything() {
        let data: Vec<usize> = (0..1000).collect();
        for threads in [1, 2, 3, 7] {
            let per = part_len(data.len(), 10, threads);
            assert_eq!(per % 10, 0);
            let sums = run_parts(data.chunks(per), |c| (c[0], c.iter().sum::<usize>()));
            assert!(sums.len() <= threads);
            assert!(sums.windows(2).all(|w| w[0].0 < w[1].0));
            assert_eq!(sums.iter().map(|s| s.1).sum::<usize>(), 999 * 1000 / 2);
        }
        assert!(run_parts(Vec::<usize>::new(), |x| x).is_empty());
        for th in [1, 2, 5] {
            let sq = par_map(Par::rayon(th), PAR_MIN_WORK, 11, |i| i * i);
            assert_eq!(sq, (0..11).map(|i| i * i).collect::<Vec<_>>());
        }
    }

    /// A panic in a part run by a worker reaches the caller, and the workers still take
    /// parts afterwards (the pool outlives the panic), nested calls included.
    #[test]
    fn a_part_panic_reaches_the_caller_and_the_pool_survives() {
        let caught = std::panic::catch_unwind(|| {
            run_parts(0..4, |i| {
                if i == 3 {
                    panic!("part 3");
                }
                i
            })
        });
        let msg = caught.expect_err("the panic of part 3 must be resumed");
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"part 3"));
        let nested = run_parts(0..3, |i| run_parts(0..3, move |j| 10 * i + j));
        assert_eq!(
            nested,
            vec![vec![0, 1, 2], vec![10, 11, 12], vec![20, 21, 22]]
        );
    }

    #[test]
    fn queued_parts_keep_their_order() {
        let data: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        for threads in [1, 2, 3] {
            let mut out = vec![0.0; 1000];
            let firsts = in_parts(threads, 10, &data, &mut out, |s, d| {
                for (o, &x) in d.iter_mut().zip(s) {
                    *o = 2.0 * x;
                }
                s[0]
            });
            assert!(firsts.windows(2).all(|w| w[0] < w[1]));
            assert!(firsts.len() <= threads * PARTS_PER_THREAD);
            assert!(out.iter().enumerate().all(|(i, &o)| o == 2.0 * i as f64));
        }
        let r = run_parts_queued(2, 0..37usize, |i| i * i);
        assert_eq!(r, (0..37).map(|i| i * i).collect::<Vec<_>>());
    }

    #[test]
    fn small_work_stays_on_one_thread() {
        assert_eq!(threads(Par::rayon(4), PAR_MIN_WORK - 1), 1);
        assert_eq!(threads(Par::rayon(4), PAR_MIN_WORK), 4);
        assert_eq!(threads(Par::Seq, usize::MAX), 1);
        assert!(matches!(par_from_count(1), Par::Seq));
    }
}
