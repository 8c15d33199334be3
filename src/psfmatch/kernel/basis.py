"""Kernel bases (Alard-Lupton, delta-function) and the delta-function regularization.

Alard-Lupton basis (Alard & Lupton 1998; Alard 2000), built as LSST's
``makeAlardLuptonBasisList`` does: for each Gaussian ``g`` of width
``sigma_g`` and degree ``d_g`` the point-sampled, unit-sum Gaussian
``G_g(u, v)`` on the ``k x k`` grid ``u, v in [-h, h]`` (``h = k // 2``, ``u`` the
column offset) is multiplied by the monomials ``(u/h)^p (v/h)^q`` with
``p + q <= d_g``, in afw order ``1, x, y, x^2, xy, y^2, x^3, ...``.  The list is
then renormalized (:func:`renormalize_kernel_list`): the first kernel keeps unit
sum and is the only one with a non-zero sum; every other kernel with a
non-negligible sum ``s_i`` becomes ``B_i / s_i - B_0``, and all of them are
scaled to unit L2 norm.  The kernel sum therefore equals the first coefficient.

Delta-function basis: ``k^2`` kernels, kernel ``n`` is 1 at row ``n // k``,
column ``n % k`` (row-major).  Its solutions are regularized with a
finite-difference smoothness penalty ``lambda p^T H p`` on the kernel pixels
``p`` (Becker et al. 2012), ``H = L^T L`` built by
:func:`make_regularization_matrix`.

References
----------
Alard, C. & Lupton, R. H. 1998, ApJ 503, 325.
Alard, C. 2000, A&AS 144, 363.
Becker, A. C. et al. 2012, AJ 143, 21 (regularized delta-function kernels).
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidConfigError
from ..geom import _finite_real, _integral, _scalar

__all__ = [
    "KernelBasis",
    "alard_lupton_basis",
    "makeAlardLuptonBasisList",
    "makeDeltaFunctionBasisList",
    "renormalize_kernel_list",
    "renormalizeKernelList",
    "make_regularization_matrix",
    "makeRegularizationMatrix",
    "makeKernelBasisList",
    "alard_lupton_sigmas",
]

FLT_EPSILON = float(np.finfo(np.float32).eps)

#: Highest polynomial degree of an Alard-Lupton Gaussian (and highest spatial order, see
#: :class:`~psfmatch.kernel.SpatialFunction`): a degree ``d`` makes ``(d + 1)(d + 2) / 2`` terms, so an
#: absurd one is refused before it allocates them.
MAX_DEGREE = 20


def _whole_number(value, name, remedy, minimum=None, maximum=None) -> int:
    """``value`` as an int: an integer (of any size), or a finite real number of integer value (``21.0``).

    A 0-d numpy array is taken as the number it holds.

    Raises
    ------
    InvalidConfigError
        If ``value`` is not one (None, a string, NaN, inf, 2.5, a bool) or lies outside
        ``[minimum, maximum]`` (either bound None: none); the message names ``name`` and says ``remedy``.
    """
    ok = _integral(value)
    if ok:
        number = int(_scalar(value))  # (an int, compared with the bounds exactly whatever its size)
        ok = (minimum is None or number >= minimum) and (maximum is None or number <= maximum)
    if not ok:
        bounds = {(True, True): "", (False, True): f" >= {minimum}", (True, False): f" <= {maximum}",
                  (False, False): f" from {minimum} to {maximum}"}[(minimum is None, maximum is None)]
        raise InvalidConfigError(f"{name} must be a whole number{bounds}; got {value!r} ({remedy})")
    return number


def _check_addressable(values, what, remedy) -> None:
    """InvalidConfigError when an array of ``values`` float64 numbers is more than numpy can allocate.

    (A size of hundreds of digits made numpy raise a bare OverflowError or ValueError.)
    """
    if values * 8 > sys.maxsize:
        raise InvalidConfigError(f"{what} is more than numpy can allocate ({remedy})")


def _real_list(values, name, example) -> list:
    """``values`` (a sequence, not a string) as a list, or InvalidConfigError naming ``name``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or np.ndim(values) != 1:
        raise InvalidConfigError(f"{name} must be a list with one entry per Gaussian, as in {example}; "
                                 f"got {values!r}")
    return list(values)


def _float_stack(images, name) -> np.ndarray:
    """``images`` as a new float64 array, or InvalidConfigError when they are not real numbers."""
    try:
        a = np.asarray(images)
    except (TypeError, ValueError):  # ragged nested lists
        a = None
    if a is None or a.dtype.kind not in "biuf":
        what = "nested lists of unequal lengths" if a is None else f"an array of dtype {a.dtype}"
        hint = " (pass the real part explicitly, if that is what is meant)" if a is not None and a.dtype.kind == "c" \
            else ""
        raise InvalidConfigError(f"{name} must be an array of real numbers (n, k, k); got {what}{hint}")
    return np.array(a, dtype=np.float64)


@dataclass
class KernelBasis:
    """A list of ``k x k`` basis kernels with a description.

    Attributes
    ----------
    images : ndarray, shape (n, k, k)
        The basis kernels (read-only).
    kind : str
        ``"alard-lupton"``, ``"delta-function"`` or ``"pca"``.
    description : dict
        How it was built (sigmas, degrees, mode), JSON-serializable.
    """

    images: np.ndarray
    kind: str
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images = _float_stack(self.images, "basis images")
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2] or self.images.shape[1] % 2 == 0:
            raise InvalidConfigError(f"basis images must be (n, k, k) with odd k; got shape {self.images.shape}")
        self.images.setflags(write=False)

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]

    def __iter__(self):
        return iter(self.images)

    @property
    def kernel_size(self) -> int:
        return self.images.shape[1]

    def sums(self) -> np.ndarray:
        return self.images.sum(axis=(1, 2))


def _monomials(degree):
    """Exponents (p, q) of x^p y^q in afw PolynomialFunction2 order."""
    return [(n - j, j) for n in range(degree + 1) for j in range(n + 1)]


def renormalize_kernel_list(images) -> np.ndarray:
    """LSST's ``renormalizeKernelList``: first kernel unit sum, the others zero sum and unit L2 norm.

    Parameters
    ----------
    images : array_like, shape (n, k, k)

    Returns
    -------
    ndarray, shape (n, k, k)
        ``B_0 = K_0 / sum K_0``; for ``i >= 1``, ``K_i / s_i - B_0`` when
        ``|s_i| > FLT_EPSILON`` (else ``K_i``), then divided by its L2 norm.
    """
    k = _float_stack(images, "renormalize_kernel_list's images")
    if k.ndim != 3 or len(k) == 0:
        raise InvalidConfigError(f"renormalize_kernel_list needs a non-empty (n, k, k) stack; got shape {k.shape}")
    s0 = k[0].sum()
    if abs(s0) <= FLT_EPSILON:
        raise InvalidConfigError("the first kernel of a basis must have a non-zero sum")
    out = np.empty_like(k)
    out[0] = k[0] / s0
    for i in range(1, len(k)):
        ki = k[i]
        s = ki.sum()
        if abs(s) > FLT_EPSILON:
            ki = ki / s - out[0]
        norm = np.sqrt(np.sum(ki * ki))
        out[i] = ki / norm if norm > 0 else ki
    return out


renormalizeKernelList = renormalize_kernel_list


def alard_lupton_basis(half_width, sigmas, degrees, renormalize=True) -> np.ndarray:
    """The Alard-Lupton kernels for Gaussians ``sigmas`` with polynomial ``degrees``; see the module doc."""
    h = _whole_number(half_width, "Alard-Lupton half width", "the kernel size is 2 * halfWidth + 1", minimum=1)
    sigmas = _real_list(sigmas, "alardSigGauss", "[0.7, 1.5, 3.0]")
    degrees = _real_list(degrees, "alardDegGauss", "[4, 2, 2]")
    if len(sigmas) != len(degrees):
        raise InvalidConfigError(
            f"alardSigGauss has {len(sigmas)} entries but alardDegGauss has {len(degrees)}; they must match")
    for sigma, deg in zip(sigmas, degrees):
        if not (_finite_real(_scalar(sigma)) and sigma > 0):
            raise InvalidConfigError(f"Alard-Lupton sigmas (alardSigGauss) must be positive finite numbers "
                                     f"(Gaussian widths in pixels); got {sigma!r}")
        _whole_number(deg, "each Alard-Lupton degree (alardDegGauss)",
                      "the degree of the polynomial multiplying its Gaussian", minimum=0, maximum=MAX_DEGREE)
    k = 2 * h + 1
    _check_addressable(max(2, sum((int(d) + 1) * (int(d) + 2) // 2 for d in degrees)) * k * k,
                       f"an Alard-Lupton basis of {k} x {k} px kernels", "the kernel size is 2 * halfWidth + 1: "
                       "a few times the PSFs' FWHM, as in 21")
    # every fit with the same configuration builds the same basis: it is made once (a copy is returned)
    return _alard_lupton_images(h, tuple(float(s) for s in sigmas), tuple(int(d) for d in degrees),
                                bool(renormalize)).copy()


@functools.lru_cache(maxsize=32)
def _alard_lupton_images(h, sigmas, degrees, renormalize):
    v, u = np.mgrid[-h:h + 1, -h:h + 1].astype(np.float64)
    out = []
    for sigma, deg in zip(sigmas, degrees):
        g = np.exp(-(u * u + v * v) / (2.0 * sigma * sigma))
        g /= g.sum()
        for p, q in _monomials(deg):
            out.append(g * (u / h) ** p * (v / h) ** q)
    out = np.array(out)
    out = renormalize_kernel_list(out) if renormalize else out
    out.setflags(write=False)
    return out


def makeAlardLuptonBasisList(halfWidth, nGauss, sigGauss, degGauss) -> KernelBasis:
    """LSST-named wrapper: ``nGauss`` must equal ``len(sigGauss) == len(degGauss)``.

    Raises
    ------
    InvalidConfigError
        If ``halfWidth`` is not a whole number >= 1, ``sigGauss`` or ``degGauss`` is not a sequence of
        numbers (a list, tuple or 1-d array; a scalar, string or mapping is refused), their lengths
        differ from ``nGauss``, a width is not a positive finite number, or a degree is not a whole
        number from 0 to :data:`MAX_DEGREE`.
    """
    sigGauss = _real_list(sigGauss, "alardSigGauss", "[0.7, 1.5, 3.0]")
    degGauss = _real_list(degGauss, "alardDegGauss", "[4, 2, 2]")
    if not (nGauss == len(sigGauss) == len(degGauss)):
        raise InvalidConfigError(
            f"alardNGauss={nGauss} must equal len(alardSigGauss)={len(sigGauss)} "
            f"and len(alardDegGauss)={len(degGauss)}")
    images = alard_lupton_basis(halfWidth, sigGauss, degGauss)
    return KernelBasis(images, "alard-lupton", {
        "ALBasisNGauss": int(nGauss), "ALBasisDegGauss": [int(d) for d in degGauss],
        "ALBasisSigGauss": [float(s) for s in sigGauss], "ALKernelSize": 2 * int(halfWidth) + 1})


def makeDeltaFunctionBasisList(width, height=None) -> KernelBasis:
    """``width * height`` delta kernels, row-major: kernel ``n`` is 1 at ``[n // width, n % width]``.

    Raises
    ------
    InvalidConfigError
        If ``width`` (or ``height``) is not a whole number, or the kernel is not square and odd.
    """
    height = width if height is None else height
    remedy = "the kernel size: an odd number of pixels, as in 21"
    w = _whole_number(width, "delta-function kernel width", remedy)
    h = _whole_number(height, "delta-function kernel height", remedy)
    if w != h or w % 2 == 0 or w < 1:
        raise InvalidConfigError(f"delta-function kernels must be square and odd; got {width}x{height}")
    width = height = w
    n = width * height
    _check_addressable(n * n, f"a delta-function basis of {w} x {w} px kernels", remedy)
    return KernelBasis(np.eye(n).reshape(n, height, width), "delta-function", {"DFKernelSize": int(width)})


def _penalty_rows_central(k, stencil, border_penalty):
    rows = []
    if stencil == 5:
        coeffs = {(0, 0): -4.0, (0, 1): 1.0, (0, -1): 1.0, (1, 0): 1.0, (-1, 0): 1.0}
    else:
        coeffs = {(dy, dx): (4.0 if (dx == 0) != (dy == 0) else 1.0) / 6.0
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)}
        coeffs[(0, 0)] = -20.0 / 6.0
    for r in range(k):
        for c in range(k):
            row = np.zeros(k * k)
            if 0 < r < k - 1 and 0 < c < k - 1:
                for (dy, dx), w in coeffs.items():
                    row[(r + dy) * k + (c + dx)] = w
            else:
                row[r * k + c] = border_penalty
            rows.append(row)
    return np.array(rows)


def _forward_difference(order):
    # coefficients of the forward difference of order n: (-1)^(n-i) C(n, i)
    return np.array([(-1) ** (order - i) * math.comb(order, i) for i in range(order + 1)], dtype=float)


def _penalty_rows_forward(k, orders, border_penalty):
    rows = []
    for order in orders:
        for r in range(k):
            for c in range(k):
                for axis in (0, 1):
                    room = (k - 1 - c) if axis == 0 else (k - 1 - r)
                    o = min(order, room)  # taper the order near the far edge
                    if o == 0:
                        continue
                    coeff = _forward_difference(o)
                    row = np.zeros(k * k)
                    for i, w in enumerate(coeff):
                        rr, cc = (r, c + i) if axis == 0 else (r + i, c)
                        row[rr * k + cc] = w
                    rows.append(row)
    if border_penalty > 0:
        for r in range(k):
            for c in range(k):
                if r in (0, k - 1) or c in (0, k - 1):
                    row = np.zeros(k * k)
                    row[r * k + c] = border_penalty
                    rows.append(row)
    return np.array(rows)


def make_regularization_matrix(kernel_size, regularization_type="centralDifference", stencil=9,
                               orders=(1, 2), border_penalty=3.0) -> np.ndarray:
    """The ``k^2 x k^2`` smoothness penalty ``H = L^T L`` for a delta-function kernel.

    Parameters
    ----------
    kernel_size : int
        Odd kernel side ``k``.
    regularization_type : {"centralDifference", "forwardDifference"}
        ``centralDifference``: ``L`` applies the 5-point Laplacian
        ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` or the 9-point one
        ``[[1, 4, 1], [4, -20, 4], [1, 4, 1]] / 6`` at interior pixels, and
        ``border_penalty`` times the identity at border pixels.
        ``forwardDifference``: ``L`` stacks forward differences of each order in
        ``orders`` along x and y (the order tapered where the kernel edge leaves
        no room), plus ``border_penalty`` on the border pixels.
    stencil : {5, 9}
        Laplacian stencil for ``centralDifference``.
    orders : sequence of int in 1..3
        Forward-difference orders.
    border_penalty : float
        >= 0.

    Raises
    ------
    InvalidConfigError
        For a kernel size that is not an odd whole number >= 3, an unknown type, a stencil other
        than 5 or 9, orders outside 1..3 or a border penalty that is not a finite number >= 0.
    """
    k = _whole_number(kernel_size, "the regularized kernel size", "an odd number of pixels >= 3, as in 21",
                      minimum=3)
    if k % 2 == 0:
        raise InvalidConfigError(f"regularization needs an odd kernel size >= 3; got {kernel_size}")
    _check_addressable(k ** 4, f"the regularization matrix of a {k} x {k} px kernel", "an odd kernel size of tens "
                       "of pixels, as in 21")
    border_penalty = _scalar(border_penalty)
    if not (_finite_real(border_penalty) and border_penalty >= 0):
        raise InvalidConfigError(f"regularizationBorderPenalty must be >= 0; got {border_penalty!r} (a finite "
                                 "number: the default is 3.0; 0 leaves the border pixels unpenalized)")
    if regularization_type == "centralDifference":
        if stencil not in (5, 9):
            raise InvalidConfigError(f"centralRegularizationStencil must be 5 or 9; got {stencil}")
        L = _penalty_rows_central(k, stencil, border_penalty)
    elif regularization_type == "forwardDifference":
        orders = _scalar(orders)
        orders = [orders] if np.isscalar(orders) else [_scalar(o) for o in orders]
        if not orders or any(not isinstance(o, numbers.Real) or isinstance(o, (bool, np.bool_))
                             or o not in (1, 2, 3) for o in orders):
            raise InvalidConfigError(f"forwardRegularizationOrders must each be 1, 2 or 3; got {orders}")
        L = _penalty_rows_forward(k, [int(o) for o in orders], border_penalty)
    else:
        raise InvalidConfigError(
            f"regularizationType must be 'centralDifference' or 'forwardDifference'; got {regularization_type!r}")
    # each row of L has at most 9 non-zeros: the sparse product costs O(k^2), the dense one O(k^6)
    # (0.06 s at k = 41), for the same sums
    from scipy import sparse

    Ls = sparse.csr_matrix(L)
    return (Ls.T @ Ls).toarray()


def makeRegularizationMatrix(config) -> np.ndarray:
    """:func:`make_regularization_matrix` from a delta-function config."""
    return make_regularization_matrix(
        config.kernelSize, config.regularizationType, config.centralRegularizationStencil,
        config.forwardRegularizationOrders, config.regularizationBorderPenalty)


def alard_lupton_sigmas(config, reference_fwhm=None, science_fwhm=None):
    """Basis widths and kernel size for the Alard-Lupton basis (LSST's ``scaleByFwhm`` rule).

    With ``scaleByFwhm`` and both FWHMs known: ``sigma_k = sqrt(|sigma_ref^2 -
    sigma_sci^2|)`` (``sigma = fwhm / 2.355``), floored at ``alardMinSig`` (or
    ``alardMinSigDeconv`` when the science PSF is the broader); the first width is
    ``max(minSig, sigma_k / beta)`` and each next one is ``beta`` times larger;
    the kernel size is ``kernelSizeFwhmScaling * sigma_last`` rounded to an odd
    integer and clamped to ``[kernelSizeMin, kernelSizeMax]``.  Otherwise the
    configured ``alardSigGauss`` and ``kernelSize`` are used.

    Returns
    -------
    sigmas : list of float
    kernel_size : int
    mode : str
        ``"config"`` or ``"fwhm"`` (recorded as ``ALBasisMode``; the task records ``"auto"`` when
        ``autoKernel`` chose the widths).
    """
    if not (config.scaleByFwhm and reference_fwhm and science_fwhm):
        return list(config.alardSigGauss), int(config.kernelSize), "config"
    f2s = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    s_ref, s_sci = reference_fwhm * f2s, science_fwhm * f2s
    deconv = s_sci > s_ref
    min_sig = config.alardMinSigDeconv if deconv else config.alardMinSig
    s_k = math.sqrt(abs(s_ref ** 2 - s_sci ** 2))
    beta = config.alardGaussBeta
    sig0 = max(min_sig, s_k / beta)
    try:
        sigmas = [sig0 * beta ** i for i in range(config.alardNGauss)]
        size = int(config.kernelSizeFwhmScaling * sigmas[-1])
    except OverflowError:
        raise InvalidConfigError(
            f"alardGaussBeta ({beta:g}) to the power alardNGauss - 1 ({config.alardNGauss - 1}) overflows the basis "
            "widths: use a ratio between successive widths of about 2 (LSST's default)") from None
    size += 1 - size % 2
    # (kernelSizeMin and kernelSizeMax are odd: the clamped size stays odd)
    size = min(max(size, config.kernelSizeMin), config.kernelSizeMax)
    return sigmas, size, "fwhm"


def makeKernelBasisList(config, referenceFwhmPix=None, scienceFwhmPix=None, metadata=None) -> KernelBasis:
    """The basis the config asks for (``config`` is a kernel sub-config: AL or DF).

    Parameters
    ----------
    config : PsfMatchConfigAL or PsfMatchConfigDF
    referenceFwhmPix, scienceFwhmPix : float, optional
        FWHMs used by the AL ``scaleByFwhm`` path.
    metadata : dict, optional
        Receives the basis description (``ALBasisNGauss``, ``ALBasisDegGauss``,
        ``ALBasisSigGauss``, ``ALKernelSize``, ``ALBasisMode`` for AL).
    """
    kind = config.kernelBasisSet
    if kind == "alard-lupton":
        sigmas, size, mode = alard_lupton_sigmas(config, referenceFwhmPix, scienceFwhmPix)
        basis = makeAlardLuptonBasisList(size // 2, config.alardNGauss, sigmas, config.alardDegGauss)
        basis.description["ALBasisMode"] = mode
    elif kind == "delta-function":
        basis = makeDeltaFunctionBasisList(config.kernelSize)
    else:
        raise InvalidConfigError(f"kernelBasisSet must be 'alard-lupton' or 'delta-function'; got {kind!r}")
    if metadata is not None:
        metadata.update(basis.description)
    return basis
