"""wassdl: differentiable entropic optimal transport and Wasserstein dictionary learning.

A NumPy interface to the ``wassdl`` Rust crate (Schmitz et al., *Wasserstein Dictionary
Learning*, SIAM J. Imaging Sciences 2018). Functions that POT has carry POT's names,
argument order and array layouts (``sinkhorn``, ``sinkhorn2``, ``barycenter``,
``barycenter_unbalanced``, ``convolutional_barycenter2d``, ``emd``, ``emd2``); the
others use NumPy's "one histogram per row" layout of ``docs/cli.md``.

Precision: a call runs in float32 when every array argument is float32 and in float64
otherwise (NumPy's promotion rule); results come back in that precision. Arrays may be
C- or Fortran-ordered or strided: each is copied once into the core's column-major
buffer (a ``memcpy`` when C-ordered); a cost matrix is read in place when Fortran-ordered
or C-ordered and symmetric.
The GIL is released while the core computes.

Errors in the input raise ``ValueError`` with the core's one-line message.

>>> import numpy as np, wassdl
>>> x = np.linspace(0, 1, 50)
>>> A = np.stack([np.exp(-(x - .25)**2 / .002), np.exp(-(x - .75)**2 / .002)], 1)
>>> A /= A.sum(0)
>>> M = (x[:, None] - x[None, :])**2
>>> p = wassdl.barycenter(A, M, 1e-3)
>>> round(float(p @ x), 3)        # the mass sits halfway between the two bumps
0.5
"""

from __future__ import annotations

import pickle
import sys
from typing import Any, Callable, Optional

import numpy as np

from . import _core

__version__ = _core.__version__

__all__ = [
    "sinkhorn",
    "sinkhorn2",
    "barycenter",
    "barycenter_unbalanced",
    "convolutional_barycenter2d",
    "emd",
    "emd2",
    "unmix",
    "sinkhorn_divergence",
    "barycenter_loss_and_grad",
    "check_gradient",
    "wdl_objective",
    "WassersteinDictionary",
]


# ---------------------------------------------------------------------------------------
# argument handling


def _dtype(*arrays: Any) -> type:
    """float32 if every given array is float32, else float64 (NumPy's promotion)."""
    dts = [np.asarray(a).dtype for a in arrays if a is not None]
    for d in dts:
        if d.kind not in "fiub":
            raise ValueError(f"dtype {d} is not supported (float32 or float64 expected)")
    if dts and all(d == np.float32 for d in dts):
        return np.float32
    return np.float64


def _arr(x: Any, dt: type, name: str, ndim: Optional[tuple] = None) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"`{name}` has dtype {a.dtype}: float32 or float64 expected")
    a = a.astype(dt, copy=False)
    if ndim is not None and a.ndim not in ndim:
        want = " or ".join(str(d) for d in ndim)
        raise ValueError(f"`{name}` has {a.ndim} axes (shape {a.shape}), expected {want}")
    return a


def _unif(n: int, dt: type) -> np.ndarray:
    return np.full(n, 1.0 / n, dtype=dt)


def _is_empty(a: Any) -> bool:
    return a is None or (hasattr(a, "__len__") and len(a) == 0)


def _stop(numItermax: int, stopThr: Optional[float], n_iter: Optional[int]) -> dict:
    """POT's (numItermax, stopThr) as the core's stopping rule; stopThr = 0 (as POT's
    benchmarks pass to run exactly numItermax iterations) or n_iter = L: exactly L."""
    if n_iter is None and stopThr is not None and stopThr <= 0:
        n_iter = int(numItermax)
    if n_iter is not None:
        return {"n_iter": int(n_iter)}
    return {"tol": float(stopThr), "max_iter": int(numItermax)}


def _log_domain(method: str) -> bool:
    if method in ("sinkhorn", "sinkhorn_knopp"):
        return False
    if method in ("sinkhorn_log", "sinkhorn_stabilized", "sinkhorn_epsilon_scaling"):
        return True
    raise ValueError(
        f"`method` = {method!r} is invalid: it must be 'sinkhorn' or 'sinkhorn_log'"
    )


def _warn_unconverged(name: str, err: Optional[float], tol: Optional[float], niter: int) -> None:
    if tol is not None and err is not None and not err <= tol:
        import warnings

        warnings.warn(
            f"{name}: not converged after {niter} iterations (error {err:.3e} > {tol:.1e}); "
            "raise numItermax",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------
# entropic OT


def sinkhorn(
    a: Any,
    b: Any,
    M: Any,
    reg: float,
    method: str = "sinkhorn",
    numItermax: int = 1000,
    stopThr: float = 1e-9,
    verbose: bool = False,
    log: bool = False,
    warn: bool = True,
    n_iter: Optional[int] = None,
):
    """Entropic OT plan (eq. 3-4), as ``ot.sinkhorn``.

    ``a`` (n1,), ``b`` (n2,) histograms (empty: uniform), ``M`` (n1, n2) cost,
    ``reg`` the entropic regularization γ of ``⟨T, M⟩ + γ Σ T(log T − 1)``.
    ``method='sinkhorn_log'`` iterates in the log domain (any γ). The iteration stops
    when the L¹ violation of the second marginal is below ``stopThr`` (POT checks a
    2-norm every 10 iterations), after at most ``numItermax`` iterations; ``n_iter``
    runs exactly that many. Returns the plan (n1, n2) and, with ``log=True``, a dict
    with ``f``, ``g`` (potentials γ log u, γ log v), ``u``, ``v``, ``niter``, ``err``,
    ``cost`` (regularized objective) and ``transport_cost`` (⟨T, M⟩).

    >>> import numpy as np, wassdl
    >>> M = np.array([[0., 1.], [1., 0.]])
    >>> T = wassdl.sinkhorn([.5, .5], [.5, .5], M, 0.1)
    >>> np.round(T, 3)
    array([[0.5, 0. ],
           [0. , 0.5]])
    """
    dt = _dtype(a, b, M)
    M = _arr(M, dt, "M", (2,))
    a = _unif(M.shape[0], dt) if _is_empty(a) else _arr(a, dt, "a", (1,))
    b = _unif(M.shape[1], dt) if _is_empty(b) else _arr(b, dt, "b", (1,))
    st = _stop(numItermax, stopThr, n_iter)
    r = _core.sinkhorn(a[None, :], b[None, :], M, float(reg), _log_domain(method), plan=True, **st)
    if warn:
        _warn_unconverged("sinkhorn", r["err"], st.get("tol"), r["niter"])
    T = r["plan"][0]
    if not log:
        return T
    f, g = r["f"][0], r["g"][0]
    return T, {
        "f": f,
        "g": g,
        "u": np.exp(f / reg),
        "v": np.exp(g / reg),
        "niter": r["niter"],
        "err": r["err"],
        "cost": r["cost"][0],
        "transport_cost": r["transport_cost"][0],
    }


def sinkhorn2(
    a: Any,
    b: Any,
    M: Any,
    reg: float,
    method: str = "sinkhorn",
    numItermax: int = 1000,
    stopThr: float = 1e-9,
    verbose: bool = False,
    log: bool = False,
    warn: bool = True,
    n_iter: Optional[int] = None,
):
    """Entropic transport cost ``⟨T, M⟩`` of the Sinkhorn plan, as ``ot.sinkhorn2``.

    ``b`` may be (n2, k) (POT's convention: one histogram per *column*), giving k costs
    against the same ``a`` in one batched solve. Returns a float (or (k,) array) and,
    with ``log=True``, the dict of :func:`sinkhorn` (``f``, ``g`` with one row per
    problem, ``cost`` the regularized objectives).

    >>> import numpy as np, wassdl
    >>> x = np.linspace(0, 1, 20); M = (x[:, None] - x[None, :])**2
    >>> a = np.zeros(20); a[0] = 1; b = np.zeros(20); b[-1] = 1
    >>> round(float(wassdl.sinkhorn2(a, b, M, 1e-2)), 6)
    1.0
    """
    dt = _dtype(a, b, M)
    M = _arr(M, dt, "M", (2,))
    a = _unif(M.shape[0], dt) if _is_empty(a) else _arr(a, dt, "a", (1,))
    b = _unif(M.shape[1], dt) if _is_empty(b) else _arr(b, dt, "b", (1, 2))
    single = b.ndim == 1
    B = b[None, :] if single else b.T
    A = np.broadcast_to(a, (B.shape[0], a.shape[0]))
    st = _stop(numItermax, stopThr, n_iter)
    r = _core.sinkhorn(A, B, M, float(reg), _log_domain(method), plan=False, **st)
    if warn:
        _warn_unconverged("sinkhorn2", r["err"], st.get("tol"), r["niter"])
    v = r["transport_cost"][0] if single else r["transport_cost"]
    if not log:
        return v
    return v, {k: r[k] for k in ("f", "g", "niter", "err", "cost", "transport_cost")}


# ---------------------------------------------------------------------------------------
# barycenters


def _weights_rows(weights: Any, S: int, dt: type) -> tuple[np.ndarray, bool]:
    if weights is None:
        return _unif(S, dt)[None, :], True
    w = _arr(weights, dt, "weights", (1, 2))
    return (w[None, :], True) if w.ndim == 1 else (w, False)


def barycenter(
    A: Any,
    M: Any = None,
    reg: float = 1e-2,
    weights: Any = None,
    method: str = "sinkhorn",
    numItermax: int = 10000,
    stopThr: float = 1e-9,
    verbose: bool = False,
    log: bool = False,
    warn: bool = True,
    tau: float = 0.0,
    n_iter: Optional[int] = None,
    grid: Optional[tuple] = None,
    units: str = "pot",
):
    """Entropic Wasserstein barycenter on a fixed support, as ``ot.barycenter``.

    ``A`` is (n, n_hists): the atoms are its *columns* (POT's layout), ``M`` the (n, n)
    cost (or ``grid=(n,)``/``(h, w)`` for the separable kernel on a regular grid,
    ``units`` as in docs/cli.md), ``weights`` (n_hists,) (default uniform) or
    (k, n_hists) for k barycenters at once (one weight vector per row). ``method``:
    ``'sinkhorn'`` (scaling iterations, eq. 6-8) or ``'sinkhorn_log'`` (log domain,
    eq. 22-24, any γ). ``tau < 0``: heavy-ball extrapolation (Algorithm 5).

    Stops when the largest L¹ marginal violation is below ``stopThr`` (POT's default
    1e-4 is on a different error; ``stopThr=0`` runs exactly ``numItermax`` iterations,
    as does ``n_iter``). Both methods converge to the barycenter POT's
    ``sinkhorn_log`` computes (POT's plain solver with non-uniform weights stops at a
    slightly different point, tests/reference/README.md). Returns (n,) (or (k, n)) and, with
    ``log=True``, a dict with ``niter`` and ``err``.

    >>> import numpy as np, wassdl
    >>> x = np.linspace(0, 1, 40); M = (x[:, None] - x[None, :])**2
    >>> A = np.zeros((40, 2)); A[0, 0] = 1; A[-1, 1] = 1
    >>> p = wassdl.barycenter(A, M, 1e-2)
    >>> round(float(p @ x), 3)
    0.5
    """
    dt = _dtype(A, M, weights)
    A = _arr(A, dt, "A", (2,))
    W, single = _weights_rows(weights, A.shape[1], dt)
    if M is not None:
        M = _arr(M, dt, "M", (2,))
    st = _stop(numItermax, stopThr, n_iter)
    P, niter, err = _core.barycenter(
        A.T, W, float(reg), m=M, grid=None if grid is None else list(grid), units=units,
        tau=float(tau), log_domain=_log_domain(method), **st,
    )
    if warn:
        _warn_unconverged("barycenter", err, st.get("tol"), niter)
    p = P[0] if single else P
    return (p, {"niter": niter, "err": err}) if log else p


def barycenter_unbalanced(
    A: Any,
    M: Any,
    reg: float,
    reg_m: float,
    weights: Any = None,
    method: str = "sinkhorn",
    numItermax: int = 1000,
    stopThr: float = 1e-6,
    verbose: bool = False,
    log: bool = False,
    warn: bool = True,
    n_iter: Optional[int] = None,
):
    """Unbalanced (KL-relaxed) barycenter (Algorithm 6), as
    ``ot.unbalanced.barycenter_unbalanced``: ``reg_m`` is the marginal relaxation ρ.

    Layouts as :func:`barycenter`; the error is POT's: the relative sup-norm change of
    the barycenter between iterations.

    >>> import numpy as np, wassdl
    >>> x = np.linspace(0, 1, 30); M = (x[:, None] - x[None, :])**2
    >>> A = np.stack([np.exp(-(x - .3)**2 / .01), 2 * np.exp(-(x - .7)**2 / .01)], 1)
    >>> p = wassdl.barycenter_unbalanced(A / A.sum(0)[0], M, 1e-2, 1.0)
    >>> p.shape
    (30,)
    """
    dt = _dtype(A, M, weights)
    A = _arr(A, dt, "A", (2,))
    W, single = _weights_rows(weights, A.shape[1], dt)
    M = _arr(M, dt, "M", (2,))
    st = _stop(numItermax, stopThr, n_iter)
    P, niter, err = _core.barycenter(
        A.T, W, float(reg), m=M, rho=float(reg_m), log_domain=_log_domain(method), **st
    )
    if warn:
        _warn_unconverged("barycenter_unbalanced", err, st.get("tol"), niter)
    p = P[0] if single else P
    return (p, {"niter": niter, "err": err}) if log else p


def convolutional_barycenter2d(
    A: Any,
    reg: float,
    weights: Any = None,
    method: str = "sinkhorn",
    numItermax: int = 10000,
    stopThr: float = 1e-9,
    verbose: bool = False,
    log: bool = False,
    warn: bool = True,
    n_iter: Optional[int] = None,
    units: str = "pot",
):
    """Barycenter of images with the separable Gibbs kernel, as
    ``ot.bregman.convolutional_barycenter2d``.

    ``A`` is (n_hists, h, w) (POT's layout), each image summing to 1; the kernel is
    POT's ``exp(-(t_i - t_j)²/reg)`` on ``t = linspace(0, 1, n)`` per axis (``units``:
    see docs/cli.md). Returns the (h, w) barycenter, *normalized* (POT's is not: divide
    POT's by its sum to compare). ``method='sinkhorn_log'`` for small ``reg``.

    >>> import numpy as np, wassdl
    >>> A = np.zeros((2, 16, 16)); A[0, 2, 2] = 1; A[1, 13, 13] = 1
    >>> p = wassdl.convolutional_barycenter2d(A, 4e-3)
    >>> np.unravel_index(p.argmax(), p.shape) in [(7, 7), (7, 8), (8, 7), (8, 8)]
    True
    """
    dt = _dtype(A, weights)
    A = _arr(A, dt, "A", (3,))
    S, h, w = A.shape
    W, single = _weights_rows(weights, S, dt)
    st = _stop(numItermax, stopThr, n_iter)
    P, niter, err = _core.barycenter(
        A.reshape(S, h * w), W, float(reg), grid=[h, w], units=units,
        log_domain=_log_domain(method), **st,
    )
    if warn:
        _warn_unconverged("convolutional_barycenter2d", err, st.get("tol"), niter)
    p = P.reshape(-1, h, w)
    p = p[0] if single else p
    return (p, {"niter": niter, "err": err}) if log else p


# ---------------------------------------------------------------------------------------
# exact OT and unmixing


def emd(a: Any, b: Any, M: Any, numItermax: int = 100000, log: bool = False):
    """Exact OT plan by the network simplex, as ``ot.emd`` (always float64).

    ``a`` (n1,), ``b`` (n2,) (empty: uniform), ``M`` (n1, n2). With ``log=True`` also a
    dict with ``cost``, the centred dual potentials ``u``, ``v`` (POT's
    ``center_dual=True``) and ``niter`` (pivots).

    >>> import numpy as np, wassdl
    >>> wassdl.emd([.5, .5], [.5, .5], [[0., 1.], [1., 0.]])
    array([[0.5, 0. ],
           [0. , 0.5]])
    """
    _dtype(a, b, M)
    M = _arr(M, np.float64, "M", (2,))
    a = _unif(M.shape[0], np.float64) if _is_empty(a) else _arr(a, np.float64, "a", (1,))
    b = _unif(M.shape[1], np.float64) if _is_empty(b) else _arr(b, np.float64, "b", (1,))
    cost, plan, f, g, it = _core.emd(a, b, M, int(numItermax))
    if not log:
        return plan
    return plan, {"cost": cost, "u": f, "v": g, "niter": it}


def emd2(a: Any, b: Any, M: Any, numItermax: int = 100000, log: bool = False):
    """Exact OT cost, as ``ot.emd2``; ``log=True`` adds the dict of :func:`emd` (with
    ``G``, the plan).

    >>> import wassdl
    >>> wassdl.emd2([1., 0.], [0., 1.], [[0., 3.], [3., 0.]])
    3.0
    """
    plan, lg = emd(a, b, M, numItermax, log=True)
    if not log:
        return lg["cost"]
    lg["G"] = plan
    return lg["cost"], lg


def unmix(
    H: Any,
    b: Any,
    M: Any,
    reg: Optional[float] = None,
    lr: float = 2e-3,
    numItermax: int = 500,
    init: Any = None,
    stopThr: float = 1e-9,
    log: bool = False,
):
    """Wasserstein unmixing (POT's example ``plot_unmix_optim_torch``; no POT function):
    the weights ``w`` on the simplex minimizing ``OT(H @ w, b; M)`` by projected
    gradient with step ``lr`` (float64).

    ``H`` is (n_s, K): the K sources as *columns* (the example's layout), ``b`` (n_t,)
    the target, ``M`` (n_s, n_t). Exact OT (``ot.emd2``) without ``reg``; entropic OT
    with ``reg`` (KL(T | a⊗b) regularization, log-domain Sinkhorn to ``stopThr``).
    Returns ``w`` (K,) and, with ``log=True``, ``{'losses': ...}`` (the cost before each
    step).

    >>> import numpy as np, wassdl
    >>> x = np.array([0., 1., 2.]); M = (x[:, None] - x[None, :])**2
    >>> H = np.array([[1., 0.], [0., .5], [0., .5]])   # two sources, as columns
    >>> w = wassdl.unmix(H, np.array([0., 1., 0.]), M, lr=0.05, numItermax=100)
    >>> bool(w[1] > 0.99)   # the second source is half at the middle point
    True
    """
    _dtype(H, b, M, init)
    H = _arr(H, np.float64, "H", (2,))
    b = _arr(b, np.float64, "b", (1,))
    M = _arr(M, np.float64, "M", (2,))
    if init is not None:
        init = _arr(init, np.float64, "init", (1,))
    w, losses = _core.unmix(
        H.T, b, M, lr=float(lr), n_iter=int(numItermax),
        reg=None if reg is None else float(reg), tol=float(stopThr), init=init,
    )
    return (w, {"losses": losses}) if log else w


# ---------------------------------------------------------------------------------------
# point clouds


def sinkhorn_divergence(
    X: Any,
    Y: Any,
    a: Any = None,
    b: Any = None,
    p: float = 2.0,
    blur: float = 0.05,
    scaling: float = 0.5,
    debias: bool = True,
    diameter: Optional[float] = None,
    refine_tol: Optional[float] = None,
    log: bool = False,
    threads: int = 1,
):
    """Debiased Sinkhorn divergence ``S_ε(α, β)`` between point clouds, with GeomLoss's
    conventions (``SamplesLoss("sinkhorn", p, blur, scaling)``): cost ``‖x−y‖^p / p``,
    ``ε = blur^p``, ε-scaling from the clouds' diameter.

    ``X`` (n, d), ``Y`` (m, d), weights ``a`` (n,), ``b`` (m,) (default uniform).
    POT's counterpart ``ot.bregman.empirical_sinkhorn_divergence(X, Y, reg)`` uses the
    cost ``‖x−y‖²`` and ``reg`` on it, no ε-scaling, and the transport costs ⟨T, C⟩ in
    the debiasing: values agree only in the limit of converged, small ε (see
    docs/python.md). ``refine_tol`` iterates at the final ε to convergence (the exact
    ``S_ε``). With ``log=True`` also a dict with the gradients ``grad_a``, ``grad_b``,
    ``grad_X``, ``grad_Y`` (envelope theorem), ``niter``, ``diameter``. ``threads``:
    at most that many threads per sweep (``0``: every core), used only above the library's
    work threshold (about 1000 × 1000 points); the value does not depend on it.

    >>> import numpy as np, wassdl
    >>> X = np.zeros((5, 2)); Y = np.ones((5, 2))
    >>> round(float(wassdl.sinkhorn_divergence(X, Y, blur=0.01)), 4)   # ‖(1,1)‖²/2
    1.0
    """
    dt = _dtype(X, Y, a, b)
    X = _arr(X, dt, "X", (1, 2))
    Y = _arr(Y, dt, "Y", (1, 2))
    X = X[:, None] if X.ndim == 1 else X
    Y = Y[:, None] if Y.ndim == 1 else Y
    a = None if a is None else _arr(a, dt, "a", (1,))
    b = None if b is None else _arr(b, dt, "b", (1,))
    threads = int(threads)
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: every core), got {threads}")
    r = _core.sinkhorn_divergence(
        X, Y, a, b, p=float(p), blur=float(blur), scaling=float(scaling),
        diameter=diameter, debias=bool(debias), refine_tol=refine_tol,
        threads=threads,
    )
    return (r["value"], r) if log else r["value"]


# ---------------------------------------------------------------------------------------
# gradients


def barycenter_loss_and_grad(
    atoms: Any,
    weights: Any,
    targets: Any,
    reg: float,
    M: Any = None,
    grid: Optional[tuple] = None,
    units: str = "pot",
    loss: str = "quadratic",
    n_iter: int = 50,
    tau: float = 0.0,
    rho: Optional[float] = None,
    log_domain: bool = False,
    method: str = "tape",
    chunk: Optional[int] = None,
    checkpoint: Optional[int] = None,
    log: bool = False,
):
    """Loss of Sinkhorn barycenters and its gradients (eq. 10-12; no POT counterpart).

    ``E = Σ_m L(P^(L)(D, λ_m), x_m)`` for atoms ``D`` (S, N) (one atom per row),
    weights (S,) or (M, S) and targets (N,) or (M, N), after exactly ``n_iter``
    iterations from ``b = 1``. Kernel: a cost ``M`` (N, N) or ``grid`` (shape) with
    ``units``. ``loss``: ``'quadratic'``, ``'kl'``, ``'tv'`` or ``'wasserstein[:L]'``
    (Table 1). Variants: scaling (default), ``log_domain=True`` (Algorithm 4's forward
    loop), heavy-ball ``tau < 0`` (Algorithm 5), unbalanced ``rho`` (Algorithm 6).
    ``method``: ``'tape'`` (reverse mode, every variant) or ``'analytic'`` (Algorithms
    1 and 4; plain balanced only). ``chunk``/``checkpoint`` bound the memory.

    Returns ``(loss, grad_atoms (S, N), grad_weights)`` with ``grad_weights`` shaped
    like ``weights``; ``log=True`` adds a dict with ``barycenters`` and ``peak_bytes``.

    >>> import numpy as np, wassdl
    >>> x = np.linspace(0, 1, 20); M = (x[:, None] - x[None, :])**2
    >>> D = np.stack([np.exp(-(x - .3)**2 / .01), np.exp(-(x - .7)**2 / .01)])
    >>> D /= D.sum(1, keepdims=True)
    >>> t = np.full(20, 1 / 20)
    >>> v, gD, gw = wassdl.barycenter_loss_and_grad(D, [.4, .6], t, 0.05, M=M, n_iter=20)
    >>> gD.shape, gw.shape
    ((2, 20), (2,))
    """
    dt = _dtype(atoms, weights, targets, M)
    D = _arr(atoms, dt, "atoms", (2,))
    W = _arr(weights, dt, "weights", (1, 2))
    X = _arr(targets, dt, "targets", (1, 2))
    single = W.ndim == 1
    W2 = W[None, :] if single else W
    X2 = X[None, :] if X.ndim == 1 else X
    if M is not None:
        M = _arr(M, dt, "M", (2,))
    r = _core.loss_and_grad(
        D, W2, X2, float(reg), m=M, grid=None if grid is None else list(grid), units=units,
        loss=loss, n_iter=int(n_iter), tau=float(tau), rho=rho, log_domain=bool(log_domain),
        method=method, chunk=chunk, checkpoint=checkpoint,
    )
    gw = r["grad_weights"][0] if single else r["grad_weights"]
    out = (r["loss"], r["grad_atoms"], gw)
    return out + (r,) if log else out


def check_gradient(
    f: Callable[[np.ndarray], float],
    x: Any,
    grad: Any,
    step: float = 1e-6,
    relative: bool = False,
    coords: Any = None,
    floor: float = 0.0,
    five_point: bool = False,
) -> dict:
    """Compares a gradient with central finite differences of ``f`` (float64).

    ``f`` maps a (n,) float64 array to a float, ``grad`` is the claimed gradient at
    ``x``; ``coords`` restricts the check to some coordinates. ``relative=True`` uses the
    step ``step·max(|x_i|, tiny)``. Per coordinate the error is
    ``|analytic − numeric| / max(|analytic|, |numeric|, floor)``. Returns a dict with
    ``max_rel_err``, ``max_abs_err``, ``worst_index``, and per checked coordinate
    ``index``, ``numeric``, ``rel_err``, plus a one-line ``summary``.

    >>> import numpy as np, wassdl
    >>> r = wassdl.check_gradient(lambda x: float(x @ x), np.array([1., 2.]), np.array([2., 4.]))
    >>> r["max_rel_err"] < 1e-8
    True
    """
    x = _arr(x, np.float64, "x", (1,))
    g = _arr(grad, np.float64, "grad", (1,))
    return _core.check_gradient(
        f, x.tolist(), g.tolist(), step=float(step), relative=bool(relative),
        coords=None if coords is None else [int(i) for i in coords], floor=float(floor),
        five_point=bool(five_point),
    )


# ---------------------------------------------------------------------------------------
# dictionary learning


_PARAMS = (
    "n_atoms", "reg", "M", "grid", "units", "n_iter", "loss", "tau", "rho", "log_domain",
    "zeta", "max_iter", "memory", "tol_grad", "tol_cost", "line_search", "warm_restart",
    "atom_init", "weight_init", "random_state", "gradient", "chunk", "checkpoint",
    "transform_max_iter", "verbose", "callback",
)


def wdl_objective(X: Any, alpha: Any, beta: Any, reg: float, **params: Any):
    """The dictionary-learning objective of eq. 13 and its gradient.

    ``G(α, β) = Σ_m L(P^(L)(softmax(α), softmax(ζ β_m)), x_m)`` for data ``X`` (M, N),
    atom logits ``alpha`` (S, N), weight logits ``beta`` (M, S) (one row per
    datapoint); ``params`` as :class:`WassersteinDictionary` (``M``/``grid``,
    ``n_iter``, ``loss``, ...). Returns ``(value, grad_alpha (S, N), grad_beta (M, S))``.

    >>> import numpy as np, wassdl
    >>> X = np.full((3, 10), 0.1)
    >>> v, ga, gb = wassdl.wdl_objective(X, np.zeros((2, 10)), np.zeros((3, 2)), 0.05)
    >>> bool(v >= 0), ga.shape, gb.shape
    (True, (2, 10), (3, 2))
    """
    dt = _dtype(X)
    X = _arr(X, dt, "X", (2,))
    alpha = _arr(alpha, np.float64, "alpha", (2,))
    beta = _arr(beta, np.float64, "beta", (2,))
    S, N = alpha.shape
    Mn = X.shape[0]
    if beta.shape != (Mn, S) or N != X.shape[1]:
        raise ValueError(
            f"`alpha` has shape {alpha.shape} and `beta` {beta.shape}, expected "
            f"(S, {X.shape[1]}) and ({Mn}, S)"
        )
    p = {"n_atoms": S, "n_iter": 25}
    p.update({k: v for k, v in params.items() if k not in ("M", "grid", "units")})
    cost = params.get("M")
    if cost is not None:
        cost = _arr(cost, dt, "M", (2,))
    grid = params.get("grid")
    if cost is None and grid is None:
        grid = (N,)
    # α (S, N) rows = column-major N × S; β (M, S) rows = column-major S × M.
    theta = np.concatenate([alpha.ravel(), beta.ravel()])
    v, g = _core.wdl_objective(
        X, theta.tolist(), p, float(reg), m=cost,
        grid=None if grid is None else list(grid), units=params.get("units", "pot"),
    )
    return v, g[: S * N].reshape(S, N), g[S * N:].reshape(Mn, S)


class WassersteinDictionary:
    """Wasserstein dictionary learning (Schmitz et al. 2018, Algorithm 2), with
    scikit-learn's conventions.

    Learns ``n_atoms`` atoms (histograms on the support) such that each datapoint is
    approximated by a Wasserstein barycenter of them. Data ``X`` is (n_samples, N)
    histograms, one per row, or (n_samples, h, w) images (the grid is then (h, w)).

    Parameters
    ----------
    n_atoms : number of atoms S.
    reg : entropic regularization γ (units of the cost; see ``units``).
    M : optional (N, N) cost matrix; otherwise the separable squared-Euclidean kernel on
        ``grid`` (default: the shape of one datapoint).
    units : grid coordinates, ``'pot'`` (linspace(0, 1, n), default), ``'geomloss'``,
        ``'pixel'`` (docs/cli.md).
    n_iter : Sinkhorn iterations L of each barycenter (differentiated exactly, eq. 10).
    loss : ``'quadratic'``, ``'kl'``, ``'tv'`` or ``'wasserstein[:L]'`` (Table 1).
    tau : heavy-ball extrapolation τ ≤ 0 (Algorithm 5); rho : unbalanced ρ (Algorithm 6);
    log_domain : log-domain iterations (stable at small γ).
    zeta : weight scale ζ (section 3.1).
    max_iter, memory, tol_grad, tol_cost, line_search : L-BFGS settings
        (``'more-thuente'``, ``'hager-zhang'``, ``'backtracking'``).
    warm_restart : restart L-BFGS every k iterations with warm scalings (section 4.2).
    atom_init : ``'random'``, ``'constant'``, ``'data'`` or an (S, n_features) array (e.g.
        ``components_`` of an earlier fit, images flattened); weight_init : ``'uniform'``,
        ``'random'`` or an (n_samples, S) array. Given arrays must be on the simplex with
        positive entries (the softmax of eq. 13 cannot represent 0).
    random_state : integer seed of the random initializations.
    gradient : ``'tape'`` or ``'analytic'``; chunk, checkpoint : memory bounds.
    transform_max_iter : L-BFGS iterations of :meth:`transform` (default ``max_iter``).
    verbose : print the loss at every L-BFGS iteration.
    callback : ``callback(info)`` after every iteration with a dict (iteration, loss,
        grad_norm, elapsed, restart_index, evaluations); returning ``False`` stops.

    Attributes
    ----------
    components_ : (S, N) atoms, one per row (each on the simplex).
    weights_ : (n_samples, S) barycentric weights of the training data.
    loss_, n_iter_, termination_, history_ : final loss, L-BFGS iterations, why it
        stopped, the per-iteration records.

    >>> import numpy as np, wassdl
    >>> x = np.linspace(0, 1, 30)
    >>> X = np.stack([np.exp(-(x - c)**2 / .005) for c in (.3, .4, .5, .6)])
    >>> X /= X.sum(1, keepdims=True)
    >>> wdl = wassdl.WassersteinDictionary(2, reg=5e-3, n_iter=20, max_iter=10)
    >>> W = wdl.fit_transform(X)
    >>> wdl.components_.shape, W.shape
    ((2, 30), (4, 2))
    >>> bool(wdl.history_[-1]["loss"] < wdl.history_[0]["loss"])
    True
    """

    def __init__(
        self,
        n_atoms: int = 2,
        reg: float = 1e-2,
        *,
        M: Any = None,
        grid: Optional[tuple] = None,
        units: str = "pot",
        n_iter: int = 25,
        loss: str = "quadratic",
        tau: float = 0.0,
        rho: Optional[float] = None,
        log_domain: bool = False,
        zeta: float = 1.0,
        max_iter: int = 100,
        memory: int = 10,
        tol_grad: float = 0.0,
        tol_cost: float = 0.0,
        line_search: str = "more-thuente",
        warm_restart: Optional[int] = None,
        atom_init: Any = "random",
        weight_init: Any = "uniform",
        random_state: int = 0,
        gradient: str = "tape",
        chunk: Optional[int] = None,
        checkpoint: Optional[int] = None,
        transform_max_iter: Optional[int] = None,
        verbose: int = 0,
        callback: Optional[Callable[[dict], Any]] = None,
    ):
        self.n_atoms = n_atoms
        self.reg = reg
        self.M = M
        self.grid = grid
        self.units = units
        self.n_iter = n_iter
        self.loss = loss
        self.tau = tau
        self.rho = rho
        self.log_domain = log_domain
        self.zeta = zeta
        self.max_iter = max_iter
        self.memory = memory
        self.tol_grad = tol_grad
        self.tol_cost = tol_cost
        self.line_search = line_search
        self.warm_restart = warm_restart
        self.atom_init = atom_init
        self.weight_init = weight_init
        self.random_state = random_state
        self.gradient = gradient
        self.chunk = chunk
        self.checkpoint = checkpoint
        self.transform_max_iter = transform_max_iter
        self.verbose = verbose
        self.callback = callback

    # scikit-learn's BaseEstimator protocol, without depending on scikit-learn
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters, as a dict."""
        return {k: getattr(self, k) for k in _PARAMS}

    def set_params(self, **params: Any) -> "WassersteinDictionary":
        """Sets parameters by name; returns ``self``."""
        for k, v in params.items():
            if k not in _PARAMS:
                raise ValueError(f"invalid parameter {k!r} for WassersteinDictionary")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        d = WassersteinDictionary()
        changed = [f"{k}={getattr(self, k)!r}" for k in _PARAMS
                   if not _same(getattr(self, k), getattr(d, k))]
        return f"WassersteinDictionary({', '.join(changed)})"

    # -- helpers
    def _core_params(
        self, n_atoms: int, max_iter: int, weight_init: Any, atom_init: Any = "random"
    ) -> dict:
        return {
            "n_atoms": n_atoms, "n_iter": self.n_iter, "loss": self.loss, "tau": self.tau,
            "rho": self.rho, "log_domain": self.log_domain, "zeta": self.zeta,
            "max_iter": max_iter, "memory": self.memory, "tol_grad": self.tol_grad,
            "tol_cost": self.tol_cost, "line_search": self.line_search,
            "warm_restart": self.warm_restart, "atom_init": atom_init,
            "weight_init": weight_init, "seed": int(self.random_state),
            "gradient": self.gradient, "chunk": self.chunk, "checkpoint": self.checkpoint,
        }

    def _prepare(self, X: Any, fitted: bool) -> tuple[np.ndarray, dict]:
        X = np.asarray(X)
        dt = _dtype(X, self.M)
        X = _arr(X, dt, "X", (2, 3))
        shape = X.shape[1:]
        X2 = X.reshape(X.shape[0], -1)
        if fitted:
            if X2.shape[1] != self.components_.shape[1]:
                raise ValueError(
                    f"`X` has {X2.shape[1]} bins per histogram (shape {X.shape}) but the "
                    f"dictionary's support has {self.components_.shape[1]}"
                )
        kern: dict = {"units": self.units}
        if self.M is not None:
            kern["m"] = _arr(self.M, dt, "M", (2,))
        else:
            kern["grid"] = list(self.grid if self.grid is not None else shape)
        if not fitted:
            self._sample_shape = shape
        return X2, kern

    def _observer(self) -> Optional[Callable[[dict], Any]]:
        cb, verbose = self.callback, self.verbose
        if not verbose and cb is None:
            return None

        def observe(info: dict) -> Any:
            if verbose:
                print(
                    f"[WassersteinDictionary] iter {info['iteration']:4d}  "
                    f"loss {info['loss']:.6e}  |grad| {info['grad_norm']:.3e}  "
                    f"{info['elapsed']:.2f}s",
                    file=sys.stdout, flush=True,
                )
            return True if cb is None else cb(info)

        return observe

    # -- estimator API
    def fit(self, X: Any, y: Any = None) -> "WassersteinDictionary":
        """Learns the atoms and the weights of the rows (or images) of ``X``."""
        X2, kern = self._prepare(X, fitted=False)
        wi, ai = self.weight_init, self.atom_init
        if not isinstance(wi, str):
            wi = _arr(wi, np.float64, "weight_init", (2,))
        if not isinstance(ai, str):
            ai = _arr(ai, np.float64, "atom_init", (2, 3))
            ai = ai.reshape(ai.shape[0], -1)
        r = _core.wdl_fit(
            X2, self._core_params(int(self.n_atoms), int(self.max_iter), wi, ai),
            float(self.reg),
            callback=self._observer(), **kern,
        )
        self.components_ = r["atoms"]
        self.weights_ = r["weights"]
        self.loss_ = r["loss"]
        self.n_iter_ = r["n_iter"]
        self.termination_ = r["termination"]
        self.history_ = r["history"]
        self.n_features_in_ = X2.shape[1]
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """:meth:`fit`, then the training weights ``weights_`` (n_samples, S)."""
        return self.fit(X).weights_

    def transform(self, X: Any) -> np.ndarray:
        """Barycentric weights (n_samples, S) of new data with the atoms fixed (L-BFGS on
        the weights alone, from uniform weights)."""
        self._check_fitted()
        X2, kern = self._prepare(X, fitted=True)
        atoms = self.components_.astype(X2.dtype, copy=False)
        mi = self.max_iter if self.transform_max_iter is None else self.transform_max_iter
        r = _core.wdl_fit(
            X2, self._core_params(atoms.shape[0], int(mi), "uniform"), float(self.reg),
            atoms=atoms, callback=self._observer(), **kern,
        )
        return r["weights"]

    def inverse_transform(self, W: Any) -> np.ndarray:
        """Reconstructions: the barycenters of the atoms for each row of ``W`` (n, S),
        with the fitted variant and ``n_iter`` iterations from a cold start. Images come
        back as images."""
        self._check_fitted()
        atoms = self.components_
        dt = _dtype(atoms, W)
        Wa = _arr(W, dt, "W", (1, 2))
        single = Wa.ndim == 1
        W2 = Wa[None, :] if single else Wa
        kern: dict = {"units": self.units}
        if self.M is not None:
            kern["m"] = _arr(self.M, dt, "M", (2,))
        else:
            kern["grid"] = list(self.grid if self.grid is not None else self._sample_shape)
        P, _, _ = _core.barycenter(
            atoms.astype(dt, copy=False), W2, float(self.reg), tau=float(self.tau),
            rho=self.rho, log_domain=bool(self.log_domain), n_iter=int(self.n_iter), **kern,
        )
        P = P.reshape((P.shape[0],) + tuple(self._sample_shape))
        return P[0] if single else P

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise ValueError("this WassersteinDictionary is not fitted yet: call fit(X) first")

    # -- pickling: parameters and fitted arrays; a callback that cannot be pickled
    # (a lambda, a closure) is dropped rather than making the whole model unpicklable.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("callback") is not None:
            try:
                pickle.dumps(state["callback"])
            except Exception:
                state["callback"] = None
        state["_wassdl_version"] = __version__
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.pop("_wassdl_version", None)
        self.__dict__.update(state)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is b
    return a == b
