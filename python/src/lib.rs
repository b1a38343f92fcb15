//! `wassdl._core`: the Rust extension behind the `wassdl` Python package.
//!
//! Thin by design: every function converts NumPy arrays to the core's [`Batch`] (one copy,
//! a `memcpy` for C-ordered inputs and a gather otherwise; dense cost matrices are read
//! in place when the layout allows, see [`CostData`]), calls one public function of the `wassdl`
//! crate with the GIL released, and converts the result back. The Python layer
//! (`python/wassdl/__init__.py`) does the POT-style argument handling, the layouts and
//! the dtype promotion, so that every array reaching this module is already `float32`
//! or `float64` with the number of axes it expects.
//!
//! Layout here is NumPy's "one histogram per row" (docs/cli.md): atoms `(S, N)`,
//! weights `(M, S)`, data/targets/barycenters `(M, N)`. A C-ordered `(M, N)` array has
//! the memory of the core's column-major `N × M` batch.
//!
//! Errors are `ValueError` with the core's one-line message; a panic in the core (a
//! bug) is caught here and raised as `RuntimeError`, so the interpreter never aborts.
#![deny(missing_docs)]

use numpy::ndarray::{Array1, Array2, Array3, ArrayView2};
use numpy::{
    Element, IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyReadonlyArray1,
    PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use wassdl::dictionary::{
    self, AtomInit, FnObserver, IterationInfo, Objective, WdlConfig, WeightInit,
};
use wassdl::gradcheck::{check_gradient_with, FdStep, Stencil};
use wassdl::lbfgs::{Control, LbfgsConfig, LineSearchKind, Termination};
use wassdl::pointcloud::{
    sinkhorn_divergence as core_divergence, PointCloud, SinkhornDivergenceConfig,
};
use wassdl::unmixing::{unmix as core_unmix, InnerOt, UnmixingConfig};
use wassdl::{
    barycenters, loss_and_grad, sinkhorn as core_sinkhorn, BarycenterConfig, Batch, DenseKernel,
    GradConfig, GradientMethod, Grid, GridKernel, GridUnits, Kernel, Loss, Real, SinkhornConfig,
    Stop,
};

// ---------------------------------------------------------------------------------------
// Errors, panics, the GIL

fn value_error(e: wassdl::Error) -> PyErr {
    // The core calls the regularization γ `gamma`; every Python function calls it `reg`
    // (POT's name), as the CLI calls it `--reg`.
    PyValueError::new_err(e.to_string().replacen("`gamma`", "`reg`", 1))
}

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// Runs `f` without the GIL, turning a core error into `ValueError` and a panic (a bug
/// of the core, never expected) into `RuntimeError` instead of unwinding into Python.
fn run<R: Send>(py: Python<'_>, f: impl FnOnce() -> wassdl::Result<R> + Send) -> PyResult<R> {
    let out = py.detach(move || catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(r) => r.map_err(value_error),
        Err(p) => Err(panic_error(p)),
    }
}

/// [`run`] holding the GIL (for code that calls back into Python).
fn run_with_gil<R>(f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(panic_error(p)),
    }
}

fn panic_error(p: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    PyRuntimeError::new_err(format!("wassdl internal error (please report): {msg}"))
}

// ---------------------------------------------------------------------------------------
// Arrays

/// Whether `x` is a float32 NumPy array (the Python layer has cast every array of a call
/// to one dtype, float32 or float64).
fn is_f32(x: &Bound<'_, PyAny>) -> bool {
    x.cast::<PyUntypedArray>()
        .map(|a| a.dtype().is_equiv_to(&numpy::dtype::<f32>(x.py())))
        .unwrap_or(false)
}

fn arr2<'py, T: Element>(x: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray2<'py, T>> {
    x.extract().map_err(|_| {
        bad(format!(
            "`{name}` must be a 2-D array of {} (got {})",
            std::any::type_name::<T>(),
            describe(x)
        ))
    })
}

fn arr1<'py, T: Element>(x: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray1<'py, T>> {
    x.extract().map_err(|_| {
        bad(format!(
            "`{name}` must be a 1-D array of {} (got {})",
            std::any::type_name::<T>(),
            describe(x)
        ))
    })
}

fn describe(x: &Bound<'_, PyAny>) -> String {
    match x.cast::<PyUntypedArray>() {
        Ok(a) => format!("dtype {} and shape {:?}", a.dtype(), a.shape()),
        Err(_) => x
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// `(M, N)` rows → the core's `N × M` batch (column `m` = row `m`). A `memcpy` for a
/// C-ordered array, a gather otherwise.
fn rows_batch<T: Real + Element>(a: ArrayView2<'_, T>) -> Batch<T> {
    let (m, n) = a.dim();
    let data = match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().copied().collect(),
    };
    Batch::from_vec(n, m, data)
}

/// The `N × M` batch → a C-ordered `(M, N)` array, without a copy.
fn to_rows<'py, T: Real + Element>(py: Python<'py>, b: Batch<T>) -> Bound<'py, PyArray2<T>> {
    let (n, m) = b.shape();
    Array2::from_shape_vec((m, n), b.into_vec())
        .expect("shape")
        .into_pyarray(py)
}

fn vec1<'py, T: Element>(py: Python<'py>, v: Vec<T>) -> Bound<'py, PyArray1<T>> {
    Array1::from_vec(v).into_pyarray(py)
}

// ---------------------------------------------------------------------------------------
// Kernels

fn units(s: &str) -> PyResult<GridUnits> {
    match s {
        "pot" => Ok(GridUnits::Pot),
        "geomloss" => Ok(GridUnits::GeomLoss),
        "pixel" => Ok(GridUnits::Pixel),
        _ => Err(bad(format!(
            "`units` = {s:?} is invalid: it must be \"pot\", \"geomloss\" or \"pixel\""
        ))),
    }
}

/// A dense cost matrix, borrowed when it is Fortran-ordered (the core's column-major
/// layout) or C-ordered and symmetric (see [`KernelSrc::build`]), and otherwise copied
/// once into the column-major layout: a C-ordered one by a blocked transpose (done
/// without the GIL), a strided one by a gather. The core builds `exp(-C/γ)` column by
/// column; reading a C-ordered `N × N` matrix through a row-major view would stride
/// across rows three times (finiteness, kernel, symmetry), which at N = 1024 costs more
/// than the copy (measured with bench/bench_binding.py).
enum CostData<'a, T> {
    RowMajor(&'a [T], usize, usize),
    ColMajor(&'a [T], usize, usize),
    Owned(Batch<T>),
}

impl<'a, T: Real + Element> CostData<'a, T> {
    fn new(c: &'a PyReadonlyArray2<'_, T>) -> Self {
        let v = c.as_array();
        let (r, k) = v.dim();
        if let Ok(s) = c.as_slice() {
            CostData::RowMajor(s, r, k)
        } else if let Some(s) = v.reversed_axes().to_slice() {
            // A Fortran-ordered array: its memory is the column-major matrix.
            CostData::ColMajor(s, r, k)
        } else {
            CostData::Owned(mat_batch(v))
        }
    }
    /// The column-major matrix (copying a row-major one, see the type's docs).
    fn with_mat<R>(&self, f: impl FnOnce(faer::MatRef<'_, T>) -> R) -> R {
        match self {
            CostData::RowMajor(s, r, k) => {
                let b = Batch::from_vec(*r, *k, transpose_row_major(s, *r, *k));
                f(b.view())
            }
            CostData::ColMajor(s, r, k) => f(faer::MatRef::from_column_major_slice(s, *r, *k)),
            CostData::Owned(b) => f(b.view()),
        }
    }
}

/// Row-major `r × k` → column-major, in 32 × 32 tiles so that both sides stay in cache.
fn transpose_row_major<T: Copy + Default>(s: &[T], r: usize, k: usize) -> Vec<T> {
    const B: usize = 32;
    let mut out = vec![T::default(); r * k];
    for ib in (0..r).step_by(B) {
        for jb in (0..k).step_by(B) {
            for i in ib..(ib + B).min(r) {
                for j in jb..(jb + B).min(k) {
                    out[j * r + i] = s[i * k + j];
                }
            }
        }
    }
    out
}

/// `(r, k)` matrix → `r × k` column-major batch (a matrix in its own orientation, e.g. a
/// cost, or POT's `(N, S)` atoms as columns).
fn mat_batch<T: Real + Element>(v: ArrayView2<'_, T>) -> Batch<T> {
    let (r, k) = v.dim();
    let t = v.reversed_axes();
    let data = match t.as_slice() {
        Some(s) => s.to_vec(),
        None => t.iter().copied().collect(),
    };
    Batch::from_vec(r, k, data)
}

/// What a kernel is built from: a dense cost or a grid.
enum KernelSrc<'a, T> {
    Dense(CostData<'a, T>),
    Grid(Grid),
}

fn kernel_src<'a, T: Real + Element>(
    cost: Option<&'a PyReadonlyArray2<'_, T>>,
    grid: Option<Vec<usize>>,
    unit: &str,
) -> PyResult<KernelSrc<'a, T>> {
    match (cost, grid) {
        (Some(c), None) => Ok(KernelSrc::Dense(CostData::new(c))),
        (None, Some(g)) => Ok(KernelSrc::Grid(
            Grid::new(&g).map_err(value_error)?.with_units(units(unit)?),
        )),
        _ => Err(bad(
            "give exactly one of `M` (a cost matrix) and `grid` (a grid shape)",
        )),
    }
}

// SAFETY of sending `KernelSrc` to a thread without the GIL: it holds only shared slices
// of a NumPy buffer that a `PyReadonlyArray` borrow keeps alive and registered as
// borrowed for the whole call.
unsafe impl<T: Sync> Send for KernelSrc<'_, T> {}

impl<T: Real + Element> KernelSrc<'_, T> {
    fn build(&self, reg: f64) -> wassdl::Result<Box<dyn Kernel<T>>> {
        let gamma = T::of(reg);
        Ok(match self {
            KernelSrc::Dense(CostData::RowMajor(s, r, k)) if r == k => {
                // The memory of a C-ordered C read column-major is Cᵀ: build from it
                // without a copy, and keep it if the core found it symmetric (exact
                // equality, so then exp(-Cᵀ/γ) is exactly exp(-C/γ)). Otherwise (or on an
                // error, whose indices must refer to C) build from C itself.
                let t = faer::MatRef::from_column_major_slice(s, *k, *r);
                match DenseKernel::new(t, gamma) {
                    Ok(kern) if kern.is_symmetric() => Box::new(kern),
                    _ => Box::new(self.dense(gamma)?),
                }
            }
            KernelSrc::Dense(_) => Box::new(self.dense(gamma)?),
            KernelSrc::Grid(g) => Box::new(GridKernel::new(g, gamma)?),
        })
    }
    fn dense(&self, gamma: T) -> wassdl::Result<DenseKernel<T>> {
        match self {
            KernelSrc::Dense(c) => c.with_mat(|m| DenseKernel::new(m, gamma)),
            KernelSrc::Grid(_) => unreachable!("dense() is called on dense sources only"),
        }
    }
}

fn stop(n_iter: Option<usize>, tol: f64, max_iter: usize) -> Stop {
    match n_iter {
        Some(l) => Stop::Iterations(l),
        None => Stop::Tolerance { tol, max_iter },
    }
}

fn bary_cfg(tau: f64, rho: Option<f64>, log_domain: bool, st: Stop) -> BarycenterConfig {
    BarycenterConfig {
        tau,
        rho,
        log_domain,
        stop: st,
    }
}

// ---------------------------------------------------------------------------------------
// sinkhorn

#[allow(clippy::too_many_arguments)]
fn sinkhorn_t<'py, T: Real + Element>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    m: &Bound<'py, PyAny>,
    reg: f64,
    log_domain: bool,
    st: Stop,
    plan: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let a = rows_batch(arr2::<T>(a, "a")?.as_array());
    let b = rows_batch(arr2::<T>(b, "b")?.as_array());
    let c = arr2::<T>(m, "M")?;
    let src = KernelSrc::Dense(CostData::new(&c));
    let cfg = SinkhornConfig {
        log_domain,
        stop: st,
        plan,
    };
    let (n1, n2, bsz) = (a.rows(), b.rows(), a.cols());
    let ot = run(py, || {
        let k = src.build(reg)?;
        core_sinkhorn(k.as_ref(), &a, &b, &cfg, None)
    })?;
    let d = PyDict::new(py);
    d.set_item("cost", vec1(py, ot.cost))?;
    d.set_item("transport_cost", vec1(py, ot.transport_cost))?;
    d.set_item("f", to_rows(py, ot.f))?;
    d.set_item("g", to_rows(py, ot.g))?;
    d.set_item("niter", ot.iterations)?;
    d.set_item("err", ot.error)?;
    if let Some(plans) = ot.plans {
        // Each plan is column-major n1 × n2; NumPy wants (B, n1, n2) row-major.
        let mut out = Array3::<T>::zeros((bsz, n1, n2));
        for (p, plan) in plans.iter().enumerate() {
            for j in 0..n2 {
                for (i, &v) in plan.col(j).iter().enumerate() {
                    out[[p, i, j]] = v;
                }
            }
        }
        d.set_item("plan", out.into_pyarray(py))?;
    }
    Ok(d)
}

/// Entropic OT (eq. 3-4) between the rows of `a` `(B, n1)` and `b` `(B, n2)` for the cost
/// `M` `(n1, n2)`. Returns a dict: cost, transport_cost `(B,)`, f `(B, n1)`, g `(B, n2)`,
/// niter, err, and plan `(B, n1, n2)` when asked.
#[pyfunction]
#[pyo3(signature = (a, b, m, reg, log_domain=false, n_iter=None, tol=1e-9, max_iter=10000, plan=false))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    m: &Bound<'py, PyAny>,
    reg: f64,
    log_domain: bool,
    n_iter: Option<usize>,
    tol: f64,
    max_iter: usize,
    plan: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let st = stop(n_iter, tol, max_iter);
    if is_f32(a) {
        sinkhorn_t::<f32>(py, a, b, m, reg, log_domain, st, plan)
    } else {
        sinkhorn_t::<f64>(py, a, b, m, reg, log_domain, st, plan)
    }
}

// ---------------------------------------------------------------------------------------
// barycenters and their gradients

/// Kernel arguments shared by the barycenter functions.
struct KArgs<'py> {
    cost: Option<Bound<'py, PyAny>>,
    grid: Option<Vec<usize>>,
    units: String,
    reg: f64,
}

#[allow(clippy::too_many_arguments)]
fn barycenter_t<'py, T: Real + Element>(
    py: Python<'py>,
    atoms: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    k: &KArgs<'py>,
    cfg: BarycenterConfig,
) -> PyResult<(Bound<'py, PyArray2<T>>, usize, Option<f64>)> {
    let atoms = rows_batch(arr2::<T>(atoms, "A")?.as_array());
    let w = rows_batch(arr2::<T>(weights, "weights")?.as_array());
    let c = k.cost.as_ref().map(|c| arr2::<T>(c, "M")).transpose()?;
    let src = kernel_src(c.as_ref(), k.grid.clone(), &k.units)?;
    let reg = k.reg;
    let out = run(py, || {
        let kern = src.build(reg)?;
        barycenters(kern.as_ref(), &atoms, &w, &cfg, None)
    })?;
    Ok((to_rows(py, out.p), out.iterations, out.error))
}

/// Barycenters of the atoms (rows of `atoms`, `(S, N)`) for each row of `weights`
/// `(M, S)`: plain (eq. 6-8), log-domain (eq. 22-24), heavy-ball (τ < 0, Algorithm 5) or
/// unbalanced (ρ, Algorithm 6). Returns `(P (M, N), iterations, error)`.
#[pyfunction]
#[pyo3(signature = (atoms, weights, reg, m=None, grid=None, units="pot", tau=0.0, rho=None,
                    log_domain=false, n_iter=None, tol=1e-9, max_iter=10000))]
#[allow(clippy::too_many_arguments)]
fn barycenter<'py>(
    py: Python<'py>,
    atoms: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    reg: f64,
    m: Option<Bound<'py, PyAny>>,
    grid: Option<Vec<usize>>,
    units: &str,
    tau: f64,
    rho: Option<f64>,
    log_domain: bool,
    n_iter: Option<usize>,
    tol: f64,
    max_iter: usize,
) -> PyResult<(Bound<'py, PyAny>, usize, Option<f64>)> {
    let k = KArgs {
        cost: m,
        grid,
        units: units.into(),
        reg,
    };
    let cfg = bary_cfg(tau, rho, log_domain, stop(n_iter, tol, max_iter));
    if is_f32(atoms) {
        let (p, i, e) = barycenter_t::<f32>(py, atoms, weights, &k, cfg)?;
        Ok((p.into_any(), i, e))
    } else {
        let (p, i, e) = barycenter_t::<f64>(py, atoms, weights, &k, cfg)?;
        Ok((p.into_any(), i, e))
    }
}

fn grad_opts(
    method: &str,
    chunk: Option<usize>,
    checkpoint: Option<usize>,
) -> PyResult<GradConfig> {
    let method = match method {
        "tape" => GradientMethod::Tape,
        "analytic" => GradientMethod::Analytic,
        _ => {
            return Err(bad(format!(
                "`method` = {method:?} is invalid: it must be \"tape\" or \"analytic\""
            )))
        }
    };
    Ok(GradConfig {
        method,
        chunk,
        checkpoint,
    })
}

fn parse_loss(s: &str) -> PyResult<Loss> {
    Loss::parse(s).map_err(value_error)
}

#[allow(clippy::too_many_arguments)]
fn loss_grad_t<'py, T: Real + Element>(
    py: Python<'py>,
    atoms: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    targets: &Bound<'py, PyAny>,
    k: &KArgs<'py>,
    loss: Loss,
    cfg: BarycenterConfig,
    opts: GradConfig,
) -> PyResult<Bound<'py, PyDict>> {
    let atoms = rows_batch(arr2::<T>(atoms, "atoms")?.as_array());
    let w = rows_batch(arr2::<T>(weights, "weights")?.as_array());
    let x = rows_batch(arr2::<T>(targets, "targets")?.as_array());
    let c = k.cost.as_ref().map(|c| arr2::<T>(c, "M")).transpose()?;
    let src = kernel_src(c.as_ref(), k.grid.clone(), &k.units)?;
    let reg = k.reg;
    let g = run(py, || {
        let kern = src.build(reg)?;
        loss_and_grad(kern.as_ref(), &atoms, &w, &x, &loss, &cfg, None, &opts)
    })?;
    let d = PyDict::new(py);
    d.set_item("loss", g.loss.to_f64_())?;
    d.set_item("grad_atoms", to_rows(py, g.grad_atoms))?;
    d.set_item("grad_weights", to_rows(py, g.grad_weights))?;
    d.set_item("barycenters", to_rows(py, g.p))?;
    d.set_item("peak_bytes", g.peak_bytes)?;
    Ok(d)
}

/// `Σ_m L(P(D, λ_m), x_m)` (eq. 10) and its gradients w.r.t. the atoms `(S, N)` and the
/// weights `(M, S)` (eq. 11-12), by the tape or the analytic loops (Algorithms 1, 4).
#[pyfunction]
#[pyo3(signature = (atoms, weights, targets, reg, m=None, grid=None, units="pot", loss="quadratic",
                    n_iter=50, tau=0.0, rho=None, log_domain=false, method="tape",
                    chunk=None, checkpoint=None))]
#[allow(clippy::too_many_arguments)]
fn loss_and_grad_py<'py>(
    py: Python<'py>,
    atoms: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    targets: &Bound<'py, PyAny>,
    reg: f64,
    m: Option<Bound<'py, PyAny>>,
    grid: Option<Vec<usize>>,
    units: &str,
    loss: &str,
    n_iter: usize,
    tau: f64,
    rho: Option<f64>,
    log_domain: bool,
    method: &str,
    chunk: Option<usize>,
    checkpoint: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let k = KArgs {
        cost: m,
        grid,
        units: units.into(),
        reg,
    };
    let loss = parse_loss(loss)?;
    let cfg = bary_cfg(tau, rho, log_domain, Stop::Iterations(n_iter));
    let opts = grad_opts(method, chunk, checkpoint)?;
    if is_f32(atoms) {
        loss_grad_t::<f32>(py, atoms, weights, targets, &k, loss, cfg, opts)
    } else {
        loss_grad_t::<f64>(py, atoms, weights, targets, &k, loss, cfg, opts)
    }
}

// ---------------------------------------------------------------------------------------
// exact OT, unmixing, Sinkhorn divergence

/// Exact OT by the network simplex (float64). Returns `(cost, plan (n1, n2), f, g, iterations)`.
#[pyfunction]
#[pyo3(signature = (a, b, m, max_iter=100000))]
#[allow(clippy::type_complexity)]
fn emd<'py>(
    py: Python<'py>,
    a: PyReadonlyArray1<'py, f64>,
    b: PyReadonlyArray1<'py, f64>,
    m: PyReadonlyArray2<'py, f64>,
    max_iter: usize,
) -> PyResult<(
    f64,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    usize,
)> {
    let av = a.as_array().to_vec();
    let bv = b.as_array().to_vec();
    let (n1, n2) = m.as_array().dim();
    if (n1, n2) != (av.len(), bv.len()) {
        return Err(bad(format!(
            "`M` has shape ({n1}, {n2}), expected ({}, {})",
            av.len(),
            bv.len()
        )));
    }
    let mv = m.as_array();
    let cost: Vec<f64> = match mv.as_slice() {
        Some(s) => s.to_vec(),
        None => mv.iter().copied().collect(),
    };
    let sol = run(py, || {
        wassdl::emd::emd(&av, &bv, &cost, max_iter).map_err(wassdl::Error::from)
    })?;
    let mut plan = Array2::<f64>::zeros((n1, n2));
    for e in &sol.plan {
        plan[[e.i, e.j]] = e.mass;
    }
    Ok((
        sol.cost,
        plan.into_pyarray(py),
        vec1(py, sol.f),
        vec1(py, sol.g),
        sol.iterations,
    ))
}

/// Two 1-D float64 arrays.
type Pair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// Wasserstein unmixing (float64): sources `(K, n_s)` one per row, target `(n_t,)`,
/// cost `(n_s, n_t)`. Exact OT without `reg`, entropic with it. Returns `(weights, losses)`.
#[pyfunction]
#[pyo3(signature = (sources, target, m, lr=2e-3, n_iter=500, reg=None, tol=1e-9, max_iter=10000, init=None, emd_max_iter=100000))]
#[allow(clippy::too_many_arguments)]
fn unmix<'py>(
    py: Python<'py>,
    sources: PyReadonlyArray2<'py, f64>,
    target: PyReadonlyArray1<'py, f64>,
    m: PyReadonlyArray2<'py, f64>,
    lr: f64,
    n_iter: usize,
    reg: Option<f64>,
    tol: f64,
    max_iter: usize,
    init: Option<PyReadonlyArray1<'py, f64>>,
    emd_max_iter: usize,
) -> PyResult<Pair<'py>> {
    let h = rows_batch(sources.as_array());
    let t = target.as_array().to_vec();
    let c = mat_batch(m.as_array());
    let init = init.map(|w| w.as_array().to_vec());
    let solver = match reg {
        None => InnerOt::Exact {
            max_iter: emd_max_iter,
        },
        Some(reg) => InnerOt::Entropic {
            gamma: reg,
            stop: Stop::Tolerance { tol, max_iter },
        },
    };
    let cfg = UnmixingConfig {
        lr,
        iterations: n_iter,
        solver,
    };
    let r = run(py, || core_unmix(&h, &t, &c, init.as_deref(), &cfg))?;
    Ok((vec1(py, r.weights), vec1(py, r.losses)))
}

#[allow(clippy::too_many_arguments)]
fn divergence_t<'py, T: Real + Element>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    a: Option<&Bound<'py, PyAny>>,
    b: Option<&Bound<'py, PyAny>>,
    cfg: SinkhornDivergenceConfig,
) -> PyResult<Bound<'py, PyDict>> {
    let xp = rows_batch(arr2::<T>(x, "X")?.as_array());
    let yp = rows_batch(arr2::<T>(y, "Y")?.as_array());
    let weights = |w: Option<&Bound<'py, PyAny>>, name: &str, n: usize| -> PyResult<Vec<T>> {
        match w {
            Some(w) => Ok(arr1::<T>(w, name)?.as_array().to_vec()),
            None => Ok(vec![T::of(1.0 / n as f64); n]),
        }
    };
    let (n, mm) = (xp.cols(), yp.cols());
    let aw = weights(a, "a", n)?;
    let bw = weights(b, "b", mm)?;
    let out = run(py, || {
        let cx = PointCloud::new(xp, aw)?;
        let cy = PointCloud::new(yp, bw)?;
        core_divergence(&cx, &cy, &cfg)
    })?;
    let d = PyDict::new(py);
    d.set_item("value", out.value.to_f64_())?;
    d.set_item("grad_a", vec1(py, out.grad_a))?;
    d.set_item("grad_b", vec1(py, out.grad_b))?;
    d.set_item("grad_X", to_rows(py, out.grad_x))?;
    d.set_item("grad_Y", to_rows(py, out.grad_y))?;
    d.set_item("niter", out.iterations)?;
    d.set_item("last_change", out.last_change)?;
    d.set_item("diameter", out.diameter)?;
    Ok(d)
}

/// Debiased Sinkhorn divergence between point clouds `X (n, d)`, `Y (m, d)` with
/// GeomLoss's conventions, and its gradients.
#[pyfunction]
#[pyo3(signature = (x, y, a=None, b=None, p=2.0, blur=0.05, scaling=0.5, diameter=None,
                    debias=true, refine_tol=None, refine_max_iter=10000, threads=1))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_divergence<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    a: Option<Bound<'py, PyAny>>,
    b: Option<Bound<'py, PyAny>>,
    p: f64,
    blur: f64,
    scaling: f64,
    diameter: Option<f64>,
    debias: bool,
    refine_tol: Option<f64>,
    refine_max_iter: usize,
    threads: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = SinkhornDivergenceConfig {
        p,
        blur,
        scaling,
        diameter,
        debias,
        refine: refine_tol.map(|tol| Stop::Tolerance {
            tol,
            max_iter: refine_max_iter,
        }),
        threads,
    };
    if is_f32(x) {
        divergence_t::<f32>(py, x, y, a.as_ref(), b.as_ref(), cfg)
    } else {
        divergence_t::<f64>(py, x, y, a.as_ref(), b.as_ref(), cfg)
    }
}

// ---------------------------------------------------------------------------------------
// gradient check

/// Compares `grad` with finite differences of the Python callable `f` at `x` (float64).
/// Returns a dict: max_rel_err, max_abs_err, worst_index, index, numeric, rel_err, summary.
#[pyfunction]
#[pyo3(signature = (f, x, grad, step=1e-6, relative=false, coords=None, floor=0.0, five_point=false))]
#[allow(clippy::too_many_arguments)]
fn check_gradient<'py>(
    py: Python<'py>,
    f: Bound<'py, PyAny>,
    x: Vec<f64>,
    grad: Vec<f64>,
    step: f64,
    relative: bool,
    coords: Option<Vec<usize>>,
    floor: f64,
    five_point: bool,
) -> PyResult<Bound<'py, PyDict>> {
    // The core asserts these; check them first so that bad input is a ValueError.
    if grad.len() != x.len() {
        return Err(bad(format!(
            "`grad` has {} entries, expected {} (the length of `x`)",
            grad.len(),
            x.len()
        )));
    }
    if !(floor.is_finite() && floor >= 0.0) {
        return Err(bad(format!(
            "`floor` = {floor} is invalid: it must be finite and >= 0"
        )));
    }
    if !(step.is_finite() && step > 0.0) {
        return Err(bad(format!(
            "`step` = {step} is invalid: it must be finite and > 0"
        )));
    }
    if let Some(bad_i) = coords
        .as_ref()
        .and_then(|c| c.iter().find(|&&i| i >= x.len()))
    {
        return Err(bad(format!(
            "`coords` has index {bad_i}, out of range for `x` of length {}",
            x.len()
        )));
    }
    let st = if relative {
        FdStep::Relative(step)
    } else {
        FdStep::Absolute(step)
    };
    let stencil = if five_point {
        Stencil::FivePoint
    } else {
        Stencil::Central
    };
    // The first Python error ends the useful work: later evaluations return NaN and the
    // error is raised once the core returns.
    let mut err: Option<PyErr> = None;
    let rep = run_with_gil(|| {
        let eval = |xs: &[f64]| -> f64 {
            if err.is_some() {
                return f64::NAN;
            }
            let arr = vec1(py, xs.to_vec());
            match f.call1((arr,)).and_then(|v| v.extract::<f64>()) {
                Ok(v) => v,
                Err(e) => {
                    err = Some(e);
                    f64::NAN
                }
            }
        };
        Ok(check_gradient_with(
            eval,
            &x,
            &grad,
            st,
            stencil,
            coords.as_deref(),
            floor,
        ))
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let d = PyDict::new(py);
    d.set_item("max_rel_err", rep.max_rel_err)?;
    d.set_item("max_abs_err", rep.max_abs_err)?;
    d.set_item("worst_index", rep.worst_index)?;
    let idx: Vec<usize> = rep.per_coord.iter().map(|e| e.index).collect();
    let num: Vec<f64> = rep.per_coord.iter().map(|e| e.numeric).collect();
    let rel: Vec<f64> = rep.per_coord.iter().map(|e| e.rel_err).collect();
    d.set_item("index", idx)?;
    d.set_item("numeric", vec1(py, num))?;
    d.set_item("rel_err", vec1(py, rel))?;
    d.set_item("summary", rep.summary())?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// dictionary learning

/// An initialization argument: a name (absent or `None`: the default), or an array given
/// as rows, `(S, N)` atoms or `(M, S)` weights, whose C-order memory is the column-major
/// `N × S` or `S × M` the core takes.
enum Init {
    Name(Option<String>),
    Given(Vec<f64>),
}

fn init_arg(p: &Bound<'_, PyDict>, key: &str) -> PyResult<Init> {
    match p.get_item(key)? {
        None => Ok(Init::Name(None)),
        Some(v) if v.is_none() => Ok(Init::Name(None)),
        Some(v) => match v.extract::<String>() {
            Ok(s) => Ok(Init::Name(Some(s))),
            Err(_) => Ok(Init::Given(
                rows_batch(arr2::<f64>(&v, key)?.as_array()).into_vec(),
            )),
        },
    }
}

fn init_err(key: &str, got: &str, choices: &str) -> PyErr {
    bad(format!(
        "`{key}` = {got:?} is invalid: it must be {choices}"
    ))
}

fn get<'py, V: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<V>> {
    match d.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v
            .extract::<V>()
            .map(Some)
            .map_err(|_| bad(format!("`{key}` = {v} has the wrong type"))),
    }
}

/// Builds a [`WdlConfig`] from the learner's parameters (a dict of Python values; the
/// Python class documents each).
fn wdl_config(p: &Bound<'_, PyDict>) -> PyResult<WdlConfig> {
    let mut c = WdlConfig::new(get::<usize>(p, "n_atoms")?.unwrap_or(2));
    let n_iter = get::<usize>(p, "n_iter")?.unwrap_or(25);
    c.barycenter = bary_cfg(
        get::<f64>(p, "tau")?.unwrap_or(0.0),
        get::<f64>(p, "rho")?,
        get::<bool>(p, "log_domain")?.unwrap_or(false),
        Stop::Iterations(n_iter),
    );
    if let Some(l) = get::<String>(p, "loss")? {
        c.loss = parse_loss(&l)?;
    }
    if let Some(z) = get::<f64>(p, "zeta")? {
        c.zeta = z;
    }
    let d = LbfgsConfig::default();
    c.lbfgs = LbfgsConfig {
        memory: get::<usize>(p, "memory")?.unwrap_or(d.memory),
        max_iter: get::<u64>(p, "max_iter")?.unwrap_or(d.max_iter),
        tol_grad: get::<f64>(p, "tol_grad")?.unwrap_or(d.tol_grad),
        tol_cost: get::<f64>(p, "tol_cost")?.unwrap_or(d.tol_cost),
        line_search: match get::<String>(p, "line_search")?.as_deref() {
            None | Some("more-thuente") => LineSearchKind::MoreThuente,
            Some("hager-zhang") => LineSearchKind::HagerZhang,
            Some("backtracking") => LineSearchKind::Backtracking,
            Some(o) => {
                return Err(bad(format!(
                    "`line_search` = {o:?} is invalid: it must be \"more-thuente\", \"hager-zhang\" or \"backtracking\""
                )))
            }
        },
        ..d
    };
    c.warm_restart = get::<usize>(p, "warm_restart")?;
    const ATOM_INITS: &str = "\"random\", \"constant\", \"data\" or an (S, N) array";
    c.atom_init = match init_arg(p, "atom_init")? {
        Init::Given(v) => AtomInit::Given(v),
        Init::Name(n) => match n.as_deref() {
            None | Some("random") => AtomInit::Random,
            Some("constant") => AtomInit::Constant,
            Some("data") => AtomInit::FromData,
            Some(o) => return Err(init_err("atom_init", o, ATOM_INITS)),
        },
    };
    const WEIGHT_INITS: &str = "\"uniform\", \"random\" or an (M, S) array";
    c.weight_init = match init_arg(p, "weight_init")? {
        Init::Given(v) => WeightInit::Given(v),
        Init::Name(n) => match n.as_deref() {
            None | Some("uniform") => WeightInit::Uniform,
            Some("random") => WeightInit::Random,
            Some(o) => return Err(init_err("weight_init", o, WEIGHT_INITS)),
        },
    };
    c.seed = get::<u64>(p, "seed")?.unwrap_or(0);
    c.gradient = grad_opts(
        get::<String>(p, "gradient")?.as_deref().unwrap_or("tape"),
        get::<usize>(p, "chunk")?,
        get::<usize>(p, "checkpoint")?,
    )?;
    Ok(c)
}

fn termination(t: &Termination) -> String {
    t.to_string()
}

fn info_dict<'py>(py: Python<'py>, it: &IterationInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("iteration", it.iteration)?;
    d.set_item("loss", it.loss)?;
    d.set_item("grad_norm", it.grad_norm)?;
    d.set_item("elapsed", it.elapsed.as_secs_f64())?;
    d.set_item("restart_index", it.restart_index)?;
    d.set_item("evaluations", it.evaluations)?;
    Ok(d)
}

/// The observer: calls `callback(info)` with the GIL re-acquired; a callback returning
/// `False` (or raising, or a pending KeyboardInterrupt) stops the fit, and the exception
/// is raised once the core returns.
fn observe(
    callback: &Option<Py<PyAny>>,
    err: &Mutex<Option<PyErr>>,
    it: &IterationInfo,
) -> Control {
    Python::attach(|py| {
        let r: PyResult<bool> = (|| {
            py.check_signals()?;
            if let Some(cb) = callback {
                let v = cb.call1(py, (info_dict(py, it)?,))?;
                let v = v.bind(py);
                return Ok(v.is_none() || v.is_truthy()?);
            }
            Ok(true)
        })();
        match r {
            Ok(true) => Control::Continue,
            Ok(false) => Control::Stop,
            Err(e) => {
                *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Control::Stop
            }
        }
    })
}

fn fit_dict<'py, T: Real + Element>(
    py: Python<'py>,
    f: dictionary::Fit<T>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("atoms", to_rows(py, f.atoms))?;
    d.set_item("weights", to_rows(py, f.weights))?;
    d.set_item("loss", f.loss)?;
    d.set_item("reconstruction", to_rows(py, f.reconstruction))?;
    d.set_item("n_iter", f.iterations)?;
    d.set_item("evaluations", f.evaluations)?;
    d.set_item("runs", f.runs)?;
    d.set_item("termination", termination(&f.termination))?;
    let hist = PyList::empty(py);
    for it in &f.history {
        hist.append(info_dict(py, it)?)?;
    }
    d.set_item("history", hist)?;
    d.set_item("peak_tape_bytes", f.peak_tape_bytes)?;
    Ok(d)
}

#[allow(clippy::too_many_arguments)]
fn wdl_t<'py, T: Real + Element>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    atoms: Option<&Bound<'py, PyAny>>,
    k: &KArgs<'py>,
    cfg: WdlConfig,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let x = rows_batch(arr2::<T>(data, "X")?.as_array());
    let d = atoms
        .map(|a| arr2::<T>(a, "components_").map(|a| rows_batch(a.as_array())))
        .transpose()?;
    let c = k.cost.as_ref().map(|c| arr2::<T>(c, "M")).transpose()?;
    let src = kernel_src(c.as_ref(), k.grid.clone(), &k.units)?;
    let reg = k.reg;
    let err = Mutex::new(None);
    let fit = run(py, || {
        let kern = src.build(reg)?;
        let mut obs = FnObserver::new(|it: &IterationInfo| observe(&callback, &err, it));
        match &d {
            None => dictionary::fit(kern.as_ref(), &x, &cfg, &mut obs),
            Some(d) => dictionary::transform_fit(kern.as_ref(), d, &x, &cfg, &mut obs),
        }
    });
    if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    fit_dict(py, fit?)
}

/// Wasserstein dictionary learning (Algorithm 2) on the rows of `X` `(M, N)`, or, with
/// `atoms` `(S, N)` given, the weights of each row for fixed atoms (transform).
#[pyfunction]
#[pyo3(signature = (x, params, reg, m=None, grid=None, units="pot", atoms=None, callback=None))]
#[allow(clippy::too_many_arguments)]
fn wdl_fit<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    params: &Bound<'py, PyDict>,
    reg: f64,
    m: Option<Bound<'py, PyAny>>,
    grid: Option<Vec<usize>>,
    units: &str,
    atoms: Option<Bound<'py, PyAny>>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = wdl_config(params)?;
    let k = KArgs {
        cost: m,
        grid,
        units: units.into(),
        reg,
    };
    if is_f32(x) {
        wdl_t::<f32>(py, x, atoms.as_ref(), &k, cfg, callback)
    } else {
        wdl_t::<f64>(py, x, atoms.as_ref(), &k, cfg, callback)
    }
}

#[allow(clippy::too_many_arguments)]
fn objective_t<'py, T: Real + Element>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    xvec: Vec<f64>,
    k: &KArgs<'py>,
    cfg: WdlConfig,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let x = rows_batch(arr2::<T>(data, "X")?.as_array());
    let c = k.cost.as_ref().map(|c| arr2::<T>(c, "M")).transpose()?;
    let src = kernel_src(c.as_ref(), k.grid.clone(), &k.units)?;
    let reg = k.reg;
    let (v, g) = run(py, || {
        let kern = src.build(reg)?;
        Objective::new(kern.as_ref(), &x, &cfg)?.value_and_gradient(&xvec)
    })?;
    Ok((v, vec1(py, g)))
}

/// The dictionary-learning objective `G(α, β̃)` of eq. 13 and its gradient, at the
/// L-BFGS variables `theta = concat(α (N×S column-major), β̃ (S×M column-major))`.
#[pyfunction]
#[pyo3(signature = (x, theta, params, reg, m=None, grid=None, units="pot"))]
#[allow(clippy::too_many_arguments)]
fn wdl_objective<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    theta: Vec<f64>,
    params: &Bound<'py, PyDict>,
    reg: f64,
    m: Option<Bound<'py, PyAny>>,
    grid: Option<Vec<usize>>,
    units: &str,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let cfg = wdl_config(params)?;
    let k = KArgs {
        cost: m,
        grid,
        units: units.into(),
        reg,
    };
    if is_f32(x) {
        objective_t::<f32>(py, x, theta, &k, cfg)
    } else {
        objective_t::<f64>(py, x, theta, &k, cfg)
    }
}

/// The Rust extension of the `wassdl` package.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sinkhorn, m)?)?;
    m.add_function(wrap_pyfunction!(barycenter, m)?)?;
    m.add("loss_and_grad", wrap_pyfunction!(loss_and_grad_py, m)?)?;
    m.add_function(wrap_pyfunction!(emd, m)?)?;
    m.add_function(wrap_pyfunction!(unmix, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_divergence, m)?)?;
    m.add_function(wrap_pyfunction!(check_gradient, m)?)?;
    m.add_function(wrap_pyfunction!(wdl_fit, m)?)?;
    m.add_function(wrap_pyfunction!(wdl_objective, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
