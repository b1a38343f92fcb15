//! [`Batch`]: a batch of column vectors in one contiguous column-major buffer.
//!
//! faer's owned `Mat` pads each column to a SIMD multiple, so its storage is not one
//! slice. The solvers need exactly that (a batch of images viewed as one tall matrix for
//! a single GEMM, or elementwise loops over the whole batch), so they keep their
//! buffers here and lend faer zero-copy views of them.

use crate::real::Real;
use faer::{Mat, MatMut, MatRef};

/// `rows × cols` column-major matrix in one `Vec`, each column one vector of the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Real> Batch<T> {
    /// All zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::filled(rows, cols, T::zero())
    }
    /// Every entry `value`.
    pub fn filled(rows: usize, cols: usize, value: T) -> Self {
        Batch {
            rows,
            cols,
            data: vec![value; rows * cols],
        }
    }
    /// Wraps a column-major vector. Panics if `data.len() != rows * cols` (a programming error).
    pub fn from_vec(rows: usize, cols: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), rows * cols, "Batch::from_vec: length mismatch");
        Batch { rows, cols, data }
    }
    /// Entry `(i, j)` is `f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for j in 0..cols {
            for i in 0..rows {
                data.push(f(i, j));
            }
        }
        Batch { rows, cols, data }
    }
    /// Copies any faer matrix view.
    pub fn from_mat(m: MatRef<'_, T>) -> Self {
        Self::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
    }
    /// Copies into an owned faer matrix.
    pub fn to_mat(&self) -> Mat<T> {
        Mat::from_fn(self.rows, self.cols, |i, j| self.data[i + j * self.rows])
    }
    /// Number of rows (the support size).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns (the batch size).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The whole buffer, column-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    /// The whole buffer, column-major, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
    /// Consumes into the column-major vector.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
    /// Column `j`.
    pub fn col(&self, j: usize) -> &[T] {
        &self.data[j * self.rows..(j + 1) * self.rows]
    }
    /// Column `j`, mutable.
    pub fn col_mut(&mut self, j: usize) -> &mut [T] {
        &mut self.data[j * self.rows..(j + 1) * self.rows]
    }
    /// Entry `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> T {
        self.data[i + j * self.rows]
    }
    /// Sets entry `(i, j)`.
    pub fn set(&mut self, i: usize, j: usize, v: T) {
        self.data[i + j * self.rows] = v;
    }
    /// Zero-copy faer view.
    pub fn view(&self) -> MatRef<'_, T> {
        MatRef::from_column_major_slice(&self.data, self.rows, self.cols)
    }
    /// Zero-copy mutable faer view.
    pub fn view_mut(&mut self) -> MatMut<'_, T> {
        MatMut::from_column_major_slice_mut(&mut self.data, self.rows, self.cols)
    }
    /// Same buffer seen with another shape of equal size (a free reshape).
    pub fn reshaped(mut self, rows: usize, cols: usize) -> Self {
        assert_eq!(
            rows * cols,
            self.data.len(),
            "Batch::reshaped: size mismatch"
        );
        self.rows = rows;
        self.cols = cols;
        self
    }
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    /// Applies `f` to every entry.
    pub fn map(&self, f: impl Fn(T) -> T) -> Self {
        Batch {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }
    /// Sum of every entry.
    pub fn sum(&self) -> T {
        crate::real::wide_sum(self.data.iter().copied())
    }
    /// Sum of each column.
    pub fn col_sums(&self) -> Vec<T> {
        (0..self.cols)
            .map(|j| crate::real::wide_sum(self.col(j).iter().copied()))
            .collect()
    }
    /// Position of the first non-finite entry, if any.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        self.data
            .iter()
            .position(|x| !x.is_finite())
            .map(|k| (k % self.rows.max(1), k / self.rows.max(1)))
    }
    /// Converts the precision.
    pub fn cast<U: Real>(&self) -> Batch<U> {
        Batch {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&x| U::of(x.to_f64_())).collect(),
        }
    }
}
