//! A reverse-mode tape over whole matrices.
//!
//! Every node holds one [`Batch`] (a batch of vectors), never a scalar: a Sinkhorn
//! iteration over `S·M` columns records a dozen nodes, whatever `N`, `S` and `M` are.
//! [`Tape`] implements [`Ops`], so the barycenter iterations of
//! [`crate::barycenter`] record themselves when run on it; the same methods are
//! available to build any other differentiable computation.
//!
//! ```
//! use wassdl::{Batch, Ops, tape::Tape};
//! let mut t = Tape::<f64>::new();
//! let x = t.var(Batch::from_vec(3, 1, vec![1.0, 2.0, 3.0]));
//! let y = t.exp(&x);
//! let s = t.sum(&y); // Σ exp(x)
//! let g = t.backward(s);
//! assert!((g.wrt(x).get(1, 0) - 2f64.exp()).abs() < 1e-12);
//! ```

use crate::batch::Batch;
use crate::kernel::{apply_log_new, Kernel};
use crate::ops::{self, zip_map, Ops};
use crate::real::{wide_sum, Real};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Handle to a node of a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

impl Var {
    /// Position of the node on its tape.
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Clone, Copy)]
enum Op<'k, T: Real> {
    Leaf,
    Const,
    Kernel(usize, &'k dyn Kernel<T>, bool),
    LogKernel(usize, &'k dyn Kernel<T>, bool),
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Div(usize, usize),
    Scale(usize, T),
    Pow(usize, T),
    Exp(usize),
    Log(usize),
    Abs(usize),
    /// Algorithm 5's heavy-ball step `(prev, new, τ, log)`, see [`ops::heavy_ball`].
    HeavyBall(usize, usize, T, bool),
    Tile(usize),
    Repeat(usize, usize),
    BlockDot(usize, usize),
    BlockLse(usize, usize),
    MatMul(usize, usize),
    BroadcastCol(usize),
    ColSums(usize),
    SoftmaxCols(usize),
    Sum(usize),
    Dot(usize, usize),
    SumSq(usize),
    /// A node whose gradient with respect to its input is given (`grad_in = g · G`, `g`
    /// the scalar upstream gradient): used for losses whose gradient is known in closed
    /// form (Table 1's Wasserstein loss).
    Given(usize, usize),
}

struct Node<'k, T: Real> {
    value: Batch<T>,
    op: Op<'k, T>,
    needs_grad: bool,
}

/// A reverse-mode tape. `'k` is the lifetime of the kernels it records.
pub struct Tape<'k, T: Real> {
    nodes: Vec<Node<'k, T>>,
    /// Side storage for [`Op::Given`] gradients.
    given: Vec<Batch<T>>,
    /// Free buffers: node values and gradients are taken from here, and the backward
    /// pass returns each gradient once consumed.
    buffers: RefCell<TapeBuffers<T>>,
}

/// Buffers of a finished [`Tape`], to record the next computation of the same shapes
/// without allocating: [`Tape::into_buffers`] hands them out, [`Tape::with_buffers`]
/// takes them back. An objective evaluated again and again (an L-BFGS fit) then
/// allocates, page-faults and zeroes its tape only once: every buffer handed out is
/// overwritten entirely by the operation that takes it, so stale contents never leak.
/// Buffers are keyed by their exact length; one of a length nobody asks for again
/// just stays until the value is dropped.
pub struct TapeBuffers<T> {
    /// Buffers handed over by the previous tape.
    free: BTreeMap<usize, Vec<Vec<T>>>,
    /// Buffers returned while the current tape runs (its consumed gradients).
    returned: BTreeMap<usize, Vec<Vec<T>>>,
}

impl<T> Default for TapeBuffers<T> {
    fn default() -> Self {
        TapeBuffers {
            free: BTreeMap::new(),
            returned: BTreeMap::new(),
        }
    }
}

/// Buffers shorter than this are not kept: allocating them is cheap (the C allocator
/// recycles small blocks itself), and the pool stays small.
const MIN_POOLED: usize = 1024;

impl<T: Real> TapeBuffers<T> {
    /// No buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.free
            .iter()
            .chain(&self.returned)
            .map(|(&len, v)| len * v.len() * std::mem::size_of::<T>())
            .sum()
    }

    /// A `rows × cols` batch with arbitrary (finite or not) contents, from a free buffer
    /// of that length when there is one.
    fn take(&mut self, rows: usize, cols: usize) -> Batch<T> {
        let len = rows * cols;
        // Buffers returned by this tape first: the backward pass then cycles through as
        // few distinct buffers as it has gradients live, and whatever of the previous
        // tape's stays untaken is dropped at the end (`settle`).
        let data = self
            .returned
            .get_mut(&len)
            .and_then(Vec::pop)
            .or_else(|| self.free.get_mut(&len).and_then(Vec::pop))
            .unwrap_or_else(|| vec![T::zero(); len]);
        Batch::from_vec(rows, cols, data)
    }

    fn give(&mut self, b: Batch<T>) {
        let data = b.into_vec();
        if data.len() >= MIN_POOLED {
            self.returned.entry(data.len()).or_default().push(data);
        }
    }

    /// Keeps what the finished tape used (its values, then handed in, and the buffers it
    /// returned) and drops what it left untaken: a tape of the same shapes will not need
    /// those either. Without this the pool would grow at every evaluation by the
    /// buffers of the constants a caller passes in (initial scalings, targets), which
    /// come from outside the pool but are returned into it.
    fn settle(&mut self) {
        self.free = std::mem::take(&mut self.returned);
    }
}

impl<T: Real> Default for Tape<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Gradients of a scalar with respect to the leaves of a [`Tape`].
pub struct Gradients<T: Real> {
    grads: Vec<Option<Batch<T>>>,
    shapes: Vec<(usize, usize)>,
}

impl<T: Real> Gradients<T> {
    /// Gradient with respect to `v`, if any flowed into it.
    pub fn get(&self, v: Var) -> Option<&Batch<T>> {
        self.grads.get(v.0).and_then(|g| g.as_ref())
    }
    /// Gradient with respect to `v` (zeros if nothing flowed into it).
    pub fn wrt(&self, v: Var) -> Batch<T> {
        self.get(v).cloned().unwrap_or_else(|| {
            let (r, c) = self.shapes[v.0];
            Batch::zeros(r, c)
        })
    }
}

/// `acc += g` entry by entry, vectorized.
fn add_assign<T: Real>(acc: &mut [T], g: &[T]) {
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (a, &b) in acc.iter_mut().zip(g) {
                *a += b;
            }
        },
    )
}

/// Adds one contribution to a gradient slot in a single pass over the data: writes
/// `f(a_k, b_k, c_k)` into a fresh buffer when the slot is empty, else adds it to the
/// slot's entries (`acc_k += f(..)`, the same operations, and bits, as computing the
/// contribution first and adding it after). Unused inputs are passed as `a` again.
macro_rules! accumulate {
    ($self:ident, $slot:expr, $a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $f:expr) => {{
        let (ia, ib, ic) = ($a.as_slice(), $b.as_slice(), $c.as_slice());
        let slot: &mut Option<Batch<T>> = $slot;
        let fresh = slot.is_none();
        if fresh {
            *slot = Some($self.fresh($a.rows(), $a.cols()));
        }
        let out = slot.as_mut().expect("filled above").as_mut_slice();
        crate::kernel::lse::vectorized(
            #[inline(always)]
            || {
                if fresh {
                    for (((o, &$x), &$y), &$z) in out.iter_mut().zip(ia).zip(ib).zip(ic) {
                        *o = $f;
                    }
                } else {
                    for (((o, &$x), &$y), &$z) in out.iter_mut().zip(ia).zip(ib).zip(ic) {
                        *o += $f;
                    }
                }
            },
        );
    }};
}

impl<'k, T: Real> Tape<'k, T> {
    /// An empty tape.
    pub fn new() -> Self {
        Self::with_buffers(TapeBuffers::new())
    }

    /// An empty tape that records into the buffers of an earlier one (see
    /// [`TapeBuffers`]).
    pub fn with_buffers(buffers: TapeBuffers<T>) -> Self {
        Tape {
            nodes: Vec::new(),
            given: Vec::new(),
            buffers: RefCell::new(buffers),
        }
    }

    /// Ends the tape, keeping every recorded value's buffer for the next one.
    pub fn into_buffers(self) -> TapeBuffers<T> {
        let mut b = self.buffers.into_inner();
        for node in self.nodes {
            b.give(node.value);
        }
        for g in self.given {
            b.give(g);
        }
        b.settle();
        b
    }

    /// A `rows × cols` buffer with arbitrary contents: the caller overwrites every entry.
    fn fresh(&self, rows: usize, cols: usize) -> Batch<T> {
        self.buffers.borrow_mut().take(rows, cols)
    }

    fn recycle(&self, b: Batch<T>) {
        self.buffers.borrow_mut().give(b);
    }

    /// [`add_assign`] of a computed contribution, returning its buffer to the pool.
    fn add_into(&self, slot: &mut Option<Batch<T>>, g: Batch<T>) {
        match slot {
            Some(acc) => {
                add_assign(acc.as_mut_slice(), g.as_slice());
                self.recycle(g);
            }
            None => *slot = Some(g),
        }
    }

    /// `K x` (or `Kᵀ x`) into a buffer of the pool.
    fn apply_fresh(&self, k: &dyn Kernel<T>, x: &Batch<T>, transpose: bool) -> Batch<T> {
        let rows = if transpose { k.ncols() } else { k.nrows() };
        let mut out = self.fresh(rows, x.cols());
        if transpose {
            k.apply_t(x, &mut out)
        } else {
            k.apply(x, &mut out)
        }
        out
    }

    fn push(&mut self, value: Batch<T>, op: Op<'k, T>, inputs: &[usize]) -> Var {
        let needs_grad = match op {
            Op::Leaf => true,
            Op::Const => false,
            _ => inputs.iter().any(|&i| self.nodes[i].needs_grad),
        };
        self.nodes.push(Node {
            value,
            op,
            needs_grad,
        });
        Var(self.nodes.len() - 1)
    }

    fn val(&self, v: usize) -> &Batch<T> {
        &self.nodes[v].value
    }

    /// A leaf whose gradient [`Tape::backward`] returns.
    pub fn var(&mut self, x: Batch<T>) -> Var {
        self.push(x, Op::Leaf, &[])
    }

    /// Number of nodes recorded.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Bytes held by the recorded values (the forward part of the peak memory; the
    /// backward pass adds at most the gradients of the nodes still live).
    pub fn memory_bytes(&self) -> usize {
        let vals: usize = self.nodes.iter().map(|n| n.value.as_slice().len()).sum();
        let given: usize = self.given.iter().map(|g| g.as_slice().len()).sum();
        (vals + given) * std::mem::size_of::<T>()
    }

    /// `Σ_ij x_ij` as a `1 × 1` node.
    pub fn sum(&mut self, x: &Var) -> Var {
        let s = self.val(x.0).sum();
        self.push(Batch::filled(1, 1, s), Op::Sum(x.0), &[x.0])
    }

    /// `⟨a, b⟩` (Frobenius) as a `1 × 1` node.
    pub fn dot(&mut self, a: &Var, b: &Var) -> Var {
        let s = wide_sum(
            self.val(a.0)
                .as_slice()
                .iter()
                .zip(self.val(b.0).as_slice())
                .map(|(&x, &y)| x * y),
        );
        self.push(Batch::filled(1, 1, s), Op::Dot(a.0, b.0), &[a.0, b.0])
    }

    /// `‖x‖²` (Frobenius) as a `1 × 1` node.
    pub fn sum_sq(&mut self, x: &Var) -> Var {
        let s = wide_sum(self.val(x.0).as_slice().iter().map(|&v| v * v));
        self.push(Batch::filled(1, 1, s), Op::SumSq(x.0), &[x.0])
    }

    /// `|x|` elementwise (subgradient 0 at 0, as JAX).
    pub fn abs(&mut self, x: &Var) -> Var {
        let v = self.val(x.0).map(|a| a.abs());
        self.push(v, Op::Abs(x.0), &[x.0])
    }

    /// Matrix product `a b`.
    pub fn matmul(&mut self, a: &Var, b: &Var) -> Var {
        let (av, bv) = (self.val(a.0), self.val(b.0));
        let mut out = Batch::zeros(av.rows(), bv.cols());
        crate::kernel::gemm(
            out.view_mut(),
            faer::Accum::Replace,
            av.view(),
            bv.view(),
            T::one(),
            faer::Par::Seq,
        );
        self.push(out, Op::MatMul(a.0, b.0), &[a.0, b.0])
    }

    /// `N × 1` → `N × cols`, the column repeated.
    pub fn broadcast_col(&mut self, x: &Var, cols: usize) -> Var {
        let v = ops::tile(self.val(x.0), cols);
        self.push(v, Op::BroadcastCol(x.0), &[x.0])
    }

    /// Column sums, `N × M` → `1 × M`.
    pub fn col_sums(&mut self, x: &Var) -> Var {
        let s = self.val(x.0).col_sums();
        let m = s.len();
        self.push(Batch::from_vec(1, m, s), Op::ColSums(x.0), &[x.0])
    }

    /// Softmax of each column (the change of variables of eq. 13).
    pub fn softmax_cols(&mut self, x: &Var) -> Var {
        let v = softmax_cols(self.val(x.0));
        self.push(v, Op::SoftmaxCols(x.0), &[x.0])
    }

    /// A scalar node with value `value` whose gradient with respect to `x` is
    /// `grad` (same shape as `x`), supplied by the caller (closed-form gradients).
    pub fn given(&mut self, x: &Var, value: T, grad: Batch<T>) -> Var {
        assert_eq!(
            grad.shape(),
            self.val(x.0).shape(),
            "Tape::given: gradient shape"
        );
        self.given.push(grad);
        let gi = self.given.len() - 1;
        self.push(Batch::filled(1, 1, value), Op::Given(x.0, gi), &[x.0])
    }

    /// Gradient of the `1 × 1` node `output` with respect to every leaf.
    pub fn backward(&self, output: Var) -> Gradients<T> {
        assert_eq!(
            self.val(output.0).shape(),
            (1, 1),
            "Tape::backward: output must be 1 x 1"
        );
        self.backward_with(&[(output, Batch::filled(1, 1, T::one()))])
    }

    /// Vector-Jacobian product: the gradient of `Σ_k ⟨seed_k, node_k⟩` with respect to
    /// every leaf.
    pub fn backward_with(&self, seeds: &[(Var, Batch<T>)]) -> Gradients<T> {
        let n = self.nodes.len();
        let mut g: Vec<Option<Batch<T>>> = (0..n).map(|_| None).collect();
        let mut last = 0;
        for (v, s) in seeds {
            assert_eq!(
                s.shape(),
                self.val(v.0).shape(),
                "Tape::backward_with: seed shape"
            );
            self.add_into(&mut g[v.0], s.clone());
            last = last.max(v.0);
        }
        for i in (0..=last).rev() {
            if !self.nodes[i].needs_grad {
                g[i] = None;
                continue;
            }
            let Some(gi) = (if matches!(self.nodes[i].op, Op::Leaf) {
                None
            } else {
                g[i].take()
            }) else {
                continue;
            };
            self.propagate(i, &gi, &mut g);
            self.recycle(gi);
        }
        Gradients {
            grads: g,
            shapes: self.nodes.iter().map(|n| n.value.shape()).collect(),
        }
    }

    fn propagate(&self, i: usize, gi: &Batch<T>, g: &mut [Option<Batch<T>>]) {
        let y = &self.nodes[i].value;
        let need = |j: usize| self.nodes[j].needs_grad;
        match self.nodes[i].op {
            Op::Leaf | Op::Const => {}
            Op::Kernel(x, k, t) => {
                if need(x) {
                    let gx = self.apply_fresh(k, gi, !t);
                    self.add_into(&mut g[x], gx);
                }
            }
            Op::LogKernel(x, k, t) => {
                if need(x) {
                    // y = log K e^x ⇒ ∂L/∂x_j = e^{x_j} Σ_i K_ij g_i e^{-y_i}: the signed
                    // log-domain kernel keeps it finite where e^{-y} would overflow.
                    let lg = zip_map(gi, y, |gv, yv| {
                        if gv == T::zero() {
                            T::neg_infinity()
                        } else {
                            gv.abs().ln() - yv
                        }
                    });
                    let sg = gi
                        .map(|gv| gv.signum() * if gv == T::zero() { T::zero() } else { T::one() });
                    let rows = if t { k.nrows() } else { k.ncols() };
                    let (mut lo, mut so) =
                        (Batch::zeros(rows, gi.cols()), Batch::zeros(rows, gi.cols()));
                    k.apply_log_signed(&lg, &sg, &mut lo, &mut so, !t);
                    let xv = self.val(x);
                    let mut gx = Batch::zeros(rows, gi.cols());
                    for (((o, &l), &s), &xj) in gx
                        .as_mut_slice()
                        .iter_mut()
                        .zip(lo.as_slice())
                        .zip(so.as_slice())
                        .zip(xv.as_slice())
                    {
                        *o = if s == T::zero() || xj == T::neg_infinity() {
                            T::zero()
                        } else {
                            s * (l + xj).exp()
                        };
                    }
                    self.add_into(&mut g[x], gx);
                }
            }
            Op::Add(a, b) => {
                if need(a) {
                    accumulate!(self, &mut g[a], gi, gi, gi, |x, _y, _z| x);
                }
                if need(b) {
                    accumulate!(self, &mut g[b], gi, gi, gi, |x, _y, _z| x);
                }
            }
            Op::Sub(a, b) => {
                if need(a) {
                    accumulate!(self, &mut g[a], gi, gi, gi, |x, _y, _z| x);
                }
                if need(b) {
                    accumulate!(self, &mut g[b], gi, gi, gi, |x, _y, _z| -x);
                }
            }
            Op::Mul(a, b) => {
                let (av, bv) = (self.val(a), self.val(b));
                if need(a) {
                    accumulate!(self, &mut g[a], gi, bv, gi, |x, yb, _z| x * yb);
                }
                if need(b) {
                    accumulate!(self, &mut g[b], gi, av, gi, |x, ya, _z| x * ya);
                }
            }
            Op::Div(a, b) => {
                let bv = self.val(b);
                if need(a) {
                    accumulate!(self, &mut g[a], gi, bv, gi, |x, bb, _z| x / bb);
                }
                if need(b) {
                    // ∂(a/b)/∂b = -(a/b)/b = -y/b, in one pass.
                    accumulate!(self, &mut g[b], gi, y, bv, |x, yv, bb| -(x * yv) / bb);
                }
            }
            Op::Scale(a, c) => {
                if need(a) {
                    accumulate!(self, &mut g[a], gi, gi, gi, |x, _y, _z| c * x);
                }
            }
            Op::Pow(a, c) => {
                if need(a) {
                    // c y / base rather than c base^{c-1}, which overflows for a base near
                    // the bottom of the range where y is finite (see `HeavyBall`); at a
                    // zero base the power form gives the limit (0, or ∞ for c < 1).
                    let av = self.val(a);
                    accumulate!(
                        self,
                        &mut g[a],
                        gi,
                        av,
                        y,
                        |x, base, yv| if base == T::zero() {
                            x * c * base.powf(c - T::one())
                        } else {
                            x * (c * (yv / base))
                        }
                    );
                }
            }
            Op::Exp(a) => {
                if need(a) {
                    accumulate!(self, &mut g[a], gi, y, gi, |x, yv, _z| x * yv);
                }
            }
            Op::Log(a) => {
                if need(a) {
                    // g / a, except that a zero upstream gradient stays zero at a = 0
                    // (0/0 would be NaN): the log-domain barycenter takes `log d` of atoms
                    // with empty bins, whose `-∞` then reaches nothing (the log kernel's
                    // backward weighs it by `e^{-∞} = 0`, the heavy-ball step pins it).
                    // The same convention as `block_dot`'s `0 · ∞`; it reports 0, not a
                    // one-sided derivative, for an empty bin of an atom.
                    let av = self.val(a);
                    accumulate!(self, &mut g[a], gi, av, gi, |x, ya, _z| if x == T::zero() {
                        x
                    } else {
                        x / ya
                    });
                }
            }
            Op::Abs(a) => {
                if need(a) {
                    let s = |v: T| {
                        if v > T::zero() {
                            T::one()
                        } else if v < T::zero() {
                            -T::one()
                        } else {
                            T::zero()
                        }
                    };
                    self.add_into(&mut g[a], zip_map(gi, self.val(a), |x, av| x * s(av)));
                }
            }
            Op::HeavyBall(p, n, tau, log) => {
                // y = p^τ n^{1-τ}: ∂y/∂p = τ y / p, ∂y/∂n = (1-τ) y / n; on logarithms
                // y = τ p + (1-τ) n. The quotients of the (finite) forward value are used
                // instead of the textbook `τ p^{τ-1} n^{1-τ}`: at a scaling near the
                // bottom of the range (p ≈ 1e-281 in a PSF fit) `p^{τ-1}` overflows and
                // `∞ · n^{1-τ}` made every gradient NaN while the loss was finite.
                // Where `new` is zero (`-∞`) the forward pinned y to zero (`-∞`, see
                // `ops::heavy_ball_into`) and the gradient is 0 to both inputs. That is
                // the exact derivative of the scaling form for p > 0 (the exponent 1 - τ > 1
                // makes n^{1-τ} flat at 0) and of the pinned value; using the formulas
                // there would give 0 / 0 = NaN.
                let (pv, nv) = (self.val(p), self.val(n));
                let zero_at = |nk: T| {
                    if log {
                        nk == T::neg_infinity()
                    } else {
                        nk == T::zero()
                    }
                };
                // The gradient to input `x` (`p` or `n`) whose partial derivative is `c y / x`.
                let grad_to = |x: &Batch<T>, c: T| {
                    let mut gx = self.fresh(x.rows(), x.cols());
                    let ins = x.as_slice().iter().zip(nv.as_slice());
                    let outs = gi.as_slice().iter().zip(y.as_slice());
                    for (o, ((&xk, &nk), (&gk, &yk))) in
                        gx.as_mut_slice().iter_mut().zip(ins.zip(outs))
                    {
                        *o = if zero_at(nk) {
                            T::zero()
                        } else if log {
                            c * gk
                        } else {
                            gk * (c * (yk / xk))
                        };
                    }
                    gx
                };
                let gp = need(p).then(|| grad_to(pv, tau));
                let gn = need(n).then(|| grad_to(nv, T::one() - tau));
                if let Some(gp) = gp {
                    self.add_into(&mut g[p], gp);
                }
                if let Some(gn) = gn {
                    self.add_into(&mut g[n], gn);
                }
            }
            Op::Tile(d) => {
                if need(d) {
                    let dv = self.val(d);
                    let (n, s) = dv.shape();
                    let mut gd = Batch::zeros(n, s);
                    for c in 0..gi.cols() {
                        for (o, &v) in gd.col_mut(c % s).iter_mut().zip(gi.col(c)) {
                            *o += v;
                        }
                    }
                    self.add_into(&mut g[d], gd);
                }
            }
            Op::Repeat(p, s) => {
                if need(p) {
                    let (n, m) = self.val(p).shape();
                    let mut gp = self.fresh(n, m);
                    gp.as_mut_slice().fill(T::zero());
                    for c in 0..gi.cols() {
                        for (o, &v) in gp.col_mut(c / s).iter_mut().zip(gi.col(c)) {
                            *o += v;
                        }
                    }
                    self.add_into(&mut g[p], gp);
                }
            }
            Op::BlockDot(x, w) => {
                let (xv, wv) = (self.val(x), self.val(w));
                let (s, m) = wv.shape();
                if need(x) {
                    // Every column `j·S + k` is written below.
                    let mut gx = self.fresh(xv.rows(), xv.cols());
                    for j in 0..m {
                        for k in 0..s {
                            let wk = wv.get(k, j);
                            for (o, &v) in gx.col_mut(j * s + k).iter_mut().zip(gi.col(j)) {
                                *o = wk * v;
                            }
                        }
                    }
                    self.add_into(&mut g[x], gx);
                }
                if need(w) {
                    let gw =
                        Batch::from_fn(s, m, |k, j| {
                            gi.col(j).iter().zip(xv.col(j * s + k)).fold(
                                T::zero(),
                                |acc, (&a, &b)| if a == T::zero() { acc } else { acc + a * b },
                            )
                        });
                    self.add_into(&mut g[w], gw);
                }
            }
            Op::BlockLse(x, w) => {
                let (xv, wv) = (self.val(x), self.val(w));
                let (s, m) = wv.shape();
                let n = xv.rows();
                // y = log Σ_s w_s e^{x_s}: ∂y/∂x_s = w_s e^{x_s - y}, ∂y/∂w_s = e^{x_s - y}.
                let e = |k: usize, j: usize, i: usize| {
                    let yv = y.get(i, j);
                    if yv == T::neg_infinity() {
                        T::zero()
                    } else {
                        (xv.get(i, j * s + k) - yv).exp()
                    }
                };
                if need(x) {
                    let gx = Batch::from_fn(n, s * m, |i, c| {
                        let (j, k) = (c / s, c % s);
                        gi.get(i, j) * wv.get(k, j) * e(k, j, i)
                    });
                    self.add_into(&mut g[x], gx);
                }
                if need(w) {
                    let gw = Batch::from_fn(s, m, |k, j| {
                        wide_sum((0..n).map(|i| gi.get(i, j) * e(k, j, i)))
                    });
                    self.add_into(&mut g[w], gw);
                }
            }
            Op::MatMul(a, b) => {
                let (av, bv) = (self.val(a), self.val(b));
                if need(a) {
                    let mut ga = Batch::zeros(av.rows(), av.cols());
                    crate::kernel::gemm(
                        ga.view_mut(),
                        faer::Accum::Replace,
                        gi.view(),
                        bv.view().transpose(),
                        T::one(),
                        faer::Par::Seq,
                    );
                    self.add_into(&mut g[a], ga);
                }
                if need(b) {
                    let mut gb = Batch::zeros(bv.rows(), bv.cols());
                    crate::kernel::gemm(
                        gb.view_mut(),
                        faer::Accum::Replace,
                        av.view().transpose(),
                        gi.view(),
                        T::one(),
                        faer::Par::Seq,
                    );
                    self.add_into(&mut g[b], gb);
                }
            }
            Op::BroadcastCol(x) => {
                if need(x) {
                    let n = self.val(x).rows();
                    let mut gx = Batch::zeros(n, 1);
                    for c in 0..gi.cols() {
                        for (o, &v) in gx.col_mut(0).iter_mut().zip(gi.col(c)) {
                            *o += v;
                        }
                    }
                    self.add_into(&mut g[x], gx);
                }
            }
            Op::ColSums(x) => {
                if need(x) {
                    let (n, m) = self.val(x).shape();
                    self.add_into(&mut g[x], Batch::from_fn(n, m, |_, j| gi.get(0, j)));
                }
            }
            Op::SoftmaxCols(x) => {
                if need(x) {
                    // ∂softmax: g_x = y ⊙ (g - ⟨g, y⟩) per column ([∂F]ᵀ = (I - F1ᵀ)Δ(F), section 3.1).
                    let (n, m) = y.shape();
                    let mut gx = Batch::zeros(n, m);
                    for j in 0..m {
                        let dot: T = wide_sum(gi.col(j).iter().zip(y.col(j)).map(|(&a, &b)| a * b));
                        for ((o, &a), &b) in gx.col_mut(j).iter_mut().zip(gi.col(j)).zip(y.col(j)) {
                            *o = b * (a - dot);
                        }
                    }
                    self.add_into(&mut g[x], gx);
                }
            }
            Op::Sum(x) => {
                if need(x) {
                    let (n, m) = self.val(x).shape();
                    self.add_into(&mut g[x], Batch::filled(n, m, gi.get(0, 0)));
                }
            }
            Op::Dot(a, b) => {
                let s = gi.get(0, 0);
                if need(a) {
                    self.add_into(&mut g[a], self.val(b).map(|v| s * v));
                }
                if need(b) {
                    self.add_into(&mut g[b], self.val(a).map(|v| s * v));
                }
            }
            Op::SumSq(x) => {
                if need(x) {
                    let s = gi.get(0, 0) * T::of(2.0);
                    let xv = self.val(x);
                    accumulate!(self, &mut g[x], xv, xv, xv, |v, _y, _z| s * v);
                }
            }
            Op::Given(x, gidx) => {
                if need(x) {
                    let s = gi.get(0, 0);
                    self.add_into(&mut g[x], self.given[gidx].map(|v| s * v));
                }
            }
        }
    }
}

/// Softmax of each column, max-shifted.
pub(crate) fn softmax_cols<T: Real>(x: &Batch<T>) -> Batch<T> {
    let mut out = x.clone();
    for j in 0..x.cols() {
        let c = out.col_mut(j);
        let m = c.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        for v in c.iter_mut() {
            *v = (*v - m).exp();
        }
        let s: T = wide_sum(c.iter().copied());
        for v in c.iter_mut() {
            *v /= s;
        }
    }
    out
}

impl<'k, T: Real> Ops<'k, T> for Tape<'k, T> {
    type V = Var;
    fn value<'a>(&'a self, v: &'a Var) -> &'a Batch<T> {
        self.val(v.0)
    }
    fn constant(&mut self, x: Batch<T>) -> Var {
        self.push(x, Op::Const, &[])
    }
    fn kernel(&mut self, k: &'k dyn Kernel<T>, x: &Var, transpose: bool) -> Var {
        let v = self.apply_fresh(k, self.val(x.0), transpose);
        self.push(v, Op::Kernel(x.0, k, transpose), &[x.0])
    }
    fn log_kernel(&mut self, k: &'k dyn Kernel<T>, x: &Var, transpose: bool) -> Var {
        let v = apply_log_new(k, self.val(x.0), transpose);
        self.push(v, Op::LogKernel(x.0, k, transpose), &[x.0])
    }
    fn add(&mut self, a: &Var, b: &Var) -> Var {
        let v = self.zip(a, b, |x, y| x + y);
        self.push(v, Op::Add(a.0, b.0), &[a.0, b.0])
    }
    fn sub(&mut self, a: &Var, b: &Var) -> Var {
        let v = self.zip(a, b, |x, y| x - y);
        self.push(v, Op::Sub(a.0, b.0), &[a.0, b.0])
    }
    fn mul(&mut self, a: &Var, b: &Var) -> Var {
        let v = self.zip(a, b, |x, y| x * y);
        self.push(v, Op::Mul(a.0, b.0), &[a.0, b.0])
    }
    fn div(&mut self, a: &Var, b: &Var) -> Var {
        let v = self.zip(a, b, |x, y| x / y);
        self.push(v, Op::Div(a.0, b.0), &[a.0, b.0])
    }
    fn scale(&mut self, a: &Var, c: T) -> Var {
        let av = self.val(a.0);
        let mut v = self.fresh(av.rows(), av.cols());
        ops::map_into(av, &mut v, |x| c * x);
        self.push(v, Op::Scale(a.0, c), &[a.0])
    }
    fn powf(&mut self, a: &Var, c: T) -> Var {
        let v = self.val(a.0).map(|x| x.powf(c));
        self.push(v, Op::Pow(a.0, c), &[a.0])
    }
    fn exp(&mut self, a: &Var) -> Var {
        let av = self.val(a.0);
        let mut v = self.fresh(av.rows(), av.cols());
        v.as_mut_slice().copy_from_slice(av.as_slice());
        T::exp_slice(v.as_mut_slice());
        self.push(v, Op::Exp(a.0), &[a.0])
    }
    fn log(&mut self, a: &Var) -> Var {
        // `Real::ln_slice`, as `Eager::log`: both backends give the same bits.
        let av = self.val(a.0);
        let mut v = self.fresh(av.rows(), av.cols());
        T::ln_slice(av.as_slice(), v.as_mut_slice());
        self.push(v, Op::Log(a.0), &[a.0])
    }
    fn heavy_ball(&mut self, prev: &Var, new: &Var, tau: T, log: bool) -> Var {
        let (pv, nv) = (self.val(prev.0), self.val(new.0));
        let mut v = self.fresh(pv.rows(), pv.cols());
        ops::heavy_ball_into(pv, nv, tau, log, &mut v);
        self.push(v, Op::HeavyBall(prev.0, new.0, tau, log), &[prev.0, new.0])
    }
    fn tile(&mut self, d: &Var, reps: usize) -> Var {
        let dv = self.val(d.0);
        let mut v = self.fresh(dv.rows(), dv.cols() * reps);
        ops::tile_into(dv, &mut v);
        self.push(v, Op::Tile(d.0), &[d.0])
    }
    fn repeat(&mut self, p: &Var, s: usize) -> Var {
        let pv = self.val(p.0);
        let mut v = self.fresh(pv.rows(), pv.cols() * s);
        ops::repeat_into(pv, s, &mut v);
        self.push(v, Op::Repeat(p.0, s), &[p.0])
    }
    fn block_dot(&mut self, x: &Var, w: &Var) -> Var {
        let (xv, wv) = (self.val(x.0), self.val(w.0));
        let mut v = self.fresh(xv.rows(), wv.cols());
        ops::block_dot_into(xv, wv, &mut v);
        self.push(v, Op::BlockDot(x.0, w.0), &[x.0, w.0])
    }
    fn block_lse(&mut self, x: &Var, w: &Var) -> Var {
        let v = ops::block_lse(self.val(x.0), self.val(w.0));
        self.push(v, Op::BlockLse(x.0, w.0), &[x.0, w.0])
    }
}

impl<T: Real> Tape<'_, T> {
    /// `f(a, b)` entry by entry into a buffer of the pool.
    fn zip(&self, a: &Var, b: &Var, f: impl Fn(T, T) -> T) -> Batch<T> {
        let (av, bv) = (self.val(a.0), self.val(b.0));
        let mut v = self.fresh(av.rows(), av.cols());
        ops::zip_map_into(av, bv, &mut v, f);
        v
    }
}
