"""Quality of a match: how well science (*) kernel reproduces the reference.

For a position ``x`` with science stamp ``S``, reference stamp ``R`` and kernel
image ``K_x`` (unit sum), the matched PSF is ``S (*) K_x`` on the full
``(P + k - 1)^2`` support and the residual is ``D = S (*) K_x - R`` (``R``
zero-padded).  Recorded per position:

``residualMax``
    ``max |D| / max R``.
``residualRms``
    RMS of ``D`` over the reference stamp's ``P^2`` pixels, divided by ``max R``.
``sizeMismatch``
    ``sigma(S (*) K) / sigma(R) - 1`` with adaptive-moment determinant radii,
    both measured on the reference stamp's ``P^2`` pixels.
``ellipticityMismatch``
    ``|e(S (*) K) - e(R)|`` with distortions ``e = (Ixx - Iyy, 2 Ixy) / (Ixx + Iyy)``.
``kernelNegativeFraction``
    ``sum |min(K, 0)| / sum |K|``.
``centroidShift``
    Distance (pixels) between the adaptive-moment centroids of ``S (*) K`` and ``R``.
``kernelShift``
    Distance (pixels) by which the kernel moves a star: the adaptive-moment
    centroid of ``S (*) K`` minus that of ``S``, components ``kernelShiftDx``
    and ``kernelShiftDy``.  The WCS of the matched exposure is not changed,
    so positions measured on it are off by this shift.  A science or
    reference PSF model that is not centred in its stamp (a PSF image read
    with ``recenter=False``) makes the kernel move the stars by the models'
    offset; ``centroidShift`` compares ``S (*) K`` with ``R``, which carries
    the same offset, and does not see it.  First moments add under
    convolution: the *unweighted* centroid of every star moves by exactly the
    kernel's centroid ``(sum x K, sum y K) / sum K`` (:func:`kernel_centroids`),
    which is the value used where the adaptive moments of ``S`` or
    ``S (*) K`` fail.  The weighted shift is the one recorded because the
    unweighted centroid of a real PSF model follows its faint, noisy wings:
    PSFEx models whose cores are centred to 0.05 px have first moments up to
    0.75 px off, which the kernel removes (0.2 to 0.57 px of kernel
    centroid) while the stars' cores move by at most 0.11 px (0.05 px but
    for one model along a CCD edge where its core is off by that much).
``apertureFluxMismatch``
    ``max_r |sum_{|x| <= r} D|``: the largest difference of the encircled flux
    of ``S (*) K`` and ``R`` (unit sums) over circular apertures about the
    stamp's centre, of radii :data:`APERTURE_RADII` up to half the reference
    stamp.  ``residualMax`` is a fraction of the peak and misses a faint wide
    wing that the kernel does not build: a Moffat reference (FWHM 6 px, beta
    3) matched to a residual of 1e-3 of the peak left stars 0.8 % brighter in
    a 16 px aperture.  This number sees it.

The three moment-based numbers are NaN where the adaptive moments of either
stamp failed (a PSF narrower than about 0.8 px sigma, or one without a clear
core): they are then unknown, not 0.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft

from .errors import InvalidInputError
from .moments import adaptive_moments, stamp_moments
from .psf.base import stamp_half_support
from .parallel import map_shared

__all__ = ["matched_stamps", "match_quality", "match_quality_groups", "aperture_flux_mismatch", "kernel_centroids",
           "summarize", "QA_DTYPE"]


#: Precision of the transforms behind :func:`match_quality` (see its Notes).
QA_DTYPE = np.float32


def matched_stamps(science, kernels, dtype=np.float64, *, spectra=None, terms=None):
    """``S (*) K`` for stacks ``science`` (n, P, P) and ``kernels`` (n, k, k): shape (n, P+k-1, P+k-1).

    ``dtype`` is the precision of the transforms (float64, or float32 for about
    2.5 times less work with a rounding error of about 2e-7 of the peak); the
    result is float64 either way.  ``spectra`` (a dict, optional) keeps the
    transforms of this ``science`` stack by transform size: calls that pass
    the same stack and dict with kernels of several sizes (the automatic
    kernel's trials) transform the stamps once per size, with the same result
    bit for bit.  ``terms`` (optional) is ``(weights, images)`` of shapes
    (n, t) and (t, k, k) with ``kernels[i] = sum_j weights[i, j] images[j]``
    (a spatially varying kernel's terms): the kernels' spectra are then the
    same combinations of the ``t`` terms' spectra, ``t`` transforms instead
    of ``n`` (equal to rounding, about 1e-16 of the spectra's peak in float64).
    """
    S = np.asarray(science, dtype=dtype)
    K = np.asarray(kernels, dtype=dtype)
    P, k = S.shape[-1], K.shape[-1]
    n = P + k - 1
    # only the science stamps' non-zero pixels are transformed (a PSF zero-padded to psfSize has a
    # smaller support): the product is exactly zero outside the support's full convolution
    key = ("support", S.dtype)
    a = None if spectra is None else spectra.get(key)
    if a is None:
        a = stamp_half_support(S)
        if spectra is not None:
            spectra[key] = a
    c = P // 2
    nc = 2 * a + k
    L = sfft.next_fast_len(nc, real=True)
    FS = None if spectra is None else spectra.get((L, S.dtype))
    if FS is None:
        FS = sfft.rfft2(S[..., c - a:c + a + 1, c - a:c + a + 1], s=(L, L))
        if spectra is not None:
            spectra[(L, S.dtype)] = FS
    if terms is None:
        FK = sfft.rfft2(K, s=(L, L))
    else:
        weights, images = np.asarray(terms[0], dtype=dtype), np.asarray(terms[1], dtype=dtype)
        if weights.shape != (len(K), len(images)) or images.shape[1:] != K.shape[1:]:
            raise InvalidInputError(
                f"terms must be weights ({len(K)}, t) and images (t, {k}, {k}) for {len(K)} kernels of {k}x{k}; "
                f"got {weights.shape} and {images.shape}")
        FT = sfft.rfft2(images, s=(L, L))
        # real weights: one real product over the (re, im) pairs of the terms' spectra (twice as fast as
        # a complex one, the same sums)
        pairs = np.ascontiguousarray(FT).reshape(len(FT), -1).view(dtype)
        FK = (weights @ pairs).view(FT.dtype).reshape((-1,) + FT.shape[1:])
    # into the kernels' spectra: the same operation, and so the same bits, as the product of two
    # fresh transforms (an expression such as FS * rfft2(K) rounds differently in the last bit)
    part = sfft.irfft2(np.multiply(FS, FK, out=FK), s=(L, L))[..., :nc, :nc]
    out = np.zeros(S.shape[:-2] + (n, n))
    out[..., c - a:c - a + nc, c - a:c - a + nc] = part
    return out


def _reference_moments(R):
    """Adaptive moments of the reference stamps, measured once when they are all identical.

    A constant reference PSF (the usual case) gives the same stamp at every
    position; the moments of one stamp (:func:`~psfmatch.moments.stamp_moments`,
    which also remembers them for the next fits of a batch) are then broadcast to all.
    """
    if len(R) and np.array_equal(R, np.broadcast_to(R[0], R.shape)):
        return tuple(np.repeat(v, len(R)) for v in stamp_moments(R[0]))
    return adaptive_moments(R)


#: Radii (pixels) of the circular apertures of ``apertureFluxMismatch`` (those up to half the reference stamp).
APERTURE_RADII = (1.5, 2.5, 3.5, 5.0, 7.0, 8.5, 10.0, 12.0, 14.0, 16.0, 20.0, 28.0, 40.0)


@functools.lru_cache(maxsize=16)
def _aperture_masks(L, P) -> np.ndarray:
    """(L*L, m) indicator columns of the apertures (pixel centres within each radius of the centre of an
    ``L x L`` stamp), for the radii of :data:`APERTURE_RADII` up to ``P / 2`` (at least the smallest)."""
    c = L // 2
    yy, xx = np.mgrid[:L, :L]
    r = np.hypot(yy - c, xx - c).ravel()
    radii = [a for a in APERTURE_RADII if a <= P / 2.0] or [APERTURE_RADII[0]]
    masks = np.stack([r <= a for a in radii], axis=1).astype(np.float64)
    masks.setflags(write=False)
    return masks


def aperture_flux_mismatch(D, P) -> np.ndarray:
    """``apertureFluxMismatch`` (see the module docstring) of residual stamps ``D`` (n, L, L), ``S (*) K - R``
    on the matched stamps' full support, for reference stamps of side ``P``."""
    L = D.shape[-1]
    return np.abs(D.reshape(len(D), L * L) @ _aperture_masks(L, P)).max(axis=1)


#: Stacks are measured in chunks of at most this many positions: each chunk's arrays stay in the cache
#: (1.5 times faster than whole-stack arrays of a thousand stamps), and chunks run on the cores in parallel.
_CHUNK = 256

#: Chunks of large stamps or kernels hold fewer positions, so that the work arrays of one chunk
#: (:func:`qa_chunk_work`) stay near this many bytes (a chunk of 256 positions of 63 px stamps and a 41 px
#: kernel would need about 80 MiB, on every thread at once).
CHUNK_BYTES = 24 * 2 ** 20

#: Work arrays of :func:`match_quality` per position, in units of ``(P + k - 1)^2`` bytes: the float64 matched
#: stamp and residual (8), the single-precision inverse transform (4) and the spectra of the stamps and of the
#: kernels (complex64 on the half plane: 4 each), with the moments' and the casts' temporaries (tracemalloc).
_WORK_PER_PIXEL = 32


def qa_chunk_size(psf_size, kernel_size) -> int:
    """Positions per chunk of :func:`match_quality` for stamps of side ``psf_size`` and kernels of
    ``kernel_size``: at most ``_CHUNK``, fewer where a chunk would need more than :data:`CHUNK_BYTES`."""
    per = _WORK_PER_PIXEL * (int(psf_size) + int(kernel_size) - 1) ** 2
    return int(max(1, min(_CHUNK, CHUNK_BYTES // per)))


def qa_chunk_work(psf_size, kernel_size, n_positions, support_size=None) -> int:
    """Bytes of the work arrays of one chunk of :func:`match_quality` (one thread's share) for
    ``n_positions`` positions: :func:`qa_chunk_size` of them at most.  ``support_size``: the side of the
    science stamps' non-zero pixels (default ``psf_size``), which sets the transforms' size."""
    n = min(int(n_positions), qa_chunk_size(psf_size, kernel_size))
    f = int(psf_size) + int(kernel_size) - 1
    L = min(f, int(psf_size if support_size is None else support_size) + int(kernel_size) - 1)
    return n * (8 * f * f + (_WORK_PER_PIXEL - 8) * L * L)


def match_quality(science, reference, kernels) -> dict:
    """Per-position QA arrays (see the module docstring) for stacks of stamps and unit-sum kernels.

    Stacks longer than a chunk (:func:`qa_chunk_size`: ``_CHUNK`` positions, fewer for large
    stamps) are cut in near-equal chunks measured concurrently (numpy and pocketfft release the GIL);
    each position's numbers do not depend on the others', so the result is the same.  Shorter
    stacks are measured in this thread: their many small array operations
    would spend more time contending for the GIL than they gain.

    Notes
    -----
    The matched stamps ``S (*) K`` are computed with single-precision
    transforms (``QA_DTYPE``): a rounding error of about 2e-7 of the
    peak, far below any QA threshold (``qaMaxResidual`` is 1e-2), for 2.5 times
    less work; everything after the transforms is done in double precision.
    ``residualMax`` values below about 1e-6 therefore only say that the match
    is at the rounding floor.

    Examples
    --------
    A Gaussian of sigma 1.5 px convolved with the exact kernel, a Gaussian of
    sigma ``sqrt(2.5**2 - 1.5**2) = 2`` px, reproduces a Gaussian of sigma 2.5 px:

    >>> from psfmatch.psf import GaussianPsf
    >>> S = GaussianPsf(31, 31, 1.5).computeKernelImage((0, 0))
    >>> R = GaussianPsf(31, 31, 2.5).computeKernelImage((0, 0))
    >>> K = GaussianPsf(21, 21, 2.0).computeKernelImage((0, 0))
    >>> q = match_quality(S[None], R[None], K[None])
    >>> sorted(q)  # doctest: +NORMALIZE_WHITESPACE
    ['apertureFluxMismatch', 'centroidShift', 'ellipticityMismatch', 'kernelNegativeFraction',
     'kernelShift', 'kernelShiftDx', 'kernelShiftDy', 'residualMax', 'residualRms', 'sizeMismatch']
    >>> bool(q["kernelShift"][0] < 1e-5)  # a centred kernel moves no star (to the float32 transforms' rounding)
    True
    >>> bool(q["residualMax"][0] < 1e-3), bool(abs(q["sizeMismatch"][0]) < 1e-3)
    (True, True)
    >>> bool(q["apertureFluxMismatch"][0] < 1e-4)
    True
    """
    return match_quality_groups([(science, reference, kernels)])[0]


def match_quality_groups(groups) -> list:
    """:func:`match_quality` of several ``(science, reference, kernels)`` stacks, one dict per stack.

    The chunks of all the stacks are measured together on the cores, without
    concatenating the stacks (the kernel fit's QA of its candidates and of the
    positions between them: a copy of each stack less).

    A group may carry a fourth item, the science stamps' adaptive centroids already measured
    (an (n, 2) array of offsets ``(xc, yc)`` from the centre pixel, NaN where unknown; the fit
    passes those of its ill-posed survey): ``kernelShift`` then measures only the others.
    """
    stacks = []
    for science, reference, kernels, *known in groups:
        S = np.asarray(science, dtype=np.float64)
        R = np.asarray(reference, dtype=np.float64)
        K = np.asarray(kernels, dtype=np.float64)
        if (S.ndim != 3 or R.shape != S.shape or K.ndim != 3 or len(K) != len(S) or S.shape[1] != S.shape[2]
                or K.shape[1] != K.shape[2] or S.shape[1] % 2 == 0 or K.shape[1] % 2 == 0):
            raise InvalidInputError(
                f"match_quality needs stacks of n odd square science and reference stamps of one size, (n, P, P), "
                f"and n odd square kernels, (n, k, k); got science {S.shape}, reference {R.shape}, kernels "
                f"{K.shape} (give single stamps as stacks of one: stamp[None])")
        C = None if not known or known[0] is None else np.asarray(known[0], dtype=np.float64)
        if C is not None and C.shape != (len(S), 2):
            raise InvalidInputError(f"match_quality_groups: the known science centroids must be an (n, 2) array "
                                    f"for the {len(S)} stamps; got shape {C.shape}")
        stacks.append((S, R, K, C))
    jobs = []  # (stack, slice): near-equal chunks of each stack
    for g, (S, R, K, _) in enumerate(stacks):
        n = len(S)
        nparts = max(1, -(-n // qa_chunk_size(S.shape[1], K.shape[1])))
        edges = np.linspace(0, n, nparts + 1).round().astype(int)
        jobs += [(g, slice(int(a), int(b))) for a, b in zip(edges[:-1], edges[1:])]

    def one(job):
        S, R, K, C = stacks[job[0]]
        return _match_quality(S[job[1]], R[job[1]], K[job[1]], None if C is None else C[job[1]])

    # positions that fit one chunk in all are measured in this thread, as a short stack is (see match_quality)
    serial = len(jobs) <= 1 or sum(len(S) for S, *_ in stacks) <= _CHUNK
    parts = [one(job) for job in jobs] if serial else map_shared(one, jobs)
    out = []
    for g in range(len(stacks)):
        mine = [p for (h, _), p in zip(jobs, parts) if h == g]
        out.append(mine[0] if len(mine) == 1 else {key: np.concatenate([p[key] for p in mine]) for key in mine[0]})
    return out


def _science_centroids(S, known):
    """Adaptive centroids ``(xc, yc, ok)`` of the science stamps ``S``: the ``known`` (n, 2) rows that are
    not NaN, measured for the others (all of them without ``known``)."""
    if known is None:
        return _reference_moments(S)[3:]
    miss = np.isnan(known).any(axis=1)
    xc, yc, ok = known[:, 0].copy(), known[:, 1].copy(), ~miss
    if miss.any():
        xc[miss], yc[miss], ok[miss] = _reference_moments(S[miss])[3:]
    return xc, yc, ok


def _match_quality(S, R, K, known=None):
    P, k = S.shape[-1], K.shape[-1]
    h = k // 2
    m = matched_stamps(S, K, QA_DTYPE)  # a fresh array: it becomes the residual in place
    # both shapes on the reference stamp's pixels (the matched stamp's centre is the same pixel); the
    # adaptive weight of a PSF that fits its stamp is below 1e-13 of its peak outside
    mi = adaptive_moments(m[:, h:h + P, h:h + P])
    D = m
    Dc = D[:, h:h + P, h:h + P]
    Dc -= R
    peak = R.max(axis=(1, 2))
    res_rms = np.sqrt(np.einsum("nij,nij->n", Dc, Dc) / (P * P)) / peak
    aperture = aperture_flux_mismatch(D, P)  # (before |D| below)
    res_max = np.abs(D, out=D).max(axis=(1, 2)) / peak
    ri = _reference_moments(R)
    det_m = np.clip(mi[0] * mi[1] - mi[2] ** 2, 1e-300, None) ** 0.25
    det_r = np.clip(ri[0] * ri[1] - ri[2] ** 2, 1e-300, None) ** 0.25
    size = det_m / det_r - 1.0
    e_m = np.stack([(mi[0] - mi[1]) / (mi[0] + mi[1]), 2 * mi[2] / (mi[0] + mi[1])])
    e_r = np.stack([(ri[0] - ri[1]) / (ri[0] + ri[1]), 2 * ri[2] / (ri[0] + ri[1])])
    ell = np.hypot(*(e_m - e_r))
    ok = mi[5] & ri[5]
    size = np.where(ok, size, np.nan)
    ell = np.where(ok, ell, np.nan)
    neg = np.clip(-K, 0, None).sum(axis=(1, 2)) / np.abs(K).sum(axis=(1, 2))
    # the stars' shift: adaptive centroid of S (*) K minus that of S (the science stamps' moments measured
    # once where they are all identical, and not at all where they are known); where either fails, the
    # kernel's own first moment
    sx, sy, s_ok = _science_centroids(S, known)
    star_ok = mi[5] & s_ok
    kx, ky = kernel_centroids(K)
    dx = np.where(star_ok, mi[3] - sx, kx)
    dy = np.where(star_ok, mi[4] - sy, ky)
    return {"residualMax": res_max, "residualRms": res_rms, "sizeMismatch": size,
            "ellipticityMismatch": ell, "kernelNegativeFraction": neg,
            "centroidShift": np.where(ok, np.hypot(mi[3] - ri[3], mi[4] - ri[4]), np.nan),
            "apertureFluxMismatch": aperture, "kernelShift": np.hypot(dx, dy), "kernelShiftDx": dx,
            "kernelShiftDy": dy}


def kernel_centroids(kernels):
    """Centroid offsets ``(dx, dy)`` (pixels, each of shape (n,)) of kernels (n, k, k) from their centre pixel.

    ``dx = sum x K / sum K`` and ``dy = sum y K / sum K`` with ``x, y`` counted from the
    centre pixel ``k // 2``: the shift that convolving with ``K`` applies to every
    star (first moments add under convolution).  NaN where ``sum K`` is 0.

    Examples
    --------
    >>> K = np.zeros((1, 5, 5)); K[0, 2, 3] = 0.75; K[0, 2, 2] = 0.25  # row y = 2, columns x = 3 and 2
    >>> [float(v[0]) for v in kernel_centroids(K)]
    [0.75, 0.0]
    """
    K = np.asarray(kernels, dtype=np.float64)
    k = K.shape[-1]
    u = np.arange(k, dtype=np.float64) - k // 2
    total = K.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = K.sum(axis=1) @ u / total
        dy = K.sum(axis=2) @ u / total
    return dx, dy


def summarize(q: dict, xs=None, ys=None) -> dict:
    """Field-wide worst values of :func:`match_quality` arrays (JSON-serializable floats).

    ``<name>Worst`` and ``<name>Median`` of the residuals, the kernel negativity, the
    centroid shift, the aperture flux mismatch and the kernel shift; the signed size
    mismatch of largest magnitude; the worst ellipticity mismatch.  For the kernel
    shift also its components where it is worst, ``kernelShiftWorstDx`` and
    ``kernelShiftWorstDy``, and, given the positions ``xs``, ``ys`` of the stacks,
    that position, ``kernelShiftWorstX`` and ``kernelShiftWorstY``.
    """
    if not q or len(next(iter(q.values()))) == 0:
        return {"n": 0}
    out = {"n": int(len(q["residualMax"]))}
    for name in ("residualMax", "residualRms", "kernelNegativeFraction", "centroidShift", "apertureFluxMismatch",
                 "kernelShift"):
        if name not in q:
            continue
        v = np.asarray(q[name], dtype=np.float64)
        finite = v[~np.isnan(v)]  # (numpy's nanmax and nanmedian cost 10 times more on short arrays)
        out[f"{name}Worst"] = float(finite.max()) if finite.size else float("nan")
        out[f"{name}Median"] = float(np.median(finite)) if finite.size else float("nan")
    if "kernelShift" in q and np.any(np.isfinite(q["kernelShift"])):
        j = int(np.nanargmax(q["kernelShift"]))
        out["kernelShiftWorstDx"] = float(q["kernelShiftDx"][j])
        out["kernelShiftWorstDy"] = float(q["kernelShiftDy"][j])
        if xs is not None and ys is not None:
            out["kernelShiftWorstX"] = float(xs[j])
            out["kernelShiftWorstY"] = float(ys[j])
    out["sizeMismatchWorst"] = float(q["sizeMismatch"][np.nanargmax(np.abs(q["sizeMismatch"]))]) \
        if np.any(np.isfinite(q["sizeMismatch"])) else float("nan")
    out["ellipticityMismatchWorst"] = float(np.nanmax(q["ellipticityMismatch"])) \
        if np.any(np.isfinite(q["ellipticityMismatch"])) else float("nan")
    return out


def format_report(metadata: dict, field_grid=None) -> str:
    """A short human-readable QA summary of a task's metadata.

    ``field_grid``: the ``summary`` of :func:`psfmatch.display.field_qa` (a grid over the field, as the
    command line's QA figure measures), reported after the candidates and the held-out positions.
    """
    md = metadata
    lines = [
        f"kernel: {md.get('kernelBasisSet')} {md.get('kernelSize')}x{md.get('kernelSize')}, "
        f"spatial {md.get('spatialModelType')} order {md.get('spatialKernelOrder')} "
        f"(requested {md.get('spatialKernelOrderRequested')}), PSF stamps {md.get('psfSize')} px",
        f"candidates: {md.get('nCandidatesUsed')} used of {md.get('nCandidatesBuilt')} "
        f"({md.get('nCandidatesRejected')} rejected, {md.get('nUniqueCandidates')} distinct)",
        f"spatial solve: rank {md.get('spatialSolutionRank')} of {md.get('nSpatialUnknowns')} unknowns, "
        f"condition number {md.get('spatialConditionNum'):.3g}",
        f"kernel sum at field centre: {md.get('spatialKernelSum'):.8f} (kernelSum {md.get('kernelSum')})",
    ]
    zp = md.get("zeroPoint")
    if isinstance(zp, dict) and {"input", "target", "source"} <= set(zp):
        lines.append(f"zero point: {zp['input']:.4f} ({zp['source']}) -> {zp['target']:.4f}")
    for where, q in (("candidates", md.get("qa", {}).get("candidates", {})),
                     ("between", md.get("qa", {}).get("between", {})), ("field grid", field_grid or {})):
        if q.get("n"):
            lines.append(
                f"QA {where:10s} (n={q['n']:4d}): max|S*K-R|/peak {q['residualMaxWorst']:.2e}, "
                f"rms {q['residualRmsWorst']:.2e}, size mismatch {q['sizeMismatchWorst']:+.2e}, "
                f"ellipticity mismatch {q['ellipticityMismatchWorst']:.2e}"
                + (f", kernel negative fraction {q['kernelNegativeFractionWorst']:.2e}"
                   if "kernelNegativeFractionWorst" in q else "")
                + (f", aperture flux mismatch {q['apertureFluxMismatchWorst']:.2e}"
                   if "apertureFluxMismatchWorst" in q else "")
                + (f", kernel shift {q['kernelShiftWorst']:.2e} px" if "kernelShiftWorst" in q else ""))
    for note in md.get("notes", []):
        lines.append(f"note: {note}")
    if "fitTime" in md:
        lines.append(f"time: fit {md['fitTime']:.2f} s, convolve {md.get('convolveTime', float('nan')):.2f} s")
    return "\n".join(lines)
