"""The paper's Figure 2 from Python: five translated Gaussians, two atoms, Wasserstein
dictionary learning (WDL) against rank-2 PCA and NMF, written as .npy arrays and PNG
plots without matplotlib (a small rasterizer and PNG writer below).

Same recipe as the Rust example examples/fig2_gaussians.rs: σ = 0.05, centres
linspace(0.3, 0.7, 5), 100 bins of [0, 1]; γ = 2σ² = 0.005 (POT units), quadratic loss,
L = 100 Sinkhorn iterations, four random restarts, the lowest loss kept. PCA with the
mean (as scikit-learn's inverse_transform), NMF by multiplicative updates (Frobenius).

    python python/examples/fig2.py [--quick] [--out DIR]
"""

import argparse
import pathlib
import struct
import time
import zlib

import numpy as np

import wassdl

SIGMA = 0.05


def data(n=100):
    x = np.linspace(0, 1, n)
    X = np.stack([np.exp(-((x - m) ** 2) / (2 * SIGMA**2)) for m in np.linspace(0.3, 0.7, 5)])
    return x, X / X.sum(1, keepdims=True)


def pca(X, k=2):
    mu = X.mean(0)
    U, s, Vt = np.linalg.svd(X - mu, full_matrices=False)
    return (U[:, :k] * s[:k]) @ Vt[:k] + mu


def nmf(X, k=2, iters=5000, seed=0):
    """Lee-Seung multiplicative updates for ‖X − WH‖²_F (no scikit-learn needed)."""
    rng = np.random.RandomState(seed)
    W = rng.rand(X.shape[0], k) + 0.1
    H = rng.rand(k, X.shape[1]) + 0.1
    for _ in range(iters):
        H *= (W.T @ X) / (W.T @ W @ H + 1e-300)
        W *= (X @ H.T) / (W @ H @ H.T + 1e-300)
    return W @ H


# --------------------------------------------------------------------- PNG, no matplotlib


def png(path, rgb):
    """Writes an (h, w, 3) uint8 image as PNG (zlib-compressed scanlines)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag, body):
        c = struct.pack(">I", len(body)) + tag + body
        return c + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def line_panel(curves, w=300, h=150, ymax=None):
    """Rasterizes curves (each a 1-D array over [0, 1]) into a white panel."""
    img = np.full((h, w, 3), 255, np.uint8)
    ymax = ymax or max(float(c.max()) for c in curves) * 1.05
    for k, c in enumerate(curves):
        xs = np.linspace(0, w - 1, 4 * w)
        ys = np.interp(xs, np.linspace(0, w - 1, len(c)), c)
        rows = np.clip((h - 1) - ys / ymax * (h - 5), 0, h - 1).astype(int)
        cols = xs.astype(int)
        for dr in (-1, 0, 1):  # 3-pixel-thick lines
            img[np.clip(rows + dr, 0, h - 1), cols] = COLORS[k % len(COLORS)]
    img[-1, :] = img[:, 0] = 0
    return img


def grid_figure(rows):
    """Stacks a list of rows of panels with 4-pixel white gutters."""
    gut = 4
    lines = []
    for r in rows:
        h = r[0].shape[0]
        sep = np.full((h, gut, 3), 255, np.uint8)
        parts = []
        for p in r:
            parts += [p, sep]
        lines.append(np.concatenate(parts[:-1], 1))
        lines.append(np.full((gut, lines[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(lines[:-1], 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50 L-BFGS iterations instead of 300")
    ap.add_argument("--out", default="fig2_out", help="output directory")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x, X = data()
    iters = 50 if args.quick else 300
    t0 = time.perf_counter()
    best = None
    for seed in range(4):
        wdl = wassdl.WassersteinDictionary(
            2, reg=2 * SIGMA**2, n_iter=100, loss="quadratic", max_iter=iters, random_state=seed
        )
        wdl.fit(X)
        print(f"restart {seed}: loss {wdl.loss_:.4e} after {wdl.n_iter_} iterations ({wdl.termination_})")
        if best is None or wdl.loss_ < best.loss_:
            best = wdl
    secs = time.perf_counter() - t0
    R_wdl = best.inverse_transform(best.weights_)
    R_pca, R_nmf = pca(X), nmf(X)
    mse = {k: float(np.mean((R - X) ** 2)) for k, R in [("wdl", R_wdl), ("pca", R_pca), ("nmf", R_nmf)]}
    print(f"MSE  WDL {mse['wdl']:.3e}  PCA {mse['pca']:.3e}  NMF {mse['nmf']:.3e}  (WDL {secs:.1f} s)")

    for name, arr in [("data", X), ("wdl_atoms", best.components_), ("wdl_weights", best.weights_),
                      ("wdl_reconstruction", R_wdl), ("pca_reconstruction", R_pca),
                      ("nmf_reconstruction", R_nmf), ("wdl_loss", np.array([h["loss"] for h in best.history_]))]:
        np.save(out / f"{name}.npy", arr)
    # One row per datapoint: data (blue) against WDL, PCA, NMF reconstructions (red);
    # top row: the two WDL atoms.
    ymax = float(X.max()) * 1.15
    rows = [[line_panel([best.components_[0], best.components_[1]], ymax=None)] * 1]
    for m in range(X.shape[0]):
        rows.append([line_panel([X[m], R[m]], ymax=ymax) for R in (R_wdl, R_pca, R_nmf)])
    rows[0] = rows[0] + [np.full_like(rows[1][0], 255)] * 2
    png(out / "fig2.png", grid_figure(rows))
    print(f"wrote {out}/fig2.png (rows: atoms, then each datapoint; columns: WDL, PCA, NMF) and the .npy arrays")


if __name__ == "__main__":
    main()
