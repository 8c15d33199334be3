"""Applying a spatially varying kernel to a masked image, exactly and fast.

Image
    ``out(x) = sum_u K_x(u) I(x - u)`` with the kernel's exact spatial
    variation (no interpolation grid).  The kernel refactors as
    ``K_x = sum_j f_j(x) R_j``
    (:meth:`~psfmatch.kernel.LinearCombinationKernel.term_images`), one image
    per spatial term, so ``out = sum_j f_j (I (*) R_j)`` whatever the number of
    basis kernels.  The spatial terms are first re-expressed as products of
    Chebyshev polynomials over the *image's* box, ``f = T_p(x') T_q(y')``
    with ``x', y'`` in [-1, 1] (an exact change of basis of the same total
    degree, done in float64): every weight is then bounded by 1, which keeps
    single-precision arithmetic accurate even for the ``polynomial`` spatial
    model whose raw terms grow like ``x^p``.

Variance
    ``sum_u K_x(u)^2 V(x - u)``, *exactly*: ``K_x^2 = sum_{j,k} f_j f_k R_j R_k``
    and products of Chebyshev polynomials reduce,
    ``T_a T_c = (T_{a+c} + T_{|a-c|}) / 2``, so the squared kernel is again a
    sum of images times Chebyshev products, of twice the order (15 images for
    order 2).  No approximation is made: the only errors are floating-point
    rounding.

Mask
    Every output pixel ORs the bits of the input pixels under the kernel's
    footprint.  A masked pixel keeps its value in the convolution (as in LSST),
    so the bits of the planes that mark values that may be wrong (BAD, SAT, CR,
    EDGE, SUSPECT, any plane not in ``footprint_planes``) spread over every
    non-zero kernel pixel, as in LSST: no output pixel without the bit
    receives anything from such a pixel (with a 1e-3 footprint a masked hot
    pixel of 1e6 on a sky of 100 +- 2 biased pixels beyond it by up to 130
    sigma, unflagged).  The planes that mark values meant to be used
    (:data:`FOOTPRINT_MASK_PLANES`: DETECTED, DETECTED_NEGATIVE, INTRP) spread
    over the kernel pixels with ``|K| >= threshold * max|K|`` anywhere in the
    field (:func:`mask_footprint`, ``maskDilationThreshold``; 0 selects every
    non-zero pixel).  The dilation (:func:`dilate_mask`) is
    exact binary morphology, bit plane by bit plane, with no per-pixel loop:
    sparse planes scatter the footprint from their few set pixels; dense ones
    are packed 64 pixels to a machine word and dilated by the footprint's
    rectangles (:func:`footprint_rectangles`) with shifted ORs, ``O(log k)``
    passes per rectangle, inside boxes around the clusters of set pixels.

Border and missing data
    The outer ``kernelSize // 2`` pixels, and every output pixel whose full
    kernel support covers a non-finite image or variance pixel or a NO_DATA
    pixel, get image NaN, variance +inf and the NO_DATA bit (the border's mask
    is NO_DATA only, as afw's ``doCopyEdge=False``).  Nothing is filled
    silently.  Missing input pixels are replaced by 0 before the transforms, so
    they cannot leak into the pixels that are kept.

Outliers
    A transform's rounding error is a fraction (about 1e-7 in single
    precision, 1e-16 in double) of the largest value of its tile, and it
    reaches every pixel of the tile.  A pixel far brighter than the plane's
    noise (a BAD pixel holding a fill value of 1e10, a variance of 1e30 for an
    unusable pixel) would bury every pixel of its tile under that error: image
    values off by many sigma, negative variances.  A pixel whose magnitude
    times the transform's precision exceeds :data:`OUTLIER_NOISE_FRACTION`
    of the image's typical noise (the median standard deviation), or
    :data:`OUTLIER_VARIANCE_FRACTION` of the median variance for the
    variance plane (:func:`_outlier_limit`), is therefore taken out of the
    tile (at most :data:`MAX_OUTLIERS_PER_TILE` per tile, the largest) and
    its contribution, which only reaches the pixels within
    ``kernelSize // 2``, is added exactly in float64
    (:func:`_outlier_contributions`); realistic data (in float32, stars below
    about 1e5 sigma) has none.  A value so large that a transform of its tile could
    not hold it times the kernel is refused
    (:class:`~psfmatch.errors.InvalidInputError`; flag it NO_DATA).  The
    variance, a sum of non-negative terms, is clamped at 0: rounding made
    values of about ``-1e-7`` times the tile's largest variance where the
    variance is about 0.

How it is fast
    The output is cut into tiles of nearly equal size whose FFT side is at
    most ``tile`` (overlap-save: each tile reads ``kernelSize // 2`` extra
    pixels on each side), processed a few tiles at a time, so memory is
    bounded by the output planes plus one batch of tiles per thread, for any
    exposure size.  Per tile and plane there is one
    forward real 2-d transform; then for each spatial term ``(p, q)`` the
    product with the term's spectrum is transformed back along ``y`` only
    (complex, half spectrum), weighted by ``T_q(y')`` row by row (a weight
    that depends on ``y`` only commutes with the transform along ``x``) and
    summed into one array per ``p``; only those ``order + 1`` arrays are
    transformed back along ``x`` and weighted by ``T_p(x')``.  For order 2 the
    image costs 6 column and 3 row inverse passes (instead of 6 full inverse
    transforms), the variance 15 and 5.  Transforms are done in the input's
    precision (float32 images use complex64 transforms, whose rounding error
    is about 1e-7 of the plane's maximum; float64 images use complex128), with
    :mod:`scipy.fft`; batches of tiles are spread over ``workers`` threads of
    psfmatch's shared pool (numpy and pocketfft release the GIL), and the scan
    for missing pixels, the variance's term spectra and the mask's dilation
    run on the same threads beside them.
"""

from __future__ import annotations

import functools
import logging
import warnings
from concurrent import futures

import numpy as np
from numpy.polynomial import chebyshev as npcheb
from scipy import fft as sfft

from .errors import InvalidInputError, KernelQualityWarning, MemoryLimitError, PsfMatchWarning
from .geom import Box2D
from .image import DEFAULT_MASK_PLANES, MaskedImage, plane_names
from .parallel import available_cores, shared_pool
from .progress import progress_bar
from .kernel.kernel import LinearCombinationKernel
from .kernel.spatial import SpatialFunction

__all__ = ["convolve_masked_image", "mask_footprint", "estimate_memory", "footprint_rectangles",
           "dilate_mask", "spatial_term_images", "direct_convolve", "default_workers"]

log = logging.getLogger(__name__)

#: Terms whose image's L1 norm is below this fraction of the largest term's are dropped.
#: With Chebyshev weights bounded by 1, the neglected part of any output pixel is at most
#: this fraction of ``max|I| * sum|R|``: far below the float32 rounding of the transforms.
TERM_DROP_TOLERANCE = 1e-13

#: Upper bound on the number of pixels (``ntiles * Ly * Lx``) transformed in one batch: one tile of the
#: default size.  A tile's spectra and work arrays then stay in a core's cache; batches of several
#: large tiles (``1 << 20`` pixels) were 5-20% slower on one thread and 20-30% slower with two
#: processes running at once (measured at 2048 and 4096 px, ``benchmarks/README.md``).
_BATCH_PIXELS = 1 << 18

#: A pixel whose transform rounding error (its magnitude times the transform's precision) would exceed this
#: fraction of the image's typical noise (the median standard deviation) is convolved exactly instead (see the
#: module docstring, "Outliers").
OUTLIER_NOISE_FRACTION = 1e-2

#: Likewise for the variance plane, as a fraction of the median variance (the variance's relative error is
#: bounded by 1e-3, SPEC section 6).
OUTLIER_VARIANCE_FRACTION = 1e-3

#: At most this many outliers per tile are convolved exactly (the largest); the others stay in the transform.
MAX_OUTLIERS_PER_TILE = 256

#: Largest number of pixels sampled (a regular grid) to find a plane's typical noise.
_NOISE_SAMPLE = 1 << 16


def default_workers() -> int:
    """Threads used when ``workers`` is None: ``psfmatch.parallel.available_cores``."""
    return available_cores()


# ---------------------------------------------------------------------------
# the kernel as term images times Chebyshev products over the image's box


def _terms(order):
    return [(n - q, q) for n in range(order + 1) for q in range(n + 1)]


def _chebyshev(coords, lo, hi, order, dtype=np.float64):
    """``T_r(t)`` for ``r = 0..order`` with ``t = (c - (lo + hi)/2) 2 / (hi - lo)``: shape (order + 1, n)."""
    t = (np.asarray(coords, dtype=np.float64) - 0.5 * (lo + hi)) * 2.0 / (hi - lo)
    out = np.empty((order + 1, t.size))
    out[0] = 1.0
    if order >= 1:
        out[1] = t
    for p in range(2, order + 1):
        out[p] = 2.0 * t * out[p - 1] - out[p - 2]
    return out.astype(dtype, copy=False)


def _axis_change(sf: SpatialFunction, axis, lo, hi):
    """``A`` with ``X_p(c) = sum_r A[p, r] T_r(t(c))`` over ``[lo, hi]``, ``t = (c - mid) / half``.

    Exact algebra, row by row: ``c = mid + half t`` is substituted into ``X_p``
    (``c^p`` for raw-pixel monomials; ``T_p(s(c))`` for Chebyshev terms over the
    kernel's own box, ``s`` affine, so ``T_p`` of an affine function of ``t``),
    and the polynomial in ``t`` is re-expanded on ``T_r``.  Each entry has its
    own relative precision: a raw monomial far from the origin (``x0 = 1e5``,
    ``c^4 ~ 1e20``) keeps its small terms, which a threshold over the whole
    matrix would drop.  Chebyshev terms over the image's own box give the
    identity.
    """
    n = sf.order + 1
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    if sf.kind == "polynomial":
        alpha, beta = mid, half  # X_p = (alpha + beta t)^p
    else:
        b = sf.bbox
        slo, shi = (b.minX, b.maxX) if axis == 0 else (b.minY, b.maxY)
        alpha, beta = (mid - 0.5 * (slo + shi)) / (0.5 * (shi - slo)), half / (0.5 * (shi - slo))
        if alpha == 0.0 and beta == 1.0:
            return np.eye(n)
    # P[p, r]: coefficient of t^r in X_p, by the recurrence of the powers or of the Chebyshev polynomials
    P = np.zeros((n, n))
    P[0, 0] = 1.0
    for p in range(1, n):
        step = alpha * P[p - 1]
        step[1:] += beta * P[p - 1, :-1]
        P[p] = step if sf.kind == "polynomial" or p == 1 else 2.0 * step - P[p - 2]
    return P @ _power_to_chebyshev(n)


@functools.lru_cache(maxsize=None)
def _power_to_chebyshev(n) -> np.ndarray:
    """``M`` with ``t^r = sum_q M[r, q] T_q(t)`` for ``r, q < n`` (dyadic rationals: exact in float64)."""
    M = np.zeros((n, n))
    for r in range(n):
        c = npcheb.poly2cheb(np.eye(n)[r])
        M[r, :len(c)] = c
    return M


def spatial_term_images(kernel: LinearCombinationKernel, bbox):
    """The kernel as ``sum_{(p, q)} T_p(x') T_q(y') R_pq`` over ``bbox``, and its square likewise.

    Parameters
    ----------
    kernel : LinearCombinationKernel
    bbox : Box2I
        The image's box; ``x'``, ``y'`` run over [-1, 1] on its pixel edges.

    Returns
    -------
    order : int
        Spatial order of the image terms (0 for a spatially invariant kernel).
    img_terms : list of ((p, q), ndarray (k, k))
        Non-negligible term images of the kernel (float64).
    var_terms : list of ((p, q), ndarray (k, k))
        Term images of the squared kernel, over Chebyshev products of order ``2 * order``.

    Raises
    ------
    InvalidInputError
        If the term images or those of the square overflow float64 (an absurd ``kernelSum``).

    Notes
    -----
    The change from the kernel's own spatial basis (Chebyshev over the kernel's
    box, or monomials in parent pixels) to Chebyshev polynomials over the image
    is exact: ``X_p`` is a polynomial of degree ``p``, so it is a combination of
    ``T_0..T_p`` and the set of terms (total degree <= order) is preserved.
    Terms whose image's L1 norm is below ``TERM_DROP_TOLERANCE`` of the
    largest are dropped (for a chebyshev1 kernel fitted on the same box the
    change of basis is the identity and nothing but exact zeros is dropped).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by _check_range
        return _term_images(kernel, bbox)


def _plane_names(footprint_planes) -> tuple:
    """``footprint_planes`` as a tuple of names (None: :data:`FOOTPRINT_MASK_PLANES`; a string is one name)."""
    if footprint_planes is None:
        return FOOTPRINT_MASK_PLANES
    return plane_names(footprint_planes, "footprint_planes (as maskDilationPlanes)", "['DETECTED', 'INTRP']")


def _kernel_sum_error(message) -> InvalidInputError:
    """An InvalidInputError whose remedy is another ``kernelSum`` (``error.kernel_sum_remedy`` is True): a caller
    that set the kernelSum itself (``run(..., zeroPoint=)``) adds where it came from."""
    error = InvalidInputError(message)
    error.kernel_sum_remedy = True
    return error


def _check_range(terms, kernel):
    """Raise InvalidInputError unless the term images (the kernel's or its square's) and their sums are finite."""
    if not np.isfinite(np.abs(terms).sum()):  # inf or NaN anywhere, or sums beyond float64
        raise _kernel_sum_error(
            f"the kernel's images (kernelSum = {kernel.kernel_sum:g} included) or their squares (for the variance "
            "plane) overflow float64; use a smaller kernelSum")


def _check_type_range(img_terms, var_terms, rdtype, kernel):
    """Raise InvalidInputError when the kernel's (or, for the variance, its square's) transforms overflow ``rdtype``.

    A term's transform is bounded by the sum of its image's magnitudes; beyond
    the type's largest value the transforms hold inf, whatever the pixels.
    """
    top = float(np.finfo(rdtype).max)
    for name, terms in (("image", img_terms), ("variance", var_terms)):
        size = max(float(np.abs(t).sum()) for _, t in terms)
        if size > top:
            what = "kernel" if name == "image" else "squared kernel"
            wider = "give the exposure float64 planes or " if rdtype == np.float32 else ""
            raise _kernel_sum_error(
                f"the {what} (kernelSum = {kernel.kernel_sum:g} included), with a sum of magnitudes up to "
                f"{size:.3g}, exceeds what {np.dtype(rdtype).name} transforms of the {name} plane can hold "
                f"({top:.3g}); {wider}use a smaller kernelSum")


def _term_images(kernel, bbox):
    R = kernel.term_images()  # (ns, k, k), includes kernelSum
    sf = kernel.spatial_function
    k = R.shape[-1]
    if sf is None or not kernel.isSpatiallyVarying():
        R0 = R[0]
        sq = R0 * R0
        _check_range(sq, kernel)
        return 0, [((0, 0), R0)], [((0, 0), sq)]
    order = sf.order
    box = Box2D(bbox)
    Ax = _axis_change(sf, 0, box.getMinX(), box.getMaxX())
    Ay = _axis_change(sf, 1, box.getMinY(), box.getMaxY())
    terms = _terms(order)
    index = {t: i for i, t in enumerate(terms)}
    Rn = np.zeros((len(terms), k, k))
    for j, (p, q) in enumerate(sf.terms):
        for r in range(p + 1):
            for s in range(q + 1):
                c = Ax[p, r] * Ay[q, s]
                if c != 0.0:
                    Rn[index[(r, s)]] += c * R[j]
    _check_range(Rn, kernel)
    norms = np.abs(Rn).sum(axis=(1, 2))
    keep = norms > TERM_DROP_TOLERANCE * norms.max()
    cheb = SpatialFunction("chebyshev1", order, box)
    P = cheb.product_tensor()  # (ns, ns, ns2)
    sq_terms = cheb.squared().terms
    kept = np.flatnonzero(keep)
    W = np.einsum("jkg,jab,kab->gab", P[np.ix_(kept, kept)], Rn[kept], Rn[kept])
    _check_range(W, kernel)
    wn = np.abs(W).sum(axis=(1, 2))
    wkeep = wn > TERM_DROP_TOLERANCE * wn.max()
    img_terms = [(terms[j], Rn[j]) for j in kept]
    var_terms = [(sq_terms[g], W[g]) for g in np.flatnonzero(wkeep)]
    eff = max(p + q for (p, q), _ in img_terms)
    return eff, img_terms, var_terms


# ---------------------------------------------------------------------------
# mask footprint and dilation


def mask_footprint(kernel: LinearCombinationKernel, threshold: float, bbox=None, n_grid=None) -> np.ndarray:
    """Boolean ``k x k`` footprint: pixels where ``max_x |K_x| >= threshold * max_{x,u} |K_x(u)|``.

    The maximum over the field is taken on an ``n_grid x n_grid`` grid of
    positions over ``bbox`` (the kernel's box by default), corners included;
    by default ``n_grid = max(5, 4 o + 1)`` for a spatial model of order ``o``
    (a 5 x 5 grid missed pixels just above the threshold between its points
    at order 2).  ``threshold = 0`` selects every pixel that is non-zero
    somewhere.

    Raises
    ------
    InvalidInputError
        If ``threshold`` is not a number in [0, 1].
    """
    return _footprint_at(_kernel_peaks(kernel, bbox, n_grid), _mask_threshold(threshold))


def _mask_threshold(threshold) -> float:
    """``threshold`` as a float in [0, 1], else InvalidInputError."""
    t = float(threshold) if isinstance(threshold, (int, float, np.integer, np.floating)) else float("nan")
    if not (0.0 <= t <= 1.0) or isinstance(threshold, bool):
        raise InvalidInputError(f"mask threshold must be a number in [0, 1] (a fraction of the kernel's peak, as "
                                f"maskDilationThreshold); got {threshold!r}")
    return t


def _kernel_peaks(kernel: LinearCombinationKernel, bbox=None, n_grid=None) -> np.ndarray:
    """``max_x |K_x(u)|`` for each kernel pixel ``u``: the ``k x k`` array :func:`mask_footprint` thresholds.

    The maximum over the field is taken as described there (an ``n_grid x n_grid`` grid over ``bbox``).
    """
    if n_grid is None:
        n_grid = max(5, 4 * int(getattr(kernel.spatial_function, "order", 0) or 0) + 1)
    box = bbox if bbox is not None else kernel.bbox
    if box is None or not kernel.isSpatiallyVarying():
        return np.abs(kernel.computeImage((0.0, 0.0) if box is None else box.getCenter()))
    xs = np.linspace(box.getMinX(), box.getMaxX(), n_grid)
    ys = np.linspace(box.getMinY(), box.getMaxY(), n_grid)
    gx, gy = np.meshgrid(xs, ys)
    return np.abs(kernel.computeImages(gx.ravel(), gy.ravel())).max(axis=0)


def _footprint_at(amax, threshold):
    """The footprint of the kernel peaks ``amax`` (:func:`_kernel_peaks`) at ``threshold`` (checked by the caller)."""
    top = amax.max()
    if top == 0:
        fp = np.zeros_like(amax, dtype=bool)
        fp[amax.shape[0] // 2, amax.shape[1] // 2] = True
        return fp
    if threshold <= 0:
        return amax > 0
    return amax >= threshold * top


def footprint_rectangles(footprint) -> list:
    """Split a boolean footprint into rectangles whose union is exactly the footprint.

    Each run of set pixels in a row is extended up and down over the rows that
    contain the whole run; duplicates are removed.  A convex footprint of
    side ``k`` gives at most ``k // 2 + 1`` rectangles.

    Returns
    -------
    list of (dy0, dy1, dx0, dx1)
        Inclusive offset ranges from the footprint's centre pixel.
    """
    fp = np.asarray(footprint, dtype=bool)
    kh, kw = fp.shape
    cy, cx = kh // 2, kw // 2
    rects = set()
    for a in range(kh):
        row = fp[a]
        if not row.any():
            continue
        edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1) - 1
        for c0, c1 in zip(starts, stops):
            a0 = a
            while a0 > 0 and fp[a0 - 1, c0:c1 + 1].all():
                a0 -= 1
            a1 = a
            while a1 < kh - 1 and fp[a1 + 1, c0:c1 + 1].all():
                a1 += 1
            rects.add((a0 - cy, a1 - cy, int(c0) - cx, int(c1) - cx))
    return sorted(rects)


# Binary morphology on bit-packed rows: 64 pixels per uint64 word, so a shift along x is two word
# shifts and an OR, and a run of ORs over a window of L pixels takes log2(L) doublings.

_U64 = np.dtype("<u8")

#: The fixed cost of dilating one box, in pixels of packed dilation (measured: ~0.4 ms a box, the
#: time of a 1024 x 1024 plane's whole dilation is ~3 ms).
_BOX_OVERHEAD_PIXELS = 1 << 17

#: A bit plane is dilated by scattering its footprint when that writes fewer than this fraction of
#: the image's pixels; otherwise by the packed morphology below.
_SPARSE_FRACTION = 0.05
#: Masks with more set pixels than this fraction are dilated plane by plane from booleans
#: (:func:`_dilate_dense_plane`): the index lists of the sparse path would cost more memory than
#: :func:`estimate_memory` allows.
_DENSE_FRACTION = 1.0 / 16
#: More set pixels than this in a plane give one bounding box instead of clusters (``_clusters``).
_CLUSTER_POINTS = 1 << 16
#: Output pixels per band of the mask's dilation and of its scans for set pixels (:func:`_or_dilated`,
#: :func:`_set_pixels`): their work arrays stay this small (a few MB) at any image size.
_BAND_PIXELS = 1 << 20
#: Pixels per int32 temporary of the bit tests inside a band (:func:`_bit_set`): 512 KiB, in the cache.
_CHUNK_PIXELS = 1 << 17


def _shift_x(a, s):
    """``out(x) = a(x - s)`` for bit-packed rows ``a`` (rows, words) of little-endian uint64; zero fill."""
    if s == 0:
        return a
    nw = a.shape[1]
    q, r = divmod(abs(s), 64)
    out = np.zeros_like(a)
    if q >= nw:
        return out
    if s > 0:
        if r == 0:
            out[:, q:] = a[:, :nw - q]
        else:
            out[:, q:] = a[:, :nw - q] << np.uint64(r)
            out[:, q + 1:] |= a[:, :nw - q - 1] >> np.uint64(64 - r)
    else:
        if r == 0:
            out[:, :nw - q] = a[:, q:]
        else:
            out[:, :nw - q] = a[:, q:] >> np.uint64(r)
            out[:, :nw - q - 1] |= a[:, q + 1:] << np.uint64(64 - r)
    return out


def _shift_y(a, s):
    """``out(y) = a(y - s)``, zero fill."""
    if s == 0:
        return a
    out = np.zeros_like(a)
    n = a.shape[0]
    if abs(s) < n:
        if s > 0:
            out[s:] = a[:n - s]
        else:
            out[:n + s] = a[-s:]
    return out


def _or_runs(a, lengths, shift):
    """``{L: OR_{t=0}^{L-1} shift(a, t)}`` for every ``L`` in ``lengths``, sharing the doublings."""
    pw = {1: a}
    width = 1
    top = max(lengths)
    while 2 * width <= top:
        pw[2 * width] = pw[width] | shift(pw[width], width)
        width *= 2
    out = {}
    for L in lengths:
        p = 1 << (int(L).bit_length() - 1)
        out[L] = pw[p] if p == L else pw[p] | shift(pw[p], L - p)
    return out


def _dilate_packed(a, rects):
    """``OR_{(dy, dx) in rects} a(y - dy, x - dx)`` on a padded bit-packed array."""
    xr = sorted({(dx0, dx1) for _, _, dx0, dx1 in rects})
    runs_x = _or_runs(a, {dx1 - dx0 + 1 for dx0, dx1 in xr}, _shift_x)
    hx = {(dx0, dx1): _shift_x(runs_x[dx1 - dx0 + 1], dx0) for dx0, dx1 in xr}
    out = None
    for (dx0, dx1), h in hx.items():
        ys = [(dy0, dy1) for dy0, dy1, ex0, ex1 in rects if (ex0, ex1) == (dx0, dx1)]
        runs_y = _or_runs(h, {dy1 - dy0 + 1 for dy0, dy1 in ys}, _shift_y)
        for dy0, dy1 in ys:
            v = _shift_y(runs_y[dy1 - dy0 + 1], dy0)
            out = v if out is None else out | v
    return out


def _dilate_bool(b, rects, keep=None):
    """``out(y, x) = OR_{(dy, dx) in rects} b(y - dy, x - dx)`` for a boolean array (zero outside).

    The plane is packed 64 pixels to a word, padded by the largest offset,
    dilated rectangle by rectangle (nested rectangles share their work) and unpacked.
    ``keep = (r0, r1)``: only rows ``r0:r1`` of the result are unpacked and returned.
    """
    b = np.asarray(b)
    H, W = b.shape
    r0, r1 = (0, H) if keep is None else keep
    if not rects:
        return np.zeros((r1 - r0, W), dtype=bool)
    m = max(abs(v) for r in rects for v in r)
    wpad = 64 * (-(-m // 64))  # whole words on each side
    nbits = W + 2 * wpad
    nbits += (-nbits) % 64
    padded = np.zeros((H + 2 * m, nbits // 8), dtype=np.uint8)
    padded[m:m + H, wpad // 8:wpad // 8 + (W + 7) // 8] = np.packbits(b, axis=1, bitorder="little")
    res = _dilate_packed(padded.view(_U64), rects)
    bits = np.unpackbits(res.view(np.uint8)[m + r0:m + r1], axis=1, count=wpad + W, bitorder="little")
    return bits[:, wpad:].view(bool)


def dilate_mask(mask, footprint, exclude=0, out=None) -> np.ndarray:
    """``out(x) |= OR_{u in footprint} mask(x - u)``, bit by bit, for an integer bit array.

    Parameters
    ----------
    mask : ndarray of int32
    footprint : ndarray of bool, odd shape
        Its centre pixel is the offset ``u = 0``.
    exclude : int
        Bits that are not propagated.
    out : ndarray of int32, optional
        Where to OR the result (a new zero array by default).

    Notes
    -----
    Exact binary morphology, one bit plane at a time, without per-pixel loops.
    A plane with few set pixels (cosmic rays, saturated cores) scatters the
    footprint's offsets from each of them.  Otherwise its set pixels are grouped
    into boxes (``_clusters``: a bad column and a distant cosmic ray do not
    make one image-sized box); in each box the footprint is split into
    rectangles (:func:`footprint_rectangles`), the plane is packed 64 pixels to
    a machine word and each rectangle is a run of ORs along ``x`` (word shifts)
    and along ``y`` (row shifts) computed by doubling: ``O(log k)`` passes over
    one bit per pixel.
    """
    return _dilate_mask(mask, footprint, exclude, out)


def _dilate_mask(mask, footprint, exclude=0, out=None, wide=None, wide_bits=0):
    """:func:`dilate_mask`, the bits of ``wide_bits`` by the footprint ``wide`` instead (one pass over the mask)."""
    mask = np.asarray(mask)
    if out is None:
        out = np.zeros(mask.shape, dtype=np.int32)
    allbits = (int(np.bitwise_or.reduce(mask, axis=None)) if mask.size else 0) & 0xFFFFFFFF
    present = allbits & ~int(exclude) & 0xFFFFFFFF
    if present == 0:
        return out

    def prepared(fp):  # (rectangles, offsets, margin) of a footprint
        fp = np.asarray(fp, dtype=bool)
        rects = footprint_rectangles(fp)
        return rects, np.argwhere(fp) - np.array(fp.shape) // 2, max((abs(v) for r in rects for v in r), default=0)

    narrow = prepared(footprint)
    broad = narrow if wide is None else prepared(wide)

    def shape_of(bitno):
        return broad if (wide_bits >> bitno) & 1 else narrow

    H, W = mask.shape
    flat = np.ascontiguousarray(mask, dtype=np.int32).ravel()
    if np.count_nonzero(flat) > _DENSE_FRACTION * H * W:
        # many set pixels: index lists would cost 8 to 16 bytes each; work on each plane's pixels as booleans
        for bitno in range(32):
            rects, offsets, margin = shape_of(bitno)
            if (present >> bitno) & 1 and rects:
                _dilate_dense_plane(mask, _bits(1 << bitno), rects, offsets, margin, out)
        return out
    # the set pixels of all the planes at once (one pass), then each plane's among them
    nz = _set_pixels(flat.reshape(H, W), present if allbits != present else None)
    nz_vals = flat[nz]
    for bitno in range(32):
        rects, offsets, margin = shape_of(bitno)
        if not (present >> bitno) & 1 or not rects:
            continue
        value = _bits(1 << bitno)
        idx = nz[(nz_vals & value) != 0]
        if idx.size * len(offsets) <= _SPARSE_FRACTION * H * W:
            _scatter(idx, offsets, value, out)
            continue
        _or_dilated(flat.reshape(H, W), _cluster_boxes(idx, (H, W), margin), rects, value, out, idx)
    return out


#: Mask planes whose pixels hold values meant to be used (sources, interpolated estimates): by default
#: (``ModelPsfMatchConfig.maskDilationPlanes``) only their bits spread by the ``maskDilationThreshold`` footprint.
#: Every other plane marks values that may be wrong (BAD, SAT, CR, EDGE, SUSPECT...), whose bits spread over every
#: non-zero kernel pixel, so that no pixel without the bit receives anything from them.
FOOTPRINT_MASK_PLANES = ("DETECTED", "DETECTED_NEGATIVE", "INTRP")


def _bits(value) -> np.int32:
    """``value`` (an unsigned 32-bit pattern) as the int32 of the mask's bit arithmetic."""
    return np.int32(np.uint32(value).view(np.int32))


def _bit_set(mask, value, out):
    """``out[...] = (mask & value) != 0`` for a 2-d int32 ``mask`` (``value`` None: any bit), through an int32
    temporary of at most :data:`_CHUNK_PIXELS` pixels (a whole band's would leave the cache)."""
    n, w = mask.shape
    if value is None:
        return np.not_equal(mask, 0, out=out)
    rows = max(1, _CHUNK_PIXELS // max(w, 1))
    tmp = np.empty((min(rows, n), w), dtype=np.int32)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        np.not_equal(np.bitwise_and(mask[r0:r1], value, out=tmp[:r1 - r0]), 0, out=out[r0:r1])
    return out


def _set_pixels(mask, bits=None):
    """Sorted flat indices of the pixels of the 2-d int32 ``mask`` with any of ``bits`` set (None: any bit).

    The mask is read a band of rows at a time into two small reused buffers: whole-plane temporaries
    (5 bytes a pixel) are fresh memory, which costs more to fault in than to compute on large images.
    """
    H, W = mask.shape
    rows = max(1, _BAND_PIXELS // max(W, 1))
    hit = np.empty((min(rows, H), W), dtype=bool)
    value = None if bits is None else _bits(bits)
    parts = []
    for r0 in range(0, H, rows):
        band = mask[r0:r0 + rows]
        n = band.shape[0]
        _bit_set(band, value, hit[:n])
        idx = np.flatnonzero(hit[:n])  # (nonzero of a boolean array is several times faster than of int32)
        if idx.size:
            parts.append(idx + r0 * W)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)


def _scatter(idx, offsets, value, out):
    """OR ``value`` into ``out`` at the footprint ``offsets`` around each flat index ``idx`` (few pixels)."""
    H, W = out.shape
    ys, xs = np.divmod(idx, W)
    yy = (ys[:, None] + offsets[None, :, 0]).ravel()
    xx = (xs[:, None] + offsets[None, :, 1]).ravel()
    keep = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    yy, xx = yy[keep], xx[keep]
    out[yy, xx] = out[yy, xx] | value  # duplicates write the same value


def _cluster_boxes(idx, shape, margin):
    """``_clusters`` of the set pixels ``idx``, or the whole plane when many small boxes would cost more."""
    H, W = shape
    boxes = _clusters(idx, W, H, margin)
    area = sum((bx[0].stop - bx[0].start) * (bx[1].stop - bx[1].start) for bx in boxes)
    if len(boxes) > 1 and len(boxes) * _BOX_OVERHEAD_PIXELS + area > H * W:
        # many small boxes (the footprints of scattered stars): one pass over the whole
        # plane costs less than their per-box overhead
        boxes = [(slice(0, H), slice(0, W))]
    return boxes


def _or_dilated(mask, boxes, rects, value, out, idx=None, plane=None):
    """OR ``value`` into ``out`` wherever bit ``value`` of ``mask``, dilated by ``rects``, is set in ``boxes``.

    Each box holds every set pixel of the plane it covers with its footprint, so
    the dilation inside it treats the outside as empty.  A box is dilated in bands
    of about :data:`_BAND_PIXELS` output pixels, each from its own rows plus the
    footprint's reach above and below (exact: no offset reaches further), so that
    the work arrays stay small and in the cache whatever the image's size.
    ``idx``: the plane's set pixels (sorted flat indices), when known: a band is
    then made from them instead of from a pass over the mask.  ``plane``: the
    plane as booleans, when a small image has it already.
    """
    m = max(abs(v) for r in rects for v in r)
    W = mask.shape[1]
    for ys, xs in boxes:
        y0, y1 = ys.start, ys.stop
        nx = xs.stop - xs.start
        rows = max(4 * m, 1, _BAND_PIXELS // max(1, nx))
        hit = np.empty((min(rows + 2 * m, y1 - y0), nx), dtype=bool) if plane is None else None
        for a in range(y0, y1, rows):
            e = min(y1, a + rows)
            lo, hi = max(y0, a - m), min(y1, e + m)
            if plane is not None:
                b = plane[lo:hi, xs]
            elif idx is None:
                b = _bit_set(mask[lo:hi, xs], value, hit[:hi - lo])
            else:
                b = hit[:hi - lo]
                b[...] = False
                i0, i1 = np.searchsorted(idx, (lo * W, hi * W))
                yy, xx = np.divmod(idx[i0:i1], W)
                inside = (xx >= xs.start) & (xx < xs.stop)
                b[yy[inside] - lo, xx[inside] - xs.start] = True
            d = _dilate_bool(b, rects, keep=(a - lo, e - lo))
            sub = out[a:e, xs]
            np.bitwise_or(sub, value, out=sub, where=d)


def _dilate_dense_plane(mask, value, rects, offsets, margin, out):
    """One bit plane of :func:`dilate_mask` for a mask with many set pixels, without index arrays.

    The plane is read a band of rows at a time (its set pixels counted, and their
    rows and columns noted); its set pixels are scattered (few of them), grouped
    into boxes (``_clusters``, up to its point limit) or bounded by one box.
    """
    H, W = mask.shape
    small = H * W <= _BAND_PIXELS  # the whole plane is one band: its booleans are kept for the dilation
    rows = H if small else max(1, _BAND_PIXELS // max(W, 1))
    hit = np.empty((min(rows, H), W), dtype=bool)
    row_any = np.zeros(H, dtype=bool)
    col_any = np.zeros(W, dtype=bool)
    count = 0
    for r0 in range(0, H, rows):
        band = mask[r0:r0 + rows]
        n = band.shape[0]
        b = _bit_set(band, value, hit[:n])
        count += int(np.count_nonzero(b))
        b.any(axis=1, out=row_any[r0:r0 + n])
        col_any |= b.any(axis=0)
    if count == 0:
        return
    few = count * len(offsets) <= _SPARSE_FRACTION * H * W
    if few or count <= _CLUSTER_POINTS:
        idx = np.flatnonzero(hit) if small else _set_pixels(mask, value)
        if few:
            _scatter(idx, offsets, value, out)
            return
        _or_dilated(mask, _cluster_boxes(idx, (H, W), margin), rects, value, out, idx)
        return
    # the bounding box of the set pixels, grown by the margin
    r, c = np.flatnonzero(row_any), np.flatnonzero(col_any)
    boxes = [(slice(max(0, r[0] - margin), min(H, r[-1] + margin + 1)),
              slice(max(0, c[0] - margin), min(W, c[-1] + margin + 1)))]
    _or_dilated(mask, boxes, rects, value, out, plane=hit if small else None)


def _groups(idx, gap):
    """Split sorted indices into runs whose consecutive members are at most ``gap`` apart."""
    if idx.size == 0:
        return []
    cut = np.flatnonzero(np.diff(idx) > gap)
    starts = np.concatenate([[idx[0]], idx[cut + 1]])
    stops = np.concatenate([idx[cut], [idx[-1]]])
    return list(zip(starts.tolist(), stops.tolist()))


def _clusters(idx, W, H, margin, max_points=None):
    """Boxes, grown by ``margin``, around the clusters of the set pixels at flat indices ``idx``.

    Columns holding set pixels are grouped where they are at most ``2 margin + 1``
    apart, then the rows within each column group likewise, so that isolated
    defects get their own small boxes.  Every set pixel lies in exactly one box
    with its whole footprint.  Very many points give one bounding box.
    """
    max_points = _CLUSTER_POINTS if max_points is None else max_points
    ys, xs = np.divmod(idx, W)
    if idx.size > max_points:
        return [(slice(max(0, int(ys.min()) - margin), min(H, int(ys.max()) + margin + 1)),
                 slice(max(0, int(xs.min()) - margin), min(W, int(xs.max()) + margin + 1)))]
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    boxes = []
    for c0, c1 in _groups(np.unique(xs), 2 * margin + 1):
        lo, hi = np.searchsorted(xs, [c0, c1 + 1])
        for r0, r1 in _groups(np.unique(ys[lo:hi]), 2 * margin + 1):
            boxes.append((slice(max(0, r0 - margin), min(H, r1 + margin + 1)),
                          slice(max(0, c0 - margin), min(W, c1 + margin + 1))))
    return boxes


def _support_box(b, margin):
    """Slices of the bounding box of the non-zero pixels of ``b`` grown by ``margin`` (None if empty)."""
    rows = np.flatnonzero(b.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(b[rows[0]:rows[-1] + 1].any(axis=0))
    H, W = b.shape
    return (slice(max(0, rows[0] - margin), min(H, rows[-1] + margin + 1)),
            slice(max(0, cols[0] - margin), min(W, cols[-1] + margin + 1)))


class _MissingScan:
    """The input pixels that must not be used: non-finite image or variance, or NO_DATA.

    :meth:`result` returns ``(bad, bad_rows, any_bad)``: the pixels, the rows
    holding any, and whether there are any.  The rows are scanned in blocks of
    :data:`_SCAN_ROWS` (the work arrays stay in the cache: 2.4 times faster than
    whole-plane operations at 4096 x 4096 px) and, with a pool, in up to
    ``2 * nworkers`` jobs of contiguous blocks that its threads share (the
    tiles, which wait for the whole scan, then start after about
    ``1 / nworkers`` of it).  Without a pool the scan is done at once.
    """

    def __init__(self, img, var, mask, no_data_bit, pool, nworkers):
        H = img.shape[0]
        self.bad = np.empty(img.shape, dtype=bool)
        self.rows = np.empty(H, dtype=bool)
        self._args = img, var, mask, no_data_bit
        njobs = 1 if pool is None else max(1, min(2 * nworkers, H // (4 * _SCAN_ROWS)))
        edges = np.linspace(0, H, njobs + 1).round().astype(int)
        spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        if pool is None:
            for span in spans:
                self._scan(*span)
            self._jobs = []
        else:
            self._jobs = [pool.submit(self._scan, *span) for span in spans]

    def _scan(self, y0, y1):
        img, var, mask, bit = self._args
        tmp = np.empty((min(_SCAN_ROWS, y1 - y0), img.shape[1]), dtype=bool)
        for a in range(y0, y1, _SCAN_ROWS):
            sl = slice(a, min(y1, a + _SCAN_ROWS))
            b, t = self.bad[sl], tmp[:sl.stop - a]
            np.isfinite(img[sl], out=b)
            np.isfinite(var[sl], out=t)
            b &= t
            np.invert(b, out=b)
            if bit:
                b |= (mask[sl] & bit) != 0
            b.any(axis=1, out=self.rows[sl])

    def wait(self):
        futures.wait(self._jobs)

    def result(self):
        for job in self._jobs:
            job.result()
        any_bad = bool(self.rows.any())
        return self.bad, (self.rows if any_bad else None), any_bad


#: Rows per block of the scan for missing pixels (:class:`_MissingScan`).
_SCAN_ROWS = 128


def _dilate_square(bad, h):
    """Pixels whose ``(2h+1)^2`` neighbourhood holds a set pixel of ``bad``, as ``(box, pixels in box)``.

    Only the bounding box of the set pixels, grown by ``h``, is returned (None
    when nothing is set): an image-sized result would be mostly zeros, and at
    8192 x 8192 px the first writes to its fresh pages cost about 0.14 s.
    """
    box = _support_box(bad, h)
    if box is None:
        return None
    return box, _dilate_bool(bad[box], [(-h, h, -h, h)])


# ---------------------------------------------------------------------------
# memory


def _geometry(H, W, k, tile):
    """FFT sizes ``(Ly, Lx)`` and cores ``(Cy, Cx)`` of the tiles for an ``H x W`` image.

    Along each axis the ``n - 2h`` output pixels are split into the fewest tiles
    whose FFT side stays within ``tile``, of nearly equal cores, and each FFT side
    is the next fast length (no nearly empty last tile).
    """
    h = k // 2
    tile = max(int(tile), 2 * h + 16)
    sizes = []
    for n in (H, W):
        inner = max(1, n - 2 * h)
        cmax = tile - 2 * h
        while cmax > 8 and sfft.next_fast_len(cmax + 2 * h, real=True) > tile:
            cmax -= 1
        ntiles = -(-inner // cmax)
        core = -(-inner // ntiles)
        L = sfft.next_fast_len(core + 2 * h, real=True)
        sizes.append((L, L - 2 * h))
    (Ly, Cy), (Lx, Cx) = sizes
    return Ly, Lx, Cy, Cx


def plane_memory(shape, itemsize=4) -> int:
    """Bytes of the full-size arrays of a convolution of an image of ``shape``, whatever the kernel and tiles.

    The output image and variance (``itemsize`` each), the output mask (4), the
    missing-data flags and their dilation (2), and the per-plane dilation work
    (at most 3 bytes a pixel): the part of :func:`estimate_memory` that neither
    the kernel nor ``tile`` changes.
    """
    h, w = shape
    return int(h) * int(w) * (2 * int(itemsize) + 4 + 2 + 3)


def estimate_memory(shape, kernel_size, n_terms, n_var_terms, tile, itemsize=4, workers=1) -> int:
    """Bytes needed to convolve an image of ``shape``: the full-size planes plus the tile batches in flight.

    Full-size: the output image and variance (``itemsize`` each), the output
    mask (4), the missing-data flags and their dilation (2), and the
    per-plane dilation work (at most 3 bytes a pixel).  Per thread: one batch
    of tiles with its spectra and the per-term work arrays; threads beyond the
    number of batches (a huge ``PSFMATCH_NUM_THREADS``) have none to hold.
    """
    h, w = shape
    full = plane_memory(shape, itemsize)
    Ly, Lx, Cy, Cx = _geometry(h, w, kernel_size, tile)
    ntx = max(1, -(-max(1, w - (kernel_size // 2) * 2) // Cx))
    nty = max(1, -(-max(1, h - (kernel_size // 2) * 2) // Cy))
    workers = min(max(1, int(workers)), 2 * ntx * nty)  # no more threads at work than batches of tiles (2 planes)
    per_batch_tiles = max(1, min(ntx, _BATCH_PIXELS // (Ly * Lx)))
    spec = per_batch_tiles * Ly * (Lx // 2 + 1) * 2 * itemsize
    order_img = max(0, int(round((np.sqrt(8 * max(1, n_terms) + 1) - 3) / 2)))
    n_groups = 2 * order_img + 1
    per_thread = per_batch_tiles * Ly * Lx * itemsize * 4 + spec * (3 + n_groups)
    kernels = (n_terms + n_var_terms) * Ly * (Lx // 2 + 1) * 2 * itemsize
    return int(full + kernels + workers * per_thread)


# ---------------------------------------------------------------------------
# the tiled transforms


class _PlaneTransform:
    """One plane's term spectra and the per-row-of-tiles convolution (see the module docstring)."""

    def __init__(self, terms, Ly, Lx, h, cdtype):
        k = terms[0][1].shape[-1]
        rdtype = np.float32 if cdtype == np.complex64 else np.float64
        # the k x k images, centred on index (0, 0) of the Ly x Lx tile: transform the k non-zero rows
        # along x, then the columns along y
        rows = np.zeros((len(terms), k, Lx), dtype=rdtype)
        rows[:, :, (np.arange(k) - h) % Lx] = np.array([img for _, img in terms])
        fx = sfft.rfft(rows, axis=2)
        full = np.zeros((len(terms), Ly, Lx // 2 + 1), dtype=cdtype)
        full[:, (np.arange(k) - h) % Ly, :] = fx
        self.spectra = sfft.fft(full, axis=1, overwrite_x=True)
        groups = {}
        for j, ((p, q), _) in enumerate(terms):
            groups.setdefault(p, []).append((j, q))
        self.groups = sorted(groups.items())
        self.Ly, self.Lx, self.h = Ly, Lx, h

    def apply(self, block, ny, Yw, Xw):
        """Convolve a batch of tiles ``block`` (n, Ly, Lx); return the ``ny`` valid rows (n, ny, Cx).

        ``Yw[q]`` (ny, 1) and ``Xw[p]`` (n, 1, Cx) are the Chebyshev weights of the valid pixels.
        """
        h, Lx = self.h, self.Lx
        Cx = Lx - 2 * h
        F = sfft.rfft2(block, axes=(1, 2))
        acc = None
        for p, lst in self.groups:
            Hp = None
            for j, q in lst:
                G = sfft.ifft(F * self.spectra[j], axis=1, overwrite_x=True)[:, h:h + ny]
                if q:  # a real weight per row: multiply the (re, im) pairs as reals
                    Gr = G.view(Yw.dtype)
                    np.multiply(Gr, Yw[q], out=Gr)
                if Hp is None:
                    Hp = G
                else:
                    Hp += G
            r = sfft.irfft(Hp, n=Lx, axis=2)[:, :, h:h + Cx]
            if p:
                r *= Xw[p]
            if acc is None:
                acc = r
            else:
                acc += r
        return acc


def _typical_level(plane):
    """The plane's typical magnitude: the median ``|value|`` of a regular grid of at most ``_NOISE_SAMPLE`` pixels.

    Non-finite pixels are left out.  Where zeros are the majority (a region without noise, a noiseless
    simulation's empty sky) the median of the non-zero magnitudes, if at least 1% of the sample (and 16 pixels)
    are non-zero; else 0 (a plane of zeros, or of zeros and a few fill values: none of them is typical).
    """
    H, W = plane.shape
    step = max(1, int(np.sqrt(H * W / _NOISE_SAMPLE)))
    sample = np.abs(plane[step // 2::step, step // 2::step], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    level = float(np.median(sample)) if sample.size else 0.0
    if level == 0.0:
        nonzero = sample[sample > 0]
        level = float(np.median(nonzero)) if nonzero.size >= max(16, sample.size // 100) else 0.0
    return level


def _plane_levels(img, var):
    """``(image level, variance level)`` (:func:`_typical_level`); the image's only where the variance's is 0
    (a plane without noise: the image's level then stands for the noise), else None."""
    v = _typical_level(var)
    return (_typical_level(img) if v == 0 else None), v


#: How far below the smallest normal number of the planes' type the matched planes' typical values may fall before
#: :func:`_check_underflow` refuses: 2**-10, where a float32 value keeps 14 of its 24 bits (it becomes 0 at 2**-23).
UNDERFLOW_BITS = 10
UNDERFLOW_MARGIN = 2.0 ** -UNDERFLOW_BITS


def _check_underflow(kernel, bbox, levels, rdtype):
    """Raise InvalidInputError when the kernel (its ``kernelSum``) takes a plane's typical values below ``rdtype``'s
    smallest normal number.

    The matched variance is ``sum K^2 V``, the image ``sum K I``: with a small ``kernelSum`` ``s`` (a
    conversion to physical units, 1e-30 erg/s/cm^2/Hz per count) they are about ``s^2 V`` and ``s I``.  Below
    the smallest normal number (1.2e-38 in float32) a value keeps fewer and fewer significant bits, and then
    becomes 0: a variance of 0 claims a perfect pixel, the highest weight in a coadd.  Refused more than
    :data:`UNDERFLOW_MARGIN` below it (1.1e-41 in float32: 14 bits left), so that data already near the limit
    (a variance of 1e-37 in erg/s/cm^2/A units) is matched with a kernelSum of 1.  ``levels`` are the
    planes' typical magnitudes (:func:`_plane_levels`); the kernel is taken at the box's centre.  A plane
    already below the smallest normal number (or without a typical level) is not the kernel's doing and is
    left alone, as is a kernel of zeros (its exact result is zeros).
    """
    tiny = float(np.finfo(rdtype).tiny)
    floor = tiny * UNDERFLOW_MARGIN
    img_level, var_level = levels
    K = np.asarray(kernel.computeImage(Box2D(bbox).getCenter()), dtype=np.float64)
    name, level, scale = (("variance", var_level, float((K * K).sum())) if var_level > 0
                          else ("image", img_level or 0.0, float(np.abs(K).sum())))
    if level >= tiny and 0.0 < scale and level * scale < floor:  # (a kernel of zeros gives exact zeros)
        what = "the squared kernel's sum" if name == "variance" else "the kernel's sum of magnitudes"
        unit = ("" if kernel.kernel_sum == 1.0 else
                ", or match with kernelSum = 1 and convert the units afterwards in float64")
        raise _kernel_sum_error(
            f"kernelSum = {kernel.kernel_sum:g} takes the matched {name} plane's typical values (about {level:.3g}, "
            f"times {what}, {scale:.3g}) to {level * scale:.3g}, more than {1 / UNDERFLOW_MARGIN:.0f} times below "
            f"the smallest normal {np.dtype(rdtype).name} ({tiny:.3g}): they would keep fewer than "
            f"{np.finfo(rdtype).nmant + 1 - UNDERFLOW_BITS} of their "
            f"{np.finfo(rdtype).nmant + 1} bits or become 0 (a variance of 0 claims a perfect pixel); give the "
            f"exposure float64 planes{unit}")


def _outlier_limit(levels, rdtype):
    """``(image limit, variance limit)``: magnitudes above which a pixel is convolved exactly.

    The transform's rounding error of a pixel of magnitude ``m`` is about ``eps m`` (``eps`` of ``rdtype``);
    it must stay below :data:`OUTLIER_NOISE_FRACTION` of the image's noise, the median standard deviation
    ``sqrt(median(V))`` (the median ``|I|`` for a plane without variance, as a noiseless simulation), and
    below :data:`OUTLIER_VARIANCE_FRACTION` of the median variance for the variance plane
    (:func:`_typical_level`; ``levels`` from :func:`_plane_levels`).  A level of 0 (a plane of zeros but for
    a few pixels) makes every non-zero pixel an outlier: the largest of each tile are convolved exactly.
    """
    eps = float(np.finfo(rdtype).eps)
    img_level, v = levels
    noise = np.sqrt(v) if v > 0 else img_level
    return tuple(frac * level / eps for frac, level in ((OUTLIER_NOISE_FRACTION, noise),
                                                        (OUTLIER_VARIANCE_FRACTION, v)))


def _outlier_contributions(values, a, b, images, pq, Ty, Tx, ys, xs, ny, nx, h):
    """The exact contributions of the pixels ``values`` at ``(a, b)`` of a tile's input view to its output core.

    The view starts at image pixel ``(ys - h, xs - h)``; the core is the ``ny x nx`` output pixels from
    ``(ys, xs)``.  Each pixel adds ``v K_x(x - p)`` to the output pixels ``x`` within ``h`` of it, with
    ``K_x = sum_j Tx[p_j](x) Ty[q_j](y) images[j]`` (the plane's term images; ``Ty``, ``Tx`` the float64
    Chebyshev weights over the image's rows and columns).  Returns a float64 ``(ny, nx)`` array.
    """
    k = 2 * h + 1
    H, W = Ty.shape[1], Tx.shape[1]
    # output rows ys - 2h .. ys + ny + 2h - 1 and the columns likewise: the core, and what pixels of the view
    # within h of its edge reach beyond it
    out = np.zeros((ny + 4 * h, nx + 4 * h))
    t = np.arange(k)
    # the output rows and columns each pixel reaches (clipped to the image: those outside the core are cut below)
    Y = np.clip(ys - 2 * h + a[:, None] + t, 0, H - 1)
    X = np.clip(xs - 2 * h + b[:, None] + t, 0, W - 1)
    Wy = Ty[pq[:, 1]][:, Y] * values[None, :, None]  # (terms, n, k), the value folded in
    Wx = Tx[pq[:, 0]][:, X]
    for j0 in range(0, len(values), 64):  # (n, k, k) work arrays of at most 64 pixels
        sl = slice(j0, j0 + 64)
        K = np.einsum("jny,jnx,jyx->nyx", Wy[:, sl], Wx[:, sl], images, optimize=True)
        for m, (ai, bi) in enumerate(zip(a[sl], b[sl])):
            out[ai:ai + k, bi:bi + k] += K[m]
    return out[2 * h:2 * h + ny, 2 * h:2 * h + nx]


def _convolve_tiles(masked_image, img_terms, var_terms, order, srcs, dsts, missing, k, tile, rdtype, cdtype, pool,
                    nworkers, levels, beside=None):
    """The image and variance planes, tile by tile (see the module docstring).

    ``missing()`` returns ``(bad, bad_rows, any_bad)``: the input pixels to
    replace by 0, the rows holding any, and whether there are any.
    ``levels`` are the planes' typical magnitudes (:func:`_plane_levels`).
    ``pool`` (None: this thread) runs the batches of tiles on ``nworkers`` threads:
    the image's as soon as its term spectra are ready, while a pool thread
    prepares the variance's.  With a pool, ``beside`` (the mask's dilation,
    which writes nothing the tiles touch) is submitted then, ahead of the
    variance's tiles (submitted earlier, its Python-heavy loops would slow the
    set-up through the GIL), and its future is returned; otherwise None.
    """
    H, W = srcs[0].shape
    h = k // 2
    bbox = masked_image.getBBox()
    Ly, Lx, Cy, Cx = _geometry(H, W, k, tile)
    x0, y0 = masked_image.getXY0()
    box = Box2D(bbox)
    order_v = max(p + q for (p, q), _ in var_terms)

    limits = _outlier_limit(levels, rdtype)

    def plane(terms, src, dst, o):
        with np.errstate(over="ignore", invalid="ignore"):  # a kernel beyond the type's range: see run()
            tr = _PlaneTransform(terms, Ly, Lx, h, cdtype)
        Ty64 = _chebyshev(y0 + np.arange(H), box.getMinY(), box.getMaxY(), o)
        Tx64 = _chebyshev(x0 + np.arange(W), box.getMinX(), box.getMaxX(), o)
        images = np.array([img for _, img in terms])
        is_var = src is srcs[1]
        exact = (is_var, limits[1] if is_var else limits[0], images, np.array([t for t, _ in terms]), Ty64, Tx64,
                 # the largest magnitude a tile's transform holds times the kernel's (bound on |K_x|: Chebyshev
                 # weights are at most 1)
                 float(np.finfo(rdtype).max) / (Ly * Lx) / max(float(np.abs(images).sum(axis=0).max()), 1e-300))
        return tr, src, dst, Ty64.astype(rdtype, copy=False), Tx64.astype(rdtype, copy=False), exact

    ny_out, nx_out = H - 2 * h, W - 2 * h
    ntx = -(-nx_out // Cx)
    nty = -(-ny_out // Cy)
    per_batch = max(1, min(ntx, _BATCH_PIXELS // (Ly * Lx)))
    if pool is not None:  # enough jobs to keep every thread busy to the end (a 3x3 grid is 9 jobs, not 3)
        per_batch = max(1, min(per_batch, (nty * ntx) // (4 * nworkers)))
    batches = [(ity, bx0, min(ntx, bx0 + per_batch)) for ity in range(nty) for bx0 in range(0, ntx, per_batch)]

    def run(pl, batch):
        tr, src, dst, Ty, Tx, (is_var, limit, images, pq, Ty64, Tx64, too_large) = pl
        ity, t0, t1 = batch
        ys = h + ity * Cy
        ny = min(Cy, H - h - ys)
        cols = [(h + t * Cx, min(Cx, W - h - (h + t * Cx))) for t in range(t0, t1)]  # (first x, width) of each tile
        rows_bad = any_bad and bool(bad_rows[ys - h:ys + ny + h].any())
        block = np.zeros((len(cols), Ly, Lx), dtype=rdtype)
        Xw = np.zeros((Tx.shape[0], len(cols), 1, Cx), dtype=rdtype)
        for i, (xs, nx) in enumerate(cols):
            view = block[i, :ny + 2 * h, :nx + 2 * h]
            view[...] = src[ys - h:ys + ny + h, xs - h:xs + nx + h]
            if rows_bad:
                view[bad[ys - h:ys + ny + h, xs - h:xs + nx + h]] = 0
            Xw[:, i, 0, :nx] = Tx[:, xs:xs + nx]
        outliers = []
        if max(block.max(), -block.min()) > limit:  # (one pass over the batch; rarely true)
            for i, (xs, nx) in enumerate(cols):
                view = block[i, :ny + 2 * h, :nx + 2 * h]
                a, b = np.nonzero(np.abs(view) > limit)
                if a.size == 0:
                    continue
                values = view[a, b].astype(np.float64)
                if values.size > MAX_OUTLIERS_PER_TILE:  # the largest; the others stay in the transform
                    top = np.argpartition(-np.abs(values), MAX_OUTLIERS_PER_TILE)[:MAX_OUTLIERS_PER_TILE]
                    a, b, values = a[top], b[top], values[top]
                if np.abs(values).max() > too_large:
                    raise _overflow_error("variance" if is_var else "image", ys, ny, block)
                view[a, b] = 0
                outliers.append((i, xs, nx, values, a, b))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, with its remedy
            acc = tr.apply(block, ny, Ty[:, ys:ys + ny, None], Xw)
            for i, xs, nx, values, a, b in outliers:
                acc[i, :, :nx] += _outlier_contributions(values, a, b, images, pq, Ty64, Tx64, ys, xs, ny, nx, h)
        if not np.isfinite(acc).all():  # the missing pixels are 0 here: only an overflow makes inf or NaN
            raise _overflow_error("variance" if is_var else "image", ys, ny, block)
        if is_var:  # a sum of non-negative terms: what is below 0 is the transforms' rounding
            np.maximum(acc, 0, out=acc)
        for i, (xs, nx) in enumerate(cols):
            dst[ys:ys + ny, xs:xs + nx] = acc[i, :, :nx]

    label = "convolve image and variance"
    if pool is None:
        bad, bad_rows, any_bad = missing()
        planes = [plane(img_terms, srcs[0], dsts[0], order), plane(var_terms, srcs[1], dsts[1], order_v)]
        for pl, batch in progress_bar([(pl, b) for pl in planes for b in batches], desc=label):
            run(pl, batch)
        return None
    # a pool thread prepares the variance's term spectra (15 transforms for order 2) while this one
    # prepares the image's and queues its tiles; then the mask's dilation and the variance's tiles
    # are queued behind them.  This thread only waits meanwhile: preparing the variance's spectra
    # here, a third thread on two cores, took 15 ms instead of 4 at 1024 x 1024 and slowed the
    # tiles beside it (convolution 57 -> 51 ms, medians of blocks of runs)
    var_job = pool.submit(plane, var_terms, srcs[1], dsts[1], order_v)
    jobs, side = [], None
    try:
        img_plane = plane(img_terms, srcs[0], dsts[0], order)
        bad, bad_rows, any_bad = missing()
        jobs += [pool.submit(run, img_plane, b) for b in batches]
        var_plane = var_job.result()
        side = pool.submit(beside) if beside is not None else None
        jobs += [pool.submit(run, var_plane, b) for b in batches]
        for _ in progress_bar((f.result() for f in jobs), desc=label, total=2 * len(batches)):
            pass
    except BaseException:
        for f in jobs:
            f.cancel()
        futures.wait(jobs + [var_job] + ([side] if side is not None else []))  # nothing of this call left running
        raise
    return side


#: The smallest ``convolveTileSize`` the configuration takes.
MIN_TILE = 64


def memory_limit_error(shape, need, limit, itemsize, kernel_size=None, n_terms=1, n_var_terms=1, workers=1):
    """The MemoryLimitError of a convolution of ``shape`` that needs ``need`` bytes, more than ``limit``.

    Its remedy names what can fit: the largest ``convolveTileSize`` whose estimate (with ``kernel_size``,
    the terms and the ``workers``) stays within the limit, else one thread with it
    (``PSFMATCH_NUM_THREADS=1``); only a larger limit or a smaller exposure when even that does not (the
    full-size planes, :func:`plane_memory`, may alone exceed it).
    """
    H, W = shape
    planes = plane_memory(shape, itemsize)

    def best_tile(nthreads):
        if kernel_size is None:
            return None
        for tile in range(max(MIN_TILE, 384), MIN_TILE - 1, -32):
            if estimate_memory(shape, kernel_size, n_terms, n_var_terms, tile, itemsize, nthreads) <= limit:
                return tile
        return None

    if planes > limit:
        remedy = (f"its full-size planes alone (the output image, variance and mask, and the mask's work) need "
                  f"{planes / 2**30:.3g} GiB: raise config.maxMemoryGiB, or match the exposure in smaller pieces")
    elif (tile := best_tile(workers)) is not None:
        remedy = f"raise config.maxMemoryGiB, or set config.convolveTileSize = {tile} (or less)"
    elif workers > 1 and (tile := best_tile(1)) is not None:
        remedy = (f"raise config.maxMemoryGiB, or convolve on one thread (PSFMATCH_NUM_THREADS=1) with "
                  f"config.convolveTileSize = {tile} (or less)")
    else:
        remedy = ("no tile size or thread count fits it with this kernel: raise config.maxMemoryGiB, or match the "
                  "exposure in smaller pieces")
    return MemoryLimitError(f"convolving a {W}x{H} image needs about {need / 2**30:.3g} GiB, more than the limit of "
                            f"{limit / 2**30:.3g} GiB; {remedy}")


def _overflow_error(name, ys, ny, block):
    """The error for a batch of tiles whose convolution overflowed (inf or NaN from finite inputs).

    ``block`` holds the tiles' input, missing pixels set to 0 (all finite).
    """
    top = float(np.abs(block).max())
    wider = "give the exposure float64 planes, " if block.dtype == np.float32 else ""
    return _kernel_sum_error(
        f"convolving the {name} plane overflowed {block.dtype} in rows {ys}..{ys + ny - 1}: its values (up to "
        f"{top:.3g} in magnitude there) times the kernel (kernelSum included) exceed what {block.dtype} "
        f"transforms can hold; {wider}use a smaller kernelSum, or flag the absurd pixels NO_DATA")


def _warn_if_extrapolated(bbox, kernel):
    """Warn (KernelQualityWarning) when a spatially varying kernel is applied outside its fitted box."""
    fit = getattr(kernel, "bbox", None)
    if fit is None or bbox.isEmpty() or not kernel.isSpatiallyVarying() or fit.intersection(bbox) == bbox:
        return
    warnings.warn(f"the image's box {bbox} reaches outside the box the kernel was fitted on, {fit}: its spatial "
                  "model is extrapolated there (polynomials grow fast outside the fit, and the kernel can become "
                  "strongly negative); apply the kernel only inside its box, or fit one for this image's box",
                  KernelQualityWarning, stacklevel=3)


def convolve_masked_image(masked_image: MaskedImage, kernel: LinearCombinationKernel, *,
                          mask_threshold: float = 1e-3, tile: int = 384, max_memory_bytes=None,
                          workers=None, footprint_planes=None) -> MaskedImage:
    """Convolve image, variance and mask with a (spatially varying) kernel; see the module docstring.

    Parameters
    ----------
    masked_image : MaskedImage
        Input (not modified).  float32 planes are transformed in single
        precision, anything else in double precision.
    kernel : LinearCombinationKernel
        Evaluated at parent pixel coordinates (the image's ``xy0`` is honoured).
        A spatially varying kernel is meant for the box it was fitted on
        (``kernel.bbox``); where the image reaches outside it, its spatial
        model is extrapolated (polynomials grow fast there and the kernel can
        become strongly negative) and a
        :class:`~psfmatch.errors.KernelQualityWarning` names both boxes.  A
        spatially constant kernel, or one without a box, applies anywhere.
    mask_threshold : float
        Footprint threshold for mask propagation (``maskDilationThreshold``),
        in [0, 1]; the footprint is the kernel's over the image's box
        (:func:`mask_footprint`).  It applies to the bits of
        ``footprint_planes``; every other bit spreads over every non-zero
        kernel pixel.
    footprint_planes : sequence of str, optional
        The mask planes whose values are meant to be used
        (``maskDilationPlanes``; default :data:`FOOTPRINT_MASK_PLANES`:
        DETECTED, DETECTED_NEGATIVE, INTRP).  Names the mask lacks change
        nothing; one that is not a default plane either is warned of
        (:class:`~psfmatch.errors.PsfMatchWarning`: a typo).
    tile : int
        Largest FFT side of the tiles (overlap-save); memory grows with ``tile``
        times the image width.
    max_memory_bytes : int, optional
        Raise :class:`MemoryLimitError` before allocating if :func:`estimate_memory` exceeds it.
    workers : int, optional
        Threads working on rows of tiles (default: :func:`default_workers`).

    Returns
    -------
    MaskedImage
        Same box and dtypes as the input.

    Raises
    ------
    InvalidInputError
        If ``mask_threshold`` is not in [0, 1], ``tile`` or ``workers`` not a
        positive integer, or the convolution overflows the planes' type: finite pixel values (a
        float32 garbage value of 1e38) or a ``kernelSum`` too large for the
        transforms, which would otherwise leave unflagged tiles of inf and NaN.
        Each batch of tiles is checked (about 10 us per 360 px tile).  Also if
        a ``kernelSum`` so small takes a plane's typical values below the
        type's smallest normal number (a variance of 0 or of few significant
        bits; :func:`_check_underflow`).
    MemoryLimitError
        If ``max_memory_bytes`` is given and :func:`estimate_memory` exceeds it.

    Warns
    -----
    KernelQualityWarning
        If the image's box is not inside the box a spatially varying kernel
        was fitted on (``kernel.bbox``): the kernel is extrapolated there.
    """
    for name, value in (("tile", tile), ("workers", workers)):
        if value is not None and not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                                      and value >= 1):
            raise InvalidInputError(f"{name} must be a positive integer; got {value!r}")
    mask_threshold = _mask_threshold(mask_threshold)
    peaks = _kernel_peaks(kernel, masked_image.getBBox())
    footprint = _footprint_at(peaks, mask_threshold)  # (as mask_footprint)
    _warn_if_extrapolated(masked_image.getBBox(), kernel)
    img = masked_image.image
    var = masked_image.variance
    mask_obj = masked_image.getMask()
    mask = mask_obj.array
    H, W = img.shape
    k = kernel.getWidth()
    h = k // 2
    nworkers = default_workers() if workers is None else max(1, int(workers))
    single = img.dtype == np.float32 and var.dtype == np.float32
    rdtype = np.float32 if single else np.float64
    cdtype = np.complex64 if single else np.complex128
    isz = np.dtype(rdtype).itemsize
    bbox = masked_image.getBBox()
    order, img_terms, var_terms = spatial_term_images(kernel, bbox)
    _check_type_range(img_terms, var_terms, rdtype, kernel)
    levels = _plane_levels(img, var)
    _check_underflow(kernel, bbox, levels, rdtype)
    if max_memory_bytes is not None:
        need = estimate_memory(img.shape, k, len(img_terms), len(var_terms), tile, isz, nworkers)
        if need > max_memory_bytes:
            raise memory_limit_error(img.shape, need, max_memory_bytes, isz, k, len(img_terms), len(var_terms),
                                     nworkers)

    planes = mask_obj.getMaskPlaneDict()  # (a copy)
    no_data_bit = mask_obj.getPlaneBitMask("NO_DATA") if "NO_DATA" in planes else 0
    out_no_data = no_data_bit or _new_no_data_bit(mask, planes)  # registers NO_DATA in ``planes`` if it can
    out_img = np.empty((H, W), dtype=img.dtype)
    out_var = np.empty((H, W), dtype=var.dtype)
    out_mask = np.zeros((H, W), dtype=np.int32)

    names = _plane_names(footprint_planes)
    unknown = [n for n in names if n not in planes and n not in DEFAULT_MASK_PLANES]
    if unknown:  # (a typo would let that plane's bits spread over the whole kernel)
        msg = (f"maskDilationPlanes names {unknown}, which the exposure's mask does not have (its planes: "
               f"{sorted(planes)}): is it a typo? Those names change nothing")
        log.warning(msg)
        warnings.warn(msg, PsfMatchWarning, stacklevel=3)
    mine = [n for n in names if n in planes]
    narrow_bits = (int(mask_obj.getPlaneBitMask(mine)) & 0xFFFFFFFF) if mine else 0
    support = _footprint_at(peaks, 0.0)  # every non-zero kernel pixel

    def propagate_mask():
        """OR the bits under the kernel footprint into ``out_mask``: the footprint planes' by the threshold's, the
        others by the kernel's whole support (the border and missing data come after)."""
        _dilate_mask(mask, footprint, exclude=no_data_bit, out=out_mask, wide=support,
                     wide_bits=~narrow_bits & 0xFFFFFFFF)

    tiled = H > 2 * h and W > 2 * h
    pool = shared_pool(nworkers) if tiled else None

    # with a pool, the missing pixels are found on its threads, a block of rows each, while this
    # thread prepares the term spectra
    missing = _MissingScan(img, var, mask, no_data_bit, pool, nworkers)
    mask_done = None  # the mask's dilation, when it runs in the pool beside the tiles
    if tiled:
        try:
            mask_done = _convolve_tiles(masked_image, img_terms, var_terms, order, (img, var), (out_img, out_var),
                                        missing.result, k, tile, rdtype, cdtype, pool, nworkers, levels,
                                        beside=propagate_mask)
        except BaseException:
            missing.wait()  # nothing left running
            raise
    bad, bad_rows, any_bad = missing.result()
    if mask_done is not None:
        mask_done.result()
    else:
        propagate_mask()

    dead = _dilate_square(bad, h) if any_bad else None
    if dead is not None:
        box, bad_out = dead
        out_img[box][bad_out] = np.nan  # box is a pair of slices: out_img[box] is a view
        out_var[box][bad_out] = np.inf
        if out_no_data:
            sub = out_mask[box]
            np.bitwise_or(sub, np.int32(out_no_data), out=sub, where=bad_out)
    if h > 0:
        for sl in ((slice(0, h), slice(None)), (slice(H - h, H), slice(None)),
                   (slice(None), slice(0, h)), (slice(None), slice(W - h, W))):
            out_img[sl] = np.nan
            out_var[sl] = np.inf
            out_mask[sl] = out_no_data
    # the fresh planes are handed to the result, not copied
    return MaskedImage(out_img, out_mask, out_var, xy0=masked_image.getXY0(), mask_planes=planes, copy=False)


def _new_no_data_bit(mask, planes) -> int:
    """Register ``NO_DATA`` in ``planes`` (a copy of a mask's planes that lack it); return its bit value.

    The lowest bit that no plane names and no pixel of ``mask`` sets is taken, so
    that the output can flag its border and the pixels touched by missing data.
    Returns 0 (and logs a warning) when every bit is in use.
    """
    used = int(np.bitwise_or.reduce(mask, axis=None)) & 0xFFFFFFFF if mask.size else 0
    for bit in range(32):
        if bit not in planes.values() and not used >> bit & 1:
            planes["NO_DATA"] = bit
            return int(np.int32(np.uint32(1 << bit)))  # bit 31 as the int32 the mask holds
    log.warning("the mask has no NO_DATA plane and no free bit for one: the output's border and the pixels touched "
                "by missing data are NaN (variance inf) but carry no mask bit")
    return 0


def direct_convolve(masked_image: MaskedImage, kernel: LinearCombinationKernel):
    """Slow, obviously correct reference: evaluate the kernel at every output pixel and sum directly.

    For tests only (it loops over pixels in Python); returns image and variance
    arrays (float64) with the border left at NaN / inf.  Missing input pixels are
    not treated specially (they propagate as NaN through the sums).
    """
    img = np.asarray(masked_image.image, dtype=np.float64)
    var = np.asarray(masked_image.variance, dtype=np.float64)
    H, W = img.shape
    k = kernel.getWidth()
    h = k // 2
    x0, y0 = masked_image.getXY0()
    out_i = np.full((H, W), np.nan)
    out_v = np.full((H, W), np.inf)
    for y in range(h, H - h):
        for x in range(h, W - h):
            K = kernel.computeImage((x + x0, y + y0))
            # convolution: out(x) = sum_u K(u) I(x - u) -> flip the kernel over the window
            win_i = img[y - h:y + h + 1, x - h:x + h + 1][::-1, ::-1]
            win_v = var[y - h:y + h + 1, x - h:x + h + 1][::-1, ::-1]
            out_i[y, x] = np.sum(K * win_i)
            out_v[y, x] = np.sum(K * K * win_v)
    return out_i, out_v
