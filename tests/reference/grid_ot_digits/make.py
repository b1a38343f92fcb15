"""Reference for the transport metric of the real-data examples (wassdl::baselines::ot_cost).

Exact OT cost W2^2 (squared pixel distances) between fixed pairs of 8x8 histograms made
from scikit-learn's digits (data/digits_images.npy): image 0 vs image 1, and the first
"3" vs a clipped-and-renormalized PCA-like perturbation of it. Computed with POT 0.9.7
ot.emd2 (network simplex), numItermax large. Run from the repository root:
    ~/.venv-peers/bin/python tests/reference/grid_ot_digits/make.py
"""
import json, os
import numpy as np
import ot

here = os.path.dirname(os.path.abspath(__file__))
X = np.load(os.path.join(here, "../../../data/digits_images.npy")).reshape(-1, 64)
y = np.load(os.path.join(here, "../../../data/digits_labels.npy"))

def hist(v, floor=1e-3):
    v = v + floor
    return v / v.sum()

ii, jj = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
P = np.stack([ii.ravel(), jj.ravel()], 1).astype(float)
M = ot.dist(P, P, metric="sqeuclidean")  # row-major grid, squared distance in pixels

a = hist(X[0]); b = hist(X[1])
three = hist(X[np.where(y == 3)[0][0]])
rng = np.random.default_rng(0)
pert = three + 0.02 * rng.standard_normal(64)
pert = np.maximum(pert, 0); pert /= pert.sum()
A = np.stack([a, three]); B = np.stack([b, pert])
costs = [float(ot.emd2(A[k], B[k], M, numItermax=10_000_000)) for k in range(2)]
np.save(os.path.join(here, "a.npy"), A)
np.save(os.path.join(here, "b.npy"), B)
np.save(os.path.join(here, "cost_matrix.npy"), M)
np.save(os.path.join(here, "ot_cost.npy"), np.array(costs))
json.dump({
    "call": "ot.emd2(a[k], b[k], M, numItermax=10_000_000), M = ot.dist(P, P, 'sqeuclidean') on the 8x8 pixel grid (row-major)",
    "pot": ot.__version__,
    "ot_cost": costs,
    "tolerance": "rtol 1e-12: both are exact network simplex solutions; only summation order differs",
}, open(os.path.join(here, "case.json"), "w"), indent=1)
print(costs)
