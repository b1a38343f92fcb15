"""Type stub of the wassdl package (see __init__.py for the documentation)."""

from typing import Any, Callable, Literal, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.floating[Any]]
Method = Literal["sinkhorn", "sinkhorn_log", "sinkhorn_knopp", "sinkhorn_stabilized", "sinkhorn_epsilon_scaling"]
Units = Literal["pot", "geomloss", "pixel"]

def sinkhorn(
    a: ArrayLike, b: ArrayLike, M: ArrayLike, reg: float, method: Method = ...,
    numItermax: int = ..., stopThr: float = ..., verbose: bool = ..., log: bool = ...,
    warn: bool = ..., n_iter: Optional[int] = ...,
) -> Union[FloatArray, tuple[FloatArray, dict[str, Any]]]: ...
def sinkhorn2(
    a: ArrayLike, b: ArrayLike, M: ArrayLike, reg: float, method: Method = ...,
    numItermax: int = ..., stopThr: float = ..., verbose: bool = ..., log: bool = ...,
    warn: bool = ..., n_iter: Optional[int] = ...,
) -> Union[float, FloatArray, tuple[Union[float, FloatArray], dict[str, Any]]]: ...
def barycenter(
    A: ArrayLike, M: Optional[ArrayLike] = ..., reg: float = ..., weights: Optional[ArrayLike] = ...,
    method: Method = ..., numItermax: int = ..., stopThr: float = ..., verbose: bool = ...,
    log: bool = ..., warn: bool = ..., tau: float = ..., n_iter: Optional[int] = ...,
    grid: Optional[Sequence[int]] = ..., units: Units = ...,
) -> Union[FloatArray, tuple[FloatArray, dict[str, Any]]]: ...
def barycenter_unbalanced(
    A: ArrayLike, M: ArrayLike, reg: float, reg_m: float, weights: Optional[ArrayLike] = ...,
    method: Method = ..., numItermax: int = ..., stopThr: float = ..., verbose: bool = ...,
    log: bool = ..., warn: bool = ..., n_iter: Optional[int] = ...,
) -> Union[FloatArray, tuple[FloatArray, dict[str, Any]]]: ...
def convolutional_barycenter2d(
    A: ArrayLike, reg: float, weights: Optional[ArrayLike] = ..., method: Method = ...,
    numItermax: int = ..., stopThr: float = ..., verbose: bool = ..., log: bool = ...,
    warn: bool = ..., n_iter: Optional[int] = ..., units: Units = ...,
) -> Union[FloatArray, tuple[FloatArray, dict[str, Any]]]: ...
def emd(
    a: ArrayLike, b: ArrayLike, M: ArrayLike, numItermax: int = ..., log: bool = ...
) -> Union[npt.NDArray[np.float64], tuple[npt.NDArray[np.float64], dict[str, Any]]]: ...
def emd2(
    a: ArrayLike, b: ArrayLike, M: ArrayLike, numItermax: int = ..., log: bool = ...
) -> Union[float, tuple[float, dict[str, Any]]]: ...
def unmix(
    H: ArrayLike, b: ArrayLike, M: ArrayLike, reg: Optional[float] = ..., lr: float = ...,
    numItermax: int = ..., init: Optional[ArrayLike] = ..., stopThr: float = ..., log: bool = ...,
) -> Union[npt.NDArray[np.float64], tuple[npt.NDArray[np.float64], dict[str, Any]]]: ...
def sinkhorn_divergence(
    X: ArrayLike, Y: ArrayLike, a: Optional[ArrayLike] = ..., b: Optional[ArrayLike] = ...,
    p: float = ..., blur: float = ..., scaling: float = ..., debias: bool = ...,
    diameter: Optional[float] = ..., refine_tol: Optional[float] = ..., log: bool = ...,
    threads: int = ...,
) -> Union[float, tuple[float, dict[str, Any]]]: ...
def barycenter_loss_and_grad(
    atoms: ArrayLike, weights: ArrayLike, targets: ArrayLike, reg: float,
    M: Optional[ArrayLike] = ..., grid: Optional[Sequence[int]] = ..., units: Units = ...,
    loss: str = ..., n_iter: int = ..., tau: float = ..., rho: Optional[float] = ...,
    log_domain: bool = ..., method: Literal["tape", "analytic"] = ...,
    chunk: Optional[int] = ..., checkpoint: Optional[int] = ..., log: bool = ...,
) -> tuple[Any, ...]: ...
def check_gradient(
    f: Callable[[npt.NDArray[np.float64]], float], x: ArrayLike, grad: ArrayLike,
    step: float = ..., relative: bool = ..., coords: Optional[Sequence[int]] = ...,
    floor: float = ..., five_point: bool = ...,
) -> dict[str, Any]: ...
def wdl_objective(
    X: ArrayLike, alpha: ArrayLike, beta: ArrayLike, reg: float, **params: Any
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...

class WassersteinDictionary:
    n_atoms: int
    reg: float
    M: Optional[ArrayLike]
    grid: Optional[Sequence[int]]
    units: Units
    n_iter: int
    loss: str
    tau: float
    rho: Optional[float]
    log_domain: bool
    zeta: float
    max_iter: int
    memory: int
    tol_grad: float
    tol_cost: float
    line_search: Literal["more-thuente", "hager-zhang", "backtracking"]
    warm_restart: Optional[int]
    atom_init: Literal["random", "constant", "data"]
    weight_init: Union[str, ArrayLike]
    random_state: int
    gradient: Literal["tape", "analytic"]
    chunk: Optional[int]
    checkpoint: Optional[int]
    transform_max_iter: Optional[int]
    verbose: int
    callback: Optional[Callable[[dict[str, Any]], Any]]
    components_: FloatArray
    weights_: FloatArray
    loss_: float
    n_iter_: int
    termination_: str
    history_: list[dict[str, Any]]
    n_features_in_: int
    def __init__(
        self, n_atoms: int = ..., reg: float = ..., *, M: Optional[ArrayLike] = ...,
        grid: Optional[Sequence[int]] = ..., units: Units = ..., n_iter: int = ...,
        loss: str = ..., tau: float = ..., rho: Optional[float] = ..., log_domain: bool = ...,
        zeta: float = ..., max_iter: int = ..., memory: int = ..., tol_grad: float = ...,
        tol_cost: float = ..., line_search: str = ..., warm_restart: Optional[int] = ...,
        atom_init: str = ..., weight_init: Union[str, ArrayLike] = ..., random_state: int = ...,
        gradient: str = ..., chunk: Optional[int] = ..., checkpoint: Optional[int] = ...,
        transform_max_iter: Optional[int] = ..., verbose: int = ...,
        callback: Optional[Callable[[dict[str, Any]], Any]] = ...,
    ) -> None: ...
    def get_params(self, deep: bool = ...) -> dict[str, Any]: ...
    def set_params(self, **params: Any) -> "WassersteinDictionary": ...
    def fit(self, X: ArrayLike, y: Any = ...) -> "WassersteinDictionary": ...
    def fit_transform(self, X: ArrayLike, y: Any = ...) -> FloatArray: ...
    def transform(self, X: ArrayLike) -> FloatArray: ...
    def inverse_transform(self, W: ArrayLike) -> FloatArray: ...
    def __getstate__(self) -> dict[str, Any]: ...
    def __setstate__(self, state: dict[str, Any]) -> None: ...
