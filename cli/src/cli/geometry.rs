//! Options shared by the solvers: the support (`--grid` or `--cost`), `--reg`, `--log`,
//! the stopping rule, and the precision of the computation.

use super::error::{from_lib, CliError};
use super::input::{Input, Layout};
use super::Global;
use faer::MatRef;
use std::fmt;
use std::path::PathBuf;
use wassdl::{BarycenterConfig, DenseKernel, Grid, GridKernel, GridUnits, Kernel, Real, Stop};
use wassdl_cli::npy::Dtype;

/// Default `--tol` in float64: the library's Sinkhorn default.
pub const DEFAULT_TOL_F64: f64 = 1e-9;
/// Default `--tol` in float32. Each marginal entry carries a relative rounding error of a
/// few float32 ulps (ε₃₂ ≈ 1.2e-7), so the L¹ error of unit-mass histograms stalls near
/// 1e-7 (measured: 6e-8 for a 32×32 barycenter, 3e-9 for a 100-bin Sinkhorn) and a
/// float64 tolerance would never be met; 1e-6 leaves a margin of ten.
pub const DEFAULT_TOL_F32: f64 = 1e-6;
/// Default `--max-iters`: the library's Sinkhorn default.
pub const DEFAULT_MAX_ITERS: usize = 10_000;

/// The requirement on τ, with the reason. The heavy-ball step `u^τ ũ^(1−τ)` of
/// Algorithm 5 is Sinkhorn over-relaxed by `ω = 1 − τ` (in log form `log u ← log u +
/// ω (log ũ − log u)`), which converges only for `0 < ω < 2` (the paper's reference [51,
/// Remark 6]): at `τ = −1` the linearized iteration has a unit eigenvalue and the iterates
/// oscillate without converging, below it they diverge.
pub const TAU_RANGE: &str = "in (-1, 0]: the heavy-ball step is Sinkhorn over-relaxed by \
     ω = 1 − τ, which converges only for 0 < ω < 2; at τ ≤ −1 the extrapolation overshoots \
     by at least a full step and the iterates oscillate or diverge (−0.1 to −0.5 speeds \
     convergence up)";

/// Checks `--tau` before any work: finite, `<= 0` and `> -1` (see [`TAU_RANGE`]).
pub fn check_tau(tau: f64) -> Result<(), CliError> {
    if tau.is_finite() && tau <= 0.0 && tau > -1.0 {
        Ok(())
    } else {
        Err(CliError(format!(
            "--tau = {tau} is invalid: it must be {TAU_RANGE}"
        )))
    }
}

/// A grid shape from `--grid`, e.g. `32x32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridShape(pub Vec<usize>);

impl fmt::Display for GridShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&grid_text(&self.0))
    }
}

pub fn grid_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

pub fn parse_grid(s: &str) -> Result<GridShape, String> {
    let bad = || {
        format!("expected N, NxN or NxNxN with positive integers (e.g. 100 or 32x32), got '{s}'")
    };
    let dims: Vec<usize> = s
        .split(['x', 'X', '×'])
        .map(|t| t.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if !(1..=3).contains(&dims.len()) || dims.contains(&0) {
        return Err(bad());
    }
    dims.iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| format!("the grid {s} has too many cells"))?;
    Ok(GridShape(dims))
}

/// Coordinates and cost of a `--grid`, matching each peer library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Units {
    /// POT / OTT-JAX: each axis linspace(0, 1, n), K = exp(-|x-y|²/γ)
    Pot,
    /// GeomLoss: each axis arange(n)/n, K = exp(-|x-y|²/(2γ))
    Geomloss,
    /// Pixel indices (the WDL authors' code): K = exp(-|i-j|²/γ)
    Pixel,
}

impl From<Units> for GridUnits {
    fn from(u: Units) -> Self {
        match u {
            Units::Pot => GridUnits::Pot,
            Units::Geomloss => GridUnits::GeomLoss,
            Units::Pixel => GridUnits::Pixel,
        }
    }
}

/// The support and the kernel `K = exp(-C/γ)`.
#[derive(clap::Args, Debug, Clone)]
pub struct GeometryArgs {
    /// Cost matrix C as .npy, shape (N1, N2) (square for barycenters), any real entries;
    /// K = exp(-C/γ). Without --cost the histograms live on a regular grid (--grid)
    #[arg(long, value_name = "C.npy", conflicts_with_all = ["grid", "units"])]
    pub cost: Option<PathBuf>,
    /// Regular grid of 1 to 3 axes, e.g. 100, 32x32 or 16x16x16; histograms are flattened
    /// row-major onto it, with the squared Euclidean cost of --units. [default: the
    /// shape of one input histogram: N for (M, N) rows, HxW for (M, H, W) images]
    #[arg(long, value_name = "N[xN[xN]]", value_parser = parse_grid)]
    pub grid: Option<GridShape>,
    /// Units of --grid
    #[arg(long, value_enum, default_value_t = Units::Pot)]
    pub units: Units,
    /// Entropic regularization γ > 0, in the units of the cost (a squared distance: with
    /// --units pot, γ = 1e-3 blurs over a length √γ ≈ 0.03 of the unit domain)
    #[arg(long, value_name = "γ", allow_negative_numbers = true)]
    pub reg: f64,
    /// Iterate in the log domain: stable at any γ, several times slower; use it when the
    /// scaling domain under- or overflows (small γ, float32)
    #[arg(long)]
    pub log: bool,
}

/// Where the histograms live.
pub enum Support {
    /// A regular grid with a separable kernel.
    Grid(Grid),
    /// A dense cost matrix from a file.
    Cost(Input),
}

impl GeometryArgs {
    /// Checks γ before any file is read.
    pub fn check_reg(&self) -> Result<(), CliError> {
        wassdl::validate::positive("gamma", self.reg).map_err(|e| from_lib(e, false))
    }

    /// Loads `--cost` if given (a 2-D matrix).
    pub fn load_cost(&self) -> Result<Option<Input>, CliError> {
        let Some(path) = &self.cost else {
            return Ok(None);
        };
        let c = Input::load("--cost", path, Layout::Matrix)?;
        c.expect_ndim(&[2], "a 2-D cost matrix (N1, N2)")?;
        Ok(Some(c))
    }

    /// The grid of `--grid`, or the one given by the shape of `hist`'s histograms, with
    /// where it came from (for messages).
    pub fn grid_for(&self, hist: &Input) -> Result<(Grid, String), CliError> {
        let (grid, origin) = match &self.grid {
            Some(g) => (
                Grid::new(&g.0).map_err(|e| from_lib(e, false))?,
                format!("--grid {g}"),
            ),
            None => (
                Grid::new(hist.item_shape()).map_err(|e| hist.fail(e))?,
                format!(
                    "the grid {} of {}",
                    grid_text(hist.item_shape()),
                    hist.name()
                ),
            ),
        };
        let grid = grid.with_units(self.units.into());
        on_grid(hist, &grid, &origin)?;
        Ok((grid, origin))
    }
}

/// Fails unless the histograms of `hist` fit `grid` (described by `origin`): same number
/// of bins, and for images the same shape.
pub fn on_grid(hist: &Input, grid: &Grid, origin: &str) -> Result<(), CliError> {
    if hist.ndim() == 3 && hist.item_shape() != grid.shape() {
        return Err(hist.fail(format!(
            "holds {} images but {origin} is {}",
            grid_text(hist.item_shape()),
            grid_text(grid.shape())
        )));
    }
    if hist.item_len() != grid.len() {
        return Err(hist.fail(format!(
            "has {} bins per histogram (shape {}) but {origin} has {} cells",
            hist.item_len(),
            hist.shape_text(),
            grid.len()
        )));
    }
    Ok(())
}

/// Builds the kernel of the support at γ = `reg` in precision `T` (a cost matrix moves
/// out of its [`Input`]).
pub fn build_kernel<T: Real>(
    support: &mut Support,
    reg: f64,
    log: bool,
) -> Result<Box<dyn Kernel<T>>, CliError> {
    match support {
        Support::Grid(grid) => Ok(Box::new(
            GridKernel::<T>::new(grid, T::of(reg)).map_err(|e| from_lib(e, log))?,
        )),
        Support::Cost(c) => {
            let (n1, n2) = (c.shape()[0], c.shape()[1]);
            let data: Vec<T> = c.take_vec();
            let m = MatRef::from_row_major_slice(&data, n1, n2);
            match DenseKernel::new(m, T::of(reg)) {
                Ok(k) => Ok(Box::new(k)),
                Err(e @ wassdl::Error::NonFinite { .. }) => {
                    Err(c.explain(e, &|r, col| Some(data[r * n2 + col].to_f64_())))
                }
                Err(e) => Err(from_lib(e, log)),
            }
        }
    }
}

/// float32 only if every input file is float32 and `--f64` is not given (NumPy's
/// promotion rule).
pub fn precision(global: &Global, inputs: &[&Input]) -> Dtype {
    if global.force_f64 || inputs.iter().any(|i| i.dtype() == Dtype::F64) {
        Dtype::F64
    } else {
        Dtype::F32
    }
}

/// When to stop.
#[derive(clap::Args, Debug, Clone)]
pub struct StopArgs {
    /// Run exactly L iterations, with no convergence test [default: iterate to --tol]
    #[arg(long, value_name = "L", conflicts_with_all = ["tol", "max_iters"])]
    pub iters: Option<usize>,
    /// Stop when the error falls below t. The error is the L¹ violation of the marginal
    /// constraints (Σ over bins, max over histograms; unit mass, so it is dimensionless),
    /// or for --rho the relative change of the barycenter. [default: 1e-9 in float64,
    /// 1e-6 in float32]
    #[arg(long, value_name = "t", allow_negative_numbers = true)]
    pub tol: Option<f64>,
    /// Iteration cap with --tol
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ITERS)]
    pub max_iters: usize,
}

impl StopArgs {
    /// The stopping rule in precision `dtype`.
    pub fn stop(&self, dtype: Dtype) -> Stop {
        match self.iters {
            Some(l) => Stop::Iterations(l),
            None => Stop::Tolerance {
                tol: self.tol.unwrap_or(match dtype {
                    Dtype::F32 => DEFAULT_TOL_F32,
                    Dtype::F64 => DEFAULT_TOL_F64,
                }),
                max_iter: self.max_iters,
            },
        }
    }
    /// Checks L ≥ 1, t > 0, the cap ≥ 1 (with the library's one check of a stopping rule).
    pub fn check(&self) -> Result<(), CliError> {
        let cfg = BarycenterConfig {
            stop: self.stop(Dtype::F64),
            ..Default::default()
        };
        cfg.validate().map_err(|e| from_lib(e, false))
    }
}

/// The stopping rule as JSON.
pub fn stop_json(stop: Stop) -> serde_json::Value {
    match stop {
        Stop::Iterations(l) => serde_json::json!({ "iters": l }),
        Stop::Tolerance { tol, max_iter } => {
            serde_json::json!({ "tol": tol, "max_iters": max_iter })
        }
    }
}

/// Whether a run with rule `stop` ending at `error` converged (`None` for fixed counts).
pub fn converged(stop: Stop, error: Option<f64>) -> Option<bool> {
    match stop {
        Stop::Iterations(_) => None,
        Stop::Tolerance { tol, .. } => Some(error.is_some_and(|e| e < tol)),
    }
}

/// Warns when a `--tol` run hit its iteration cap.
pub fn warn_unconverged(global: &Global, stop: Stop, iterations: usize, error: Option<f64>) {
    if let (Some(false), Stop::Tolerance { tol, max_iter }) = (converged(stop, error), stop) {
        global.warn(&format!(
            "not converged: the error is {} after {iterations} iterations (--tol {tol:e}, --max-iters {max_iter})",
            error.map_or("unknown".into(), |e| format!("{e:.3e}"))
        ));
    }
}

/// Seconds since `t`.
pub fn secs(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
