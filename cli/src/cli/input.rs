//! Input files: loading, NumPy layouts, and error messages that name the file.

use super::error::CliError;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use wassdl::{Batch, Error, Real};
use wassdl_cli::npy::{self, Dtype, NpyArray};

/// How a file's array maps onto the library's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Histograms, one per index of the first axis (NumPy's one-per-row habit): a
    /// `(M, ...)` file is the `N × M` [`Batch`] of its rows, a 1-D file one column.
    Rows,
    /// A matrix indexed `[row, col]` as in the file (cost matrices).
    Matrix,
}

/// A loaded input file, with the option that named it.
pub struct Input {
    /// The option, e.g. `--a`.
    pub opt: &'static str,
    path: PathBuf,
    shape: Vec<usize>,
    dtype: Dtype,
    layout: Layout,
    array: Option<NpyArray>,
}

impl Input {
    /// Reads the `.npy` file given to `opt`.
    pub fn load(opt: &'static str, path: &Path, layout: Layout) -> Result<Self, CliError> {
        // The library's message already starts with the path.
        let array = npy::read_npy(path).map_err(|e| CliError(format!("{opt} {e}")))?;
        Ok(Input {
            opt,
            path: path.to_path_buf(),
            shape: array.shape().to_vec(),
            dtype: array.dtype(),
            layout,
            array: Some(array),
        })
    }

    /// Reads the `.npy` file given to `opt` (any nonnegative float or integer array, e.g.
    /// uint8 images) and makes each histogram of a [`Layout::Rows`] file sum to one with
    /// [`wassdl_cli::datasets::to_histograms`] (`--normalize`). The result is float64.
    pub fn load_normalized(opt: &'static str, path: &Path) -> Result<Self, CliError> {
        let array = npy::read_npy_numeric(path).map_err(|e| CliError(format!("{opt} {e}")))?;
        let shape = array.shape().to_vec();
        let mut input = Input {
            opt,
            path: path.to_path_buf(),
            shape: shape.clone(),
            dtype: Dtype::F64,
            layout: Layout::Rows,
            array: None,
        };
        let raw: Batch<f64> = array.into_batch();
        let h = wassdl_cli::datasets::to_histograms(&raw, &Default::default())
            .map_err(|e| input.explain(e, &|r, c| Some(raw.get(r, c))))?;
        input.array = Some(NpyArray::from_batch(h, shape).map_err(|e| input.fail(e))?);
        Ok(input)
    }

    /// `--a path/to/A.npy`.
    pub fn name(&self) -> String {
        format!("{} {}", self.opt, self.path.display())
    }
    /// An error about this file.
    pub fn fail(&self, what: impl Display) -> CliError {
        CliError(format!("{}: {what}", self.name()))
    }
    /// Shape of the file's array.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The shape as NumPy prints it.
    pub fn shape_text(&self) -> String {
        shape_text(&self.shape)
    }
    /// Element type of the file.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// Fails unless the array has one of the `allowed` numbers of axes.
    pub fn expect_ndim(&self, allowed: &[usize], what: &str) -> Result<(), CliError> {
        if !allowed.contains(&self.ndim()) {
            Err(self.fail(format!(
                "has shape {} but must be {what}",
                self.shape_text()
            )))
        } else if self.shape.contains(&0) {
            Err(self.fail(format!("has shape {}: it is empty", self.shape_text())))
        } else {
            Ok(())
        }
    }
    /// Number of histograms `M` of a `(M, ...)` file; `None` for a single 1-D histogram.
    pub fn count(&self) -> Option<usize> {
        (self.ndim() >= 2).then(|| self.shape[0])
    }
    /// Shape of one histogram: `(N,)` or `(H, W)`.
    pub fn item_shape(&self) -> &[usize] {
        if self.ndim() >= 2 {
            &self.shape[1..]
        } else {
            &self.shape
        }
    }
    /// Number of bins of one histogram.
    pub fn item_len(&self) -> usize {
        self.item_shape().iter().product()
    }
    /// The histograms as columns (see [`Layout::Rows`]); the data moves out of `self`.
    pub fn take_batch<T: Real>(&mut self) -> Batch<T> {
        self.array
            .take()
            .map(|a| a.into_batch())
            .unwrap_or_else(|| Batch::zeros(0, 0))
    }
    /// The elements in C order; the data moves out of `self`.
    pub fn take_vec<T: Real>(&mut self) -> Vec<T> {
        self.array.take().map(|a| a.into_vec()).unwrap_or_default()
    }

    /// This file's 2-D array (`(rows, cols)`, C order) as a `rows × cols` batch, every
    /// entry checked finite (the message names the file's entry); the data moves out.
    pub fn take_finite_matrix(&mut self) -> Result<Batch<f64>, CliError> {
        let cols = self.shape.get(1).copied().unwrap_or(1).max(1);
        let rows = self.shape.first().copied().unwrap_or(1);
        let v: Vec<f64> = self.take_vec();
        if let Some(k) = v.iter().position(|x| !x.is_finite()) {
            return Err(self.fail(format!(
                "entry [{}, {}] is not finite ({})",
                k / cols,
                k % cols,
                v[k]
            )));
        }
        Ok(Batch::from_fn(rows, cols, |i, j| v[i * cols + j]))
    }

    /// NumPy index of the library's entry `(row, col)` of this file's matrix.
    pub fn index(&self, row: usize, col: usize) -> String {
        let idx = match self.layout {
            Layout::Matrix => vec![row, col],
            Layout::Rows => {
                let mut flat = col * self.item_len().max(1) + row;
                let mut idx = vec![0; self.ndim()];
                for (a, &n) in self.shape.iter().enumerate().rev() {
                    idx[a] = flat % n.max(1);
                    flat /= n.max(1);
                }
                idx
            }
        };
        format!(
            "[{}]",
            idx.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// What a histogram of this file is called in messages.
    fn item_name(&self, col: usize) -> String {
        match self.ndim() {
            0 | 1 => "the histogram".into(),
            2 => format!("row {col}"),
            _ => format!("image {col}"),
        }
    }

    /// The message for a library error about this file; `value` looks up the library's
    /// entry `(row, col)` to say whether a non-finite entry is NaN or infinite.
    pub fn explain(&self, e: Error, value: &dyn Fn(usize, usize) -> Option<f64>) -> CliError {
        match e {
            Error::NonFinite { row, col, .. } => {
                let v = value(row, col).map_or(String::new(), |v| format!(" ({v})"));
                self.fail(format!("entry {} is not finite{v}", self.index(row, col)))
            }
            Error::Negative {
                row, col, value, ..
            } => self.fail(format!(
                "entry {} is negative ({value:e}); histograms must be nonnegative",
                self.index(row, col)
            )),
            Error::NotNormalized { col, sum, tol, .. } => self.fail(format!(
                "{} sums to {sum:.8} but must sum to 1 (tolerance {tol:.1e})",
                self.item_name(col)
            )),
            other => self.fail(other),
        }
    }

    /// Runs a check of the library's `validate` module on this file's batch `x` and words
    /// its error in terms of the file.
    pub fn check<T: Real>(
        &self,
        x: &Batch<T>,
        check: impl FnOnce(&Batch<T>) -> wassdl::Result<()>,
    ) -> Result<(), CliError> {
        check(x).map_err(|e| {
            self.explain(e, &|r, c| {
                (r < x.rows() && c < x.cols()).then(|| x.get(r, c).to_f64_())
            })
        })
    }
}

/// A shape as NumPy prints it: `(3,)`, `(2, 5)`.
pub fn shape_text(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Fails early if `path` cannot become an output file (its directory is missing or it is
/// a directory), before any work is done.
pub fn check_output(opt: &str, path: &Path) -> Result<(), CliError> {
    let fail = |what: &str| CliError(format!("{opt} {}: {what}", path.display()));
    if path.is_dir() {
        return Err(fail("is a directory"));
    }
    if path.file_name().is_none() {
        return Err(fail("is not a file name"));
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            Err(fail(&format!("directory {} does not exist", d.display())))
        }
        _ => Ok(()),
    }
}

/// Creates and removes a probe file in `dir`: whether an output can be written there,
/// known before any work rather than after it.
pub fn probe_dir(dir: &Path) -> std::io::Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let probe = dir.join(format!(
        ".wassdl-probe.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Whether two existing paths name the same file (same device and inode on Unix, so also
/// through `./`, `..`, symbolic or hard links; the same canonical path elsewhere).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Checks every output location before any work: each can become a file
/// ([`check_output`]), its directory is writable, it is none of the `inputs` (writing it
/// would destroy an input, even through another path to the same file) and no two
/// outputs are the same file. `(option, path)` pairs.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<(), CliError> {
    for (k, &(opt, out)) in outputs.iter().enumerate() {
        check_output(opt, out)?;
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        probe_dir(dir).map_err(|e| {
            CliError(format!(
                "{opt} {}: cannot write in {}: {e}",
                out.display(),
                dir.display()
            ))
        })?;
        let same = |p: &Path| p == out || same_file(p, out);
        if let Some((iopt, ip)) = inputs.iter().find(|(_, p)| same(p)) {
            return Err(CliError(format!(
                "{opt} {} is the input {iopt} {}: writing it would destroy the input; choose another output file",
                out.display(),
                ip.display()
            )));
        }
        if let Some((oopt, op)) = outputs[..k].iter().find(|(_, p)| same(p)) {
            return Err(CliError(format!(
                "{opt} {} is the same file as {oopt} {}: give them different names",
                out.display(),
                op.display()
            )));
        }
    }
    Ok(())
}

/// Fails unless `path` (given to `opt`) ends in `.ext`: `what` is what the subcommand
/// writes there. An `.npz` archive named `.npy` (or the reverse) would be misread by
/// `np.load` and every script that follows the name.
pub fn check_ext(opt: &str, path: &Path, ext: &str, what: &str) -> Result<(), CliError> {
    let got = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if got.as_deref() == Some(ext) {
        Ok(())
    } else {
        Err(CliError(format!(
            "{opt} {}: this subcommand writes {what}: give a file name ending in .{ext}",
            path.display()
        )))
    }
}

/// Divides every column of `x` by its mass summed in f64, when a float32 file (`from`)
/// is computed in float64: its histograms were normalized in float32 and carry up to
/// `n · ε₃₂ ≈ 1e-7` of mass error, which a float64 tolerance (1e-9) on the marginals
/// can never meet against a float64 partner. Call after the simplex check.
pub fn renormalize<T: Real>(x: &mut Batch<T>, from: Dtype) {
    if from == Dtype::F32 && Dtype::of::<T>() == Dtype::F64 {
        for j in 0..x.cols() {
            let s = T::of(wassdl::validate::sum_f64(x.col(j)));
            if s > T::zero() {
                x.col_mut(j).iter_mut().for_each(|v| *v /= s);
            }
        }
    }
}

/// Refuses to write a result `what` (histograms as columns) that is not finite: an
/// overflowed solve is an error, never an output.
pub fn finite_output<T: Real>(opt: &str, what: &str, x: &Batch<T>) -> Result<(), CliError> {
    match x.first_non_finite() {
        None => Ok(()),
        Some((row, col)) => Err(CliError(format!(
            "the {what} is not finite at [{col}, {row}] (histogram {col}, bin {row}: {}); nothing \
             was written to {opt}: the inputs or the regularization are beyond the range of the \
             floats, rescale them",
            x.get(row, col).to_f64_()
        ))),
    }
}

/// Writes an output, naming the option in the error.
pub fn write_out(opt: &str, result: wassdl::Result<()>) -> Result<(), CliError> {
    result.map_err(|e| CliError(format!("{opt} {e}")))
}
