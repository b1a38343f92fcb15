//! Typed errors. Every variant names the argument that was wrong.

use std::fmt;
use std::sync::Arc;

/// Everything that can go wrong in wassdl, with the offending argument named.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two arguments whose shapes must agree do not.
    ShapeMismatch {
        /// Argument name.
        arg: &'static str,
        /// Shape required, as text (e.g. `"100 x 3"`).
        expected: String,
        /// Shape given.
        found: String,
    },
    /// An entry is NaN or infinite.
    NonFinite {
        /// Argument name.
        arg: &'static str,
        /// Row of the first offending entry.
        row: usize,
        /// Column of the first offending entry.
        col: usize,
    },
    /// An entry that must be nonnegative is negative.
    Negative {
        /// Argument name.
        arg: &'static str,
        /// Row of the first offending entry.
        row: usize,
        /// Column of the first offending entry.
        col: usize,
        /// The value found.
        value: f64,
    },
    /// A histogram (or weight vector) that must sum to one does not.
    NotNormalized {
        /// Argument name.
        arg: &'static str,
        /// Column of the offending histogram.
        col: usize,
        /// Its sum.
        sum: f64,
        /// The tolerance on `|sum - 1|` that was applied.
        tol: f64,
    },
    /// A scalar parameter is outside its domain (γ ≤ 0, τ > 0, ρ ≤ 0, L = 0, ...).
    InvalidParameter {
        /// Parameter name.
        arg: &'static str,
        /// What is required of it.
        requirement: &'static str,
        /// The value given.
        value: f64,
    },
    /// An iteration produced a non-finite value or a vanishing marginal.
    Numerical {
        /// Which solver.
        solver: &'static str,
        /// Iteration at which it was detected.
        iteration: usize,
        /// What happened and what to do about it.
        message: String,
    },
    /// Two measures that must carry the same total mass do not.
    MassMismatch {
        /// Total mass of the first.
        sum_a: f64,
        /// Total mass of the second.
        sum_b: f64,
    },
    /// An input/output failure (file missing, unreadable, ...) described in words.
    Io(String),
    /// A failure of another library (argmin, the file system, a file format), kept as
    /// this error's [`source`](std::error::Error::source).
    External {
        /// What was being done, e.g. the path or the solver.
        context: String,
        /// The other library's error.
        source: Source,
    },
}

/// Another library's error, shared so that [`Error`] stays `Clone`. Two sources compare
/// equal when their messages do.
#[derive(Clone, Debug)]
pub struct Source(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Error {
    /// Wraps `source` with `context` (what was being done when it failed).
    pub fn external(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::External {
            context: context.into(),
            source: Source(Arc::from(source.into())),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch {
                arg,
                expected,
                found,
            } => {
                write!(f, "`{arg}` has shape {found}, expected {expected}")
            }
            Error::NonFinite { arg, row, col } => {
                write!(f, "`{arg}` has a non-finite entry at ({row}, {col})")
            }
            Error::Negative {
                arg,
                row,
                col,
                value,
            } => {
                write!(
                    f,
                    "`{arg}` has a negative entry {value:e} at ({row}, {col})"
                )
            }
            Error::NotNormalized { arg, col, sum, tol } => write!(
                f,
                "`{arg}` column {col} sums to {sum:.17} but must sum to 1 (tolerance {tol:e})"
            ),
            Error::InvalidParameter {
                arg,
                requirement,
                value,
            } => {
                write!(f, "`{arg}` = {value} is invalid: it must be {requirement}")
            }
            Error::Numerical {
                solver,
                iteration,
                message,
            } => {
                write!(f, "{solver}: at iteration {iteration}: {message}")
            }
            Error::MassMismatch { sum_a, sum_b } => write!(
                f,
                "the two measures carry different total mass ({sum_a} vs {sum_b}); normalize them or use unbalanced OT"
            ),
            Error::Io(msg) => write!(f, "{msg}"),
            Error::External { context, source } => write!(f, "{context}: {}", source.0),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::External { source, .. } => Some(&*source.0),
            _ => None,
        }
    }
}

impl From<crate::emd::EmdError> for Error {
    fn from(e: crate::emd::EmdError) -> Self {
        use crate::emd::EmdError as E;
        match e {
            E::ShapeMismatch { n1, n2, cost_len } => Error::ShapeMismatch {
                arg: "cost",
                expected: format!("{n1} x {n2} ({} entries)", n1 * n2),
                found: format!("{cost_len} entries"),
            },
            E::NonFinite { which, index } => Error::NonFinite {
                arg: which,
                row: index,
                col: 0,
            },
            E::Negative { which, index } => Error::Negative {
                arg: which,
                row: index,
                col: 0,
                value: f64::NAN,
            },
            E::MassMismatch { sum_a, sum_b } => Error::MassMismatch { sum_a, sum_b },
            E::Empty => Error::ShapeMismatch {
                arg: "a",
                expected: "at least one point".into(),
                found: "none".into(),
            },
            E::MaxIterations { iterations } => Error::Numerical {
                solver: "emd",
                iteration: iterations,
                message: "the network simplex hit its pivot limit; raise max_iter".into(),
            },
            e @ E::NonFiniteResult { iterations, .. } => Error::Numerical {
                solver: "emd",
                iteration: iterations,
                message: e.to_string(),
            },
        }
    }
}

/// Shorthand for `Result<T, wassdl::Error>`.
pub type Result<T> = std::result::Result<T, Error>;
