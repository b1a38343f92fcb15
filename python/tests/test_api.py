"""Precision, memory layouts, errors, gradients and the dictionary learner."""

import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import wassdl


def gauss(x, m, s):
    v = np.exp(-((x - m) ** 2) / (2 * s**2))
    return v / v.sum()


@pytest.fixture
def prob():
    x = np.linspace(0, 1, 50)
    M = (x[:, None] - x[None, :]) ** 2
    A = np.stack([gauss(x, 0.25, 0.05), gauss(x, 0.5, 0.08), gauss(x, 0.75, 0.04)], 1)
    return x, M, A


# ---------------------------------------------------------------------------- precision


def test_float32_computes_in_float32(prob):
    x, M, A = prob
    w = np.array([0.2, 0.3, 0.5])
    p64 = wassdl.barycenter(A, M, 2e-2, weights=w, n_iter=100)
    p32 = wassdl.barycenter(A.astype(np.float32), M.astype(np.float32), 2e-2,
                            weights=w.astype(np.float32), n_iter=100)
    assert p64.dtype == np.float64 and p32.dtype == np.float32
    # f32 rounding (6e-8) amplified over 100 iterations; measured 3e-6 relative to max
    np.testing.assert_allclose(p32, p64, rtol=0, atol=1e-4 * p64.max())
    assert not np.array_equal(p32.astype(np.float64), p64)  # really another precision
    # mixed dtypes promote to float64 (NumPy's rule)
    pm = wassdl.barycenter(A.astype(np.float32), M, 2e-2, weights=w, n_iter=100)
    assert pm.dtype == np.float64
    np.testing.assert_array_equal(pm, wassdl.barycenter(A.astype(np.float32).astype(np.float64), M, 2e-2, weights=w, n_iter=100))


def test_float32_everywhere(prob):
    x, M, A = prob
    f = np.float32
    a, b, M32 = A[:, 0].astype(f), A[:, 2].astype(f), M.astype(f)
    T = wassdl.sinkhorn(a, b, M32, 5e-2, stopThr=1e-5)
    assert T.dtype == f
    np.testing.assert_allclose(T, wassdl.sinkhorn(A[:, 0], A[:, 2], M, 5e-2), atol=1e-5)
    v, gD, gw = wassdl.barycenter_loss_and_grad(A.T.astype(f), np.array([.2, .3, .5], f),
                                                A[:, 1].astype(f), 5e-2, M=M32, n_iter=20)
    assert gD.dtype == f and gw.dtype == f
    d = wassdl.sinkhorn_divergence(np.zeros((3, 2), f), np.ones((4, 2), f), blur=0.1)
    assert abs(d - 1.0) < 1e-4
    imgs = np.zeros((2, 8, 8), f); imgs[0, 1, 1] = 1; imgs[1, 6, 6] = 1
    assert wassdl.convolutional_barycenter2d(imgs, 2e-2, method="sinkhorn_log", stopThr=1e-5).dtype == f


# ------------------------------------------------------------------------------ layouts


def test_layouts_give_identical_results(prob):
    x, M, A = prob
    w = np.array([0.2, 0.3, 0.5])
    want = wassdl.barycenter(np.ascontiguousarray(A), M, 2e-2, weights=w, n_iter=50)
    AF = np.asfortranarray(A)
    MF = np.asfortranarray(M)
    big = np.zeros((A.shape[0] * 2, A.shape[1] * 3))
    big[::2, ::3] = A
    strided = big[::2, ::3]
    assert not strided.flags.c_contiguous and not strided.flags.f_contiguous
    Mbig = np.zeros((M.shape[0] * 2, M.shape[1]))
    Mbig[::2] = M
    for AA, MM in [(AF, M), (A, MF), (strided, M), (A, Mbig[::2]), (AF, MF)]:
        np.testing.assert_array_equal(wassdl.barycenter(AA, MM, 2e-2, weights=w, n_iter=50), want)
    # reversed (negative strides)
    np.testing.assert_array_equal(
        wassdl.barycenter(A[::-1][::-1], M[:, ::-1][:, ::-1], 2e-2, weights=w, n_iter=50), want)


def test_batched_weights(prob):
    x, M, A = prob
    W = np.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    P = wassdl.barycenter(A, M, 2e-2, weights=W, n_iter=40)
    assert P.shape == (2, 50)
    for k in range(2):
        np.testing.assert_allclose(P[k], wassdl.barycenter(A, M, 2e-2, weights=W[k], n_iter=40), rtol=1e-13, atol=1e-17)


def test_gil_is_released(prob):
    """A second thread runs Python while a long barycenter computes."""
    x, M, A = prob
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    xg = np.linspace(0, 1, 1500)
    Mg = (xg[:, None] - xg[None, :]) ** 2
    Ag = np.stack([gauss(xg, 0.3, 0.05), gauss(xg, 0.7, 0.05)], 1)
    t.start()
    t0 = time.perf_counter()
    wassdl.barycenter(Ag, Mg, 1e-2, n_iter=300)
    dt = time.perf_counter() - t0
    done.set()
    t.join()
    # with the GIL held the ticker could not run at all during the call
    assert len(ticks) > min(10, dt / 0.01), (len(ticks), dt)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda A, M: wassdl.barycenter(A, M, -1.0), "reg"),
        (lambda A, M: wassdl.barycenter(A, M, 0.0), "reg"),
        (lambda A, M: wassdl.barycenter(A * 1.1, M, 1e-2), "sum"),
        (lambda A, M: wassdl.barycenter(-A, M, 1e-2), "negative"),
        (lambda A, M: wassdl.barycenter(np.where(A > A.max() / 2, np.nan, A), M, 1e-2), "non-finite|finite"),
        (lambda A, M: wassdl.barycenter(A, M[:-1], 1e-2), "shape"),
        (lambda A, M: wassdl.barycenter(A, M, 1e-2, weights=[0.5, 0.5]), "shape|weights"),
        (lambda A, M: wassdl.barycenter(A, M, 1e-2, method="nope"), "method"),
        (lambda A, M: wassdl.barycenter(A, M, 1e-2, tau=0.5), "tau"),
        (lambda A, M: wassdl.barycenter(A, M, 1e-2, n_iter=0), "iterations"),
        (lambda A, M: wassdl.barycenter(A.astype(complex), M, 1e-2), "complex"),
        (lambda A, M: wassdl.barycenter(A[:, 0], M, 1e-2), "axes"),
        (lambda A, M: wassdl.sinkhorn(A[:, 0], A[:-1, 1], M, 1e-2), "shape"),
        (lambda A, M: wassdl.sinkhorn(A[:, 0], A[:, 1], M, 1e-2, method="bad"), "method"),
        (lambda A, M: wassdl.emd(A[:, 0], A[:, 1] * 2, M), "mass"),
        (lambda A, M: wassdl.emd(A[:, 0], A[:-1, 1], M), "shape"),
        (lambda A, M: wassdl.barycenter_unbalanced(A, M, 1e-2, -1.0), "rho"),
        (lambda A, M: wassdl.barycenter_loss_and_grad(A.T, [.2, .3, .5], A[:, 0], 1e-2, M=M, loss="nope"), "loss"),
        (lambda A, M: wassdl.barycenter_loss_and_grad(A.T, [.2, .3, .5], A[:, 0], 1e-2, M=M, method="nope"), "method"),
        (lambda A, M: wassdl.barycenter_loss_and_grad(A.T, [.2, .3, .5], A[:, 0], 1e-2, M=M, rho=1.0, method="analytic"), "analytic|rho|unbalanced"),
        (lambda A, M: wassdl.barycenter_loss_and_grad(A.T, [.2, .3, .5], A[:, 0], 1e-2), "exactly one"),
        (lambda A, M: wassdl.barycenter_loss_and_grad(A.T, [.2, .3, .5], A[:, 0], 1e-2, M=M, grid=(50,)), "exactly one"),
        (lambda A, M: wassdl.barycenter(A, None, 1e-2, grid=(7,)), "shape|rows|7"),
        (lambda A, M: wassdl.barycenter(A, None, 1e-2, grid=(50,), units="furlongs"), "units"),
        (lambda A, M: wassdl.convolutional_barycenter2d(A, 1e-2), "axes"),
        (lambda A, M: wassdl.sinkhorn_divergence(np.zeros((3, 2)), np.zeros((3, 3))), "dimension|shape"),
        (lambda A, M: wassdl.sinkhorn_divergence(np.zeros((3, 2)), np.ones((3, 2)), scaling=1.5), "scaling"),
        (lambda A, M: wassdl.sinkhorn_divergence(np.zeros((3, 2)), np.ones((3, 2)), threads=-1), "threads"),
        (lambda A, M: wassdl.unmix(A, A[:, 0], M, lr=-1.0), "lr"),
        (lambda A, M: wassdl.check_gradient(lambda v: 0.0, [1.0, 2.0], [1.0]), "grad"),
        (lambda A, M: wassdl.check_gradient(lambda v: 0.0, [1.0], [1.0], coords=[3]), "coords"),
        (lambda A, M: wassdl.check_gradient(lambda v: 0.0, [1.0], [1.0], step=0.0), "step"),
    ],
)
def test_bad_input_raises_value_error(prob, call, match):
    x, M, A = prob
    with pytest.raises(ValueError, match=match):
        call(A, M)


def test_error_messages_are_the_cores_one_liners(prob):
    x, M, A = prob
    with pytest.raises(ValueError) as e:
        wassdl.barycenter(A, M, -1.0)
    assert str(e.value) == "`reg` = -1 is invalid: it must be finite and > 0"
    with pytest.raises(ValueError) as e:
        wassdl.barycenter(A * 1.1, M, 1e-2)
    assert "\n" not in str(e.value) and "must sum to 1" in str(e.value)


def test_numerical_failure_is_a_value_error_not_nan(prob):
    x, M, A = prob
    with pytest.raises(ValueError, match="log"):
        wassdl.barycenter(A, M, 1e-5, n_iter=200)


def test_callback_exceptions_propagate():
    def f(v):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        wassdl.check_gradient(f, [1.0, 2.0], [0.0, 0.0])


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"log_domain": True},
        {"tau": -0.3},
        {"rho": 1.0},
        {"loss": "kl"},
        {"loss": "wasserstein:30"},
    ],
)
def test_gradients_match_finite_differences(prob, variant):
    x, M, A = prob
    D = A.T.copy()
    w = np.array([0.2, 0.3, 0.5])
    t = gauss(x, 0.45, 0.1)
    kw = dict(M=M, n_iter=30, **variant)
    v, gD, gw = wassdl.barycenter_loss_and_grad(D, w, t, 5e-2, **kw)

    def fw(wv):
        return wassdl.barycenter_loss_and_grad(D, wv, t, 5e-2, **kw)[0]

    # Central differences with h = 1e-6 on a loss of size ~1e-2 computed to ~1e-15:
    # truncation h² f''' ~ 1e-12 and rounding 1e-15/1e-6 = 1e-9 absolute, hence the
    # floor 1e-5 on the denominator and the 1e-5 relative bound.
    r = wassdl.check_gradient(fw, w, gw, step=1e-6, floor=1e-5)
    assert r["max_rel_err"] < 1e-5, r["summary"]
    # Atoms: along mass-preserving directions e_i − e_j of the first atom (bulk entries;
    # the atom centres at 0.25 = index 12). The Wasserstein loss's gradient (Table 1: a
    # dual potential) is defined only up to a constant, so only such directions are
    # meaningful for it; for the others they test the same derivative.
    pairs = [(8, 16), (10, 14), (12, 9)]

    def fD(s):
        D2 = D.copy()
        for sk, (i, j) in zip(s, pairs):
            D2[0, i] += sk
            D2[0, j] -= sk
        return wassdl.barycenter_loss_and_grad(D2, w, t, 5e-2, **kw)[0]

    g_dir = np.array([gD[0, i] - gD[0, j] for i, j in pairs])
    r = wassdl.check_gradient(fD, np.zeros(len(pairs)), g_dir, step=1e-7, floor=1e-4)
    assert r["max_rel_err"] < 1e-5, r["summary"]


def test_tape_and_analytic_agree(prob):
    x, M, A = prob
    D, w, t = A.T, np.array([0.2, 0.3, 0.5]), gauss(x, 0.45, 0.1)
    for log_domain in [False, True]:
        a = wassdl.barycenter_loss_and_grad(D, w, t, 5e-2, M=M, n_iter=40, log_domain=log_domain)
        b = wassdl.barycenter_loss_and_grad(D, w, t, 5e-2, M=M, n_iter=40, log_domain=log_domain, method="analytic")
        assert abs(a[0] - b[0]) <= 1e-13 * abs(a[0])
        # two derivations of the same derivative summed in different orders
        np.testing.assert_allclose(b[1], a[1], rtol=1e-9, atol=1e-12 * np.abs(a[1]).max())
        np.testing.assert_allclose(b[2], a[2], rtol=1e-9, atol=1e-14)


def test_loss_and_grad_batch_and_log(prob):
    x, M, A = prob
    W = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    T = np.stack([gauss(x, 0.45, 0.1), gauss(x, 0.3, 0.1)])
    v, gD, gW, lg = wassdl.barycenter_loss_and_grad(A.T, W, T, 5e-2, M=M, n_iter=20, chunk=1, checkpoint=5, log=True)
    assert gW.shape == (2, 3) and lg["barycenters"].shape == (2, 50)
    parts = [wassdl.barycenter_loss_and_grad(A.T, W[k], T[k], 5e-2, M=M, n_iter=20) for k in range(2)]
    assert abs(v - sum(p[0] for p in parts)) < 1e-14
    np.testing.assert_allclose(gD, parts[0][1] + parts[1][1], rtol=1e-12, atol=1e-15)
    # per-datapoint weight gradients: the same terms, but the GEMMs block differently
    # for one and for two columns (measured: 1.7e-16 relative)
    for k in range(2):
        np.testing.assert_allclose(gW[k], parts[k][2], rtol=1e-13, atol=1e-16)


def test_wdl_objective_gradient(prob):
    x, M, A = prob
    X = np.stack([gauss(x, c, 0.06) for c in (0.3, 0.45, 0.6)])
    rng = np.random.RandomState(0)
    alpha, beta = rng.randn(2, 50) * 0.1, rng.randn(3, 2) * 0.1
    v, ga, gb = wassdl.wdl_objective(X, alpha, beta, 5e-2, n_iter=20)
    theta = np.concatenate([alpha.ravel(), beta.ravel()])

    def f(th):
        return wassdl.wdl_objective(X, th[:100].reshape(2, 50), th[100:].reshape(3, 2), 5e-2, n_iter=20)[0]

    g = np.concatenate([ga.ravel(), gb.ravel()])
    r = wassdl.check_gradient(f, theta, g, step=1e-6, coords=[0, 17, 60, 99, 100, 103, 105], floor=1e-6)
    assert r["max_rel_err"] < 1e-5, r["summary"]


# --------------------------------------------------------------------------- dictionary


def fig2_data():
    x = np.linspace(0, 1, 60)
    return np.stack([gauss(x, c, 0.05) for c in (0.3, 0.4, 0.5, 0.6, 0.7)])


def test_dictionary_fit_transform_inverse():
    X = fig2_data()
    wdl = wassdl.WassersteinDictionary(2, reg=2e-3, n_iter=40, max_iter=30, random_state=0)
    W = wdl.fit_transform(X)
    assert wdl.components_.shape == (2, 60) and W.shape == (5, 2)
    np.testing.assert_allclose(wdl.components_.sum(1), 1, atol=1e-12)
    assert wdl.n_iter_ <= 30 and wdl.termination_
    assert wdl.history_[-1]["loss"] < wdl.history_[0]["loss"]
    R = wdl.inverse_transform(W)
    assert R.shape == X.shape
    # transform of the training data with the atoms fixed reaches at least the fitted loss
    W2 = wdl.transform(X)
    R2 = wdl.inverse_transform(W2)
    assert np.sum((R2 - X) ** 2) <= np.sum((R - X) ** 2) * (1 + 1e-6)
    # a single weight vector gives a single histogram
    assert wdl.inverse_transform(W[0]).shape == (60,)


def test_dictionary_continues_from_given_atoms_and_weights():
    # The logarithms of eq. 13 round-trip: a fit started from another fit's components_
    # and weights_ starts at its final loss (1e-12 relative: a few ulps per entry).
    X = fig2_data()
    a = wassdl.WassersteinDictionary(2, reg=2e-3, n_iter=40, max_iter=5, random_state=0)
    a.fit(X)
    b = wassdl.WassersteinDictionary(
        2, reg=2e-3, n_iter=40, max_iter=5, atom_init=a.components_, weight_init=a.weights_
    ).fit(X)
    assert abs(b.history_[0]["loss"] - a.loss_) <= 1e-12 * a.loss_
    assert b.loss_ < a.loss_
    with pytest.raises(ValueError, match="atom_init"):
        wassdl.WassersteinDictionary(2, atom_init=a.components_[:, :-1]).fit(X)
    zero = a.components_.copy()
    zero[0, 0], zero[0, 1] = 0.0, zero[0, 1] + zero[0, 0]
    with pytest.raises(ValueError, match="atom_init"):
        wassdl.WassersteinDictionary(2, atom_init=zero, weight_init=a.weights_).fit(X)
    with pytest.raises(ValueError, match="atom_init"):
        wassdl.WassersteinDictionary(2, atom_init="zeros").fit(X)


def test_dictionary_images_and_float32():
    n = 12
    I, J = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    imgs = []
    for c in (3, 5, 7, 9):
        im = np.exp(-((I - c) ** 2 + (J - c) ** 2) / 4.0) + 1e-6
        imgs.append(im / im.sum())
    X = np.stack(imgs).astype(np.float32)
    wdl = wassdl.WassersteinDictionary(2, reg=1e-2, n_iter=20, max_iter=5)
    W = wdl.fit_transform(X)
    assert wdl.components_.dtype == np.float32 and wdl.components_.shape == (2, n * n)
    assert wdl.inverse_transform(W).shape == (4, n, n)


def test_params_protocol():
    wdl = wassdl.WassersteinDictionary(3, reg=1e-2, n_iter=10)
    p = wdl.get_params()
    assert p["n_atoms"] == 3 and p["n_iter"] == 10
    clone = wassdl.WassersteinDictionary(**p)
    assert clone.get_params() == p
    assert wdl.set_params(n_atoms=4, loss="kl") is wdl and wdl.n_atoms == 4
    with pytest.raises(ValueError, match="invalid parameter"):
        wdl.set_params(bogus=1)
    assert "n_atoms=4" in repr(wdl)
    sk = pytest.importorskip("sklearn.base")
    c = sk.clone(wdl)
    assert c.get_params() == wdl.get_params()


def test_bad_dictionary_input():
    X = fig2_data()
    with pytest.raises(ValueError, match="loss"):
        wassdl.WassersteinDictionary(2, loss="huber").fit(X)
    with pytest.raises(ValueError, match="sum"):
        wassdl.WassersteinDictionary(2, max_iter=2).fit(X * 2)
    with pytest.raises(ValueError, match="not fitted"):
        wassdl.WassersteinDictionary(2).transform(X)
    wdl = wassdl.WassersteinDictionary(2, n_iter=10, max_iter=2).fit(X)
    with pytest.raises(ValueError, match="bins"):
        wdl.transform(X[:, :-1])
    with pytest.raises(ValueError, match="line_search"):
        wassdl.WassersteinDictionary(2, line_search="wolfe").fit(X)


def test_callback_verbose_and_early_stop(capsys):
    X = fig2_data()
    seen = []

    def cb(info):
        seen.append(info["iteration"])
        return info["iteration"] < 3

    wdl = wassdl.WassersteinDictionary(2, reg=2e-3, n_iter=20, max_iter=50, callback=cb, verbose=1)
    wdl.fit(X)
    assert seen[:4] == [0, 1, 2, 3] and wdl.termination_ == "stopped" and wdl.n_iter_ == 3
    out = capsys.readouterr().out
    assert out.count("[WassersteinDictionary] iter") == len(seen)

    def bad(info):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        wassdl.WassersteinDictionary(2, n_iter=10, max_iter=5, callback=bad).fit(X)


def test_pickle_round_trip(tmp_path):
    X = fig2_data()
    wdl = wassdl.WassersteinDictionary(2, reg=2e-3, n_iter=30, max_iter=10, callback=lambda i: True).fit(X)
    W = wdl.transform(X)
    R = wdl.inverse_transform(W)
    path = tmp_path / "wdl.pkl"
    path.write_bytes(pickle.dumps(wdl))
    back = pickle.loads(path.read_bytes())
    np.testing.assert_array_equal(back.components_, wdl.components_)
    np.testing.assert_array_equal(back.weights_, wdl.weights_)
    assert back.callback is None  # a lambda cannot be pickled: dropped, documented
    p1, p2 = back.get_params(), wdl.get_params()
    p1.pop("callback"), p2.pop("callback")
    assert p1 == p2
    # the restored model computes the same numbers, to the bit
    np.testing.assert_array_equal(back.transform(X), W)
    np.testing.assert_array_equal(back.inverse_transform(W), R)


def test_doctests():
    import doctest

    r = doctest.testmod(wassdl, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert r.failed == 0 and r.attempted > 40, r


# ---------------------------------------------------------------------------- threads


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_threads_work_in_a_forked_child():
    """A child forked after the library's worker threads started (multiprocessing's
    default on Linux) has none of them: its parallel calls must still finish, with the
    parent's bits. 1500 points per side put each sweep above the threading threshold."""
    rng = np.random.default_rng(0)
    x, y = rng.random((1500, 2)), rng.random((1500, 2))
    parent = wassdl.sinkhorn_divergence(x, y, blur=0.1, threads=2)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 2
        try:
            v = wassdl.sinkhorn_divergence(x, y, blur=0.1, threads=2)
            code = 0 if v == parent else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's threaded call did not finish in 120 s")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
