"""Adaptive (Gaussian-weighted) second moments of PSF stamps, vectorized over a stack.

The adaptive moments of an image I are the covariance ``M`` of the elliptical
Gaussian weight ``w(d) = exp(-d^T M^{-1} d / 2)`` that matches the image in the
sense of Bernstein & Jarvis (2002): with ``Q`` the weighted second moments
``Q = sum w I d d^T / sum w I`` about the weighted centroid, the fixed point is
``M = 2 Q``; for a Gaussian image of covariance ``C`` it is ``M = C`` exactly.
The iteration uses the Gaussian closed form ``M^{-1} <- Q^{-1} - M^{-1}``
(exact in one step for Gaussians) and falls back to ``M <- 2 Q`` whenever that
update is not positive definite.

Size conventions: ``determinant_radius = (Ixx Iyy - Ixy^2)^{1/4}`` (LSST's and
GalSim's adaptive-moment ``sigma``); distortion ``e = (Ixx - Iyy, 2 Ixy) / (Ixx + Iyy)``
and reduced shear ``g = e / (1 + sqrt(1 - |e|^2))``.

References
----------
Bernstein, G. M. & Jarvis, M. 2002, AJ 123, 583.
Hirata, C. & Seljak, U. 2003, MNRAS 343, 459.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

__all__ = ["UNDERSAMPLED_SIGMA", "Quadrupole", "adaptive_moments", "collapsed", "measure_shape"]


@dataclass(frozen=True)
class Quadrupole:
    """Second moments ``(ixx, iyy, ixy)`` in pixels squared, with the centroid offset."""

    ixx: float
    iyy: float
    ixy: float
    x: float = 0.0
    y: float = 0.0

    def getIxx(self) -> float:
        return self.ixx

    def getIyy(self) -> float:
        return self.iyy

    def getIxy(self) -> float:
        return self.ixy

    def getDeterminantRadius(self) -> float:
        """``(Ixx Iyy - Ixy^2)^{1/4}``: the sigma of a round Gaussian of the same area."""
        return float((self.ixx * self.iyy - self.ixy ** 2) ** 0.25)

    def getTraceRadius(self) -> float:
        """``sqrt((Ixx + Iyy) / 2)``."""
        return float(np.sqrt(0.5 * (self.ixx + self.iyy)))

    @property
    def sigma(self) -> float:
        return self.getDeterminantRadius()

    @property
    def e1(self) -> float:
        return float((self.ixx - self.iyy) / (self.ixx + self.iyy))

    @property
    def e2(self) -> float:
        return float(2.0 * self.ixy / (self.ixx + self.iyy))

    @property
    def g1(self) -> float:
        e = np.hypot(self.e1, self.e2)
        return float(self.e1 / (1.0 + np.sqrt(max(0.0, 1.0 - e * e))))

    @property
    def g2(self) -> float:
        e = np.hypot(self.e1, self.e2)
        return float(self.e2 / (1.0 + np.sqrt(max(0.0, 1.0 - e * e))))

    @property
    def fwhm(self) -> float:
        """FWHM of the Gaussian with this determinant radius: ``2 sqrt(2 ln 2) sigma``."""
        return float(2.0 * np.sqrt(2.0 * np.log(2.0)) * self.getDeterminantRadius())

    def to_dict(self) -> dict:
        return {"ixx": self.ixx, "iyy": self.iyy, "ixy": self.ixy, "x": self.x, "y": self.y,
                "sigma": self.sigma, "e1": self.e1, "e2": self.e2}


def _separable_ok(ic, xc, yc, xmax, ymax):
    """True where the weight may be factored without overflow (see :func:`adaptive_moments`)."""
    return (np.abs(ic) * xmax * ymax <= 60.0) & (np.abs(ic) * (np.abs(xc) * ymax + np.abs(yc) * xmax) <= 60.0)


#: Smallest weight moment (px^2) the iteration keeps; a result on it is reported as not converged (``ok`` False).
_FLOOR = 1e-4

#: Adaptive sigma (pixels) that a PSF whose weight collapses onto the floor along both axes
#: (:func:`collapsed`) is narrower than, along every axis, with a margin: the narrowest PSFs whose moments
#: still converge measure at most 0.71 px.  Measured on round Gaussians centred anywhere within a pixel,
#: sampled at pixel centres (collapsing up to sigma 0.77 px) or integrated over pixels (0.71 px); Moffat
#: profiles (beta 1.5-4.8) and a Gaussian with a wing three times its width collapse up to a FWHM of 1.74 px.
UNDERSAMPLED_SIGMA = 0.8

#: Stacks longer than this are measured in chunks of this many stamps (see :func:`adaptive_moments`).
_CHUNK = 256


def _real_stamps(stamps, name, ndims, remedy="") -> np.ndarray:
    """``stamps`` as a float64 array of ``ndims`` dimensions, none of them empty, or InvalidInputError.

    Complex values are refused (their imaginary part would be dropped); the checks cost no pass over
    the pixels.
    """
    try:
        a = np.asarray(stamps)
    except (TypeError, ValueError):  # ragged nested lists
        raise InvalidInputError(f"{name} must be an array of real numbers; got nested lists of unequal "
                                "lengths") from None
    if a.dtype.kind not in "biuf":
        hint = " (measure the real part or the modulus explicitly)" if a.dtype.kind == "c" else ""
        raise InvalidInputError(f"{name} must be real numbers; got an array of dtype {a.dtype}{hint}")
    if a.ndim not in ndims or 0 in a.shape[-2:]:
        want = " or ".join({2: "one 2-d stamp (ny, nx)", 3: "a stack (n, ny, nx)"}[d] for d in ndims)
        raise InvalidInputError(f"{name} must be {want} with ny, nx >= 1; got shape {a.shape}{remedy}")
    return a.astype(np.float64, copy=False)


def adaptive_moments(stamps, guess_sigma=None, max_iter=100, tol=1e-9, *, guess=None):
    """Adaptive second moments of a stack of centred stamps.

    Parameters
    ----------
    stamps : array_like, shape (n, ny, nx) or (ny, nx)
        PSF images; their centre pixel ``(nx // 2, ny // 2)`` is the origin of the offsets.
    guess_sigma : float or array, optional
        Starting width; by default the unweighted second moments clipped to the stamp.
    max_iter : int
        Iteration limit.
    tol : float
        Convergence tolerance on the relative change of the moments.
    guess : tuple of arrays ``(ixx, iyy, ixy)``, optional
        Starting moments (for example those of a similar image); overrides ``guess_sigma``.
        A good start saves iterations; the fixed point does not depend on it.

    Returns
    -------
    ixx, iyy, ixy, xc, yc : ndarray
        Moments (pixels squared) and centroid offsets from the centre pixel.
    ok : ndarray of bool
        False where the iteration did not converge, the image has no positive flux, or
        the PSF is too narrow for adaptive moments: below a sigma of about 0.8 px a
        pixel-sampled profile has no fixed point and the weight collapses onto the
        iteration's floor (1e-4 px^2).

    Raises
    ------
    InvalidInputError
        If ``stamps`` is not a 2-d or 3-d array of real numbers with ``ny, nx >= 1`` (complex values
        are refused rather than cut to their real part), or ``max_iter`` is not an integer >= 1.

    Notes
    -----
    Each iteration needs the weighted sums ``sum w I d^a`` for the monomials of
    degree <= 2 in the offsets ``d``.  The elliptical Gaussian weight factors as
    ``w(x, y) = e_x(x) e_y(y) exp(-M^-1_xy x y)`` (the centroid's cross terms go
    into the 1-d factors ``e_x``, ``e_y``), so one 2-d exponential and one batched
    matrix product per iteration give all six sums; the second moments about
    the weighted centroid follow from the raw ones.  The result is the same
    fixed point as the direct evaluation (to rounding).  Stamps whose weight
    could overflow when factored (a nearly degenerate weight or a centroid far
    off the centre) use the direct 2-d evaluation.  The iteration is
    accelerated by Anderson mixing (``_anderson_step``): on PSFs with wings,
    where the plain map converges linearly, it needs about half the steps, to
    the same fixed point.  On stamps of 41 px or more, each step sums only over
    the rows and columns where some stamp's weight can exceed 1e-16 of its
    peak (``_window``): once the weight has shrunk to the PSF's core, a
    63 px stamp of a PSFEx model is summed over about 41 x 39 pixels, which
    halves the cost of the moments of such stamps and changes them by
    rounding only.
    """
    s = _real_stamps(stamps, "adaptive_moments' stamps", (2, 3))
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidInputError(f"adaptive_moments' max_iter must be an integer >= 1; got {max_iter!r} (the default "
                                "is 100)")
    single = s.ndim == 2
    if single:
        s = s[None]
    n, ny, nx = s.shape
    if n > _CHUNK:  # chunks whose work arrays stay in the cache; every stamp is independent
        parts = []
        for i in range(0, n, _CHUNK):
            sl = slice(i, i + _CHUNK)
            g = None if guess is None else tuple(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))[sl]
                                                  for v in guess)
            gs = guess_sigma if guess_sigma is None or np.ndim(guess_sigma) == 0 else \
                np.broadcast_to(np.asarray(guess_sigma, dtype=float), (n,))[sl]
            parts.append(adaptive_moments(s[sl], gs, max_iter, tol, guess=g))
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(6))
    x = np.arange(nx, dtype=np.float64) - nx // 2
    y = np.arange(ny, dtype=np.float64) - ny // 2
    xmax, ymax = float(np.abs(x).max()), float(np.abs(y).max())
    sx = s.sum(axis=1)  # (n, nx)
    sy = s.sum(axis=2)  # (n, ny)
    flux = sx.sum(axis=1)
    ok = np.isfinite(flux) & (flux > 0)
    safe = np.where(ok, flux, 1.0)
    xc = (sx @ x) / safe
    yc = (sy @ y) / safe
    if guess is not None:
        a, b, c = (np.broadcast_to(np.asarray(g, dtype=np.float64), (n,)).copy() for g in guess)
    else:
        if guess_sigma is None:
            r2 = (sx @ (x * x) + sy @ (y * y)) / safe
            g0 = np.clip(np.sqrt(np.abs(r2) / 2.0), 0.5, max(nx, ny) / 4.0)
        else:
            g0 = np.broadcast_to(np.asarray(guess_sigma, dtype=float), (n,)).copy()
        a = g0 ** 2  # M = [[a, c], [c, b]]
        b = g0 ** 2
        c = np.zeros(n)
    xc = np.clip(np.where(ok, xc, 0.0), -nx / 4, nx / 4)
    yc = np.clip(np.where(ok, yc, 0.0), -ny / 4, ny / 4)
    converged = np.zeros(n, dtype=bool)
    powx_t = np.stack([np.ones(nx), x, x * x])  # (3, nx)
    st = np.ascontiguousarray(s.transpose(1, 0, 2))  # (ny, n, nx): see _weighted_sums
    # a window (_window) pays for its arithmetic on stamps with pixels beyond ~8.6 sigma of a PSF's core
    windowed = max(nx, ny) >= _WINDOW_MIN_SIZE
    lim = (max(nx, ny) / 2.0) ** 2
    active = np.ones(n, dtype=bool)
    # Anderson acceleration (depth 1): the previous iterate's image under the map and its residual
    prev_f = np.zeros((n, 5))
    prev_g = np.zeros((n, 5))
    has_prev = np.zeros(n, dtype=bool)
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        aa, bb, cc = a[idx], b[idx], c[idx]
        xci, yci = xc[idx], yc[idx]
        det = aa * bb - cc * cc
        det = np.where(det > 0, det, np.nan)
        ia, ib, ic = bb / det, aa / det, -cc / det
        sw, xw, yw, pw, xm, ym = st, x, y, powx_t, xmax, ymax
        if windowed:  # only the pixels where some active stamp's weight can exceed 1e-16 of its peak
            i0, i1 = _window(float(aa.max()), float(np.abs(xci).max()), nx)
            j0, j1 = _window(float(bb.max()), float(np.abs(yci).max()), ny)
            sw, xw, yw, pw = st[j0:j1, :, i0:i1], x[i0:i1], y[j0:j1], powx_t[:, i0:i1]
            xm, ym = float(max(-xw[0], xw[-1])), float(max(-yw[0], yw[-1]))
        S = _weighted_sums(sw if idx.size == n else sw[:, idx], xw, yw, pw, ia, ib, ic, xci, yci, xm, ym)
        m0 = S[:, 0, 0]
        good = np.isfinite(m0) & (m0 > 0)
        m0 = np.where(good, m0, 1.0)
        mux = S[:, 1, 0] / m0
        muy = S[:, 0, 1] / m0
        mx = mux - xci
        my = muy - yci
        qa = S[:, 2, 0] / m0 - mux * mux
        qb = S[:, 0, 2] / m0 - muy * muy
        qc = S[:, 1, 1] / m0 - mux * muy
        # Gaussian closed form: M_new^{-1} = Q^{-1} - M^{-1}
        qdet = qa * qb - qc * qc
        # (a weight collapsing onto a sub-pixel core gives qdet near 0: overflows to inf, which pd rejects)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            na_i = qb / qdet - ia
            nb_i = qa / qdet - ib
            nc_i = -qc / qdet - ic
            ndet_i = na_i * nb_i - nc_i * nc_i
            pd = (qdet > 0) & (na_i > 0) & (ndet_i > 0)
            na = np.where(pd, nb_i / ndet_i, 2 * qa)
            nb = np.where(pd, na_i / ndet_i, 2 * qb)
            nc = np.where(pd, -nc_i / ndet_i, 2 * qc)
        # keep the weight inside the stamp
        na, nb = np.clip(na, _FLOOR, lim), np.clip(nb, _FLOOR, lim)
        nc = np.clip(nc, -0.999 * np.sqrt(na * nb), 0.999 * np.sqrt(na * nb))
        change = np.abs(na - aa) + np.abs(nb - bb) + np.abs(nc - cc)
        scale = np.abs(aa) + np.abs(bb)
        conv = (change <= tol * scale) & np.isfinite(change)
        # F(theta): the plain update of (Ixx, Iyy, Ixy, xc, yc); a converged stamp keeps it
        f = np.stack([np.where(good, na, aa), np.where(good, nb, bb), np.where(good, nc, cc),
                      xci + np.where(good, mx, 0.0), yci + np.where(good, my, 0.0)], axis=1)
        theta = np.stack([aa, bb, cc, xci, yci], axis=1)
        nxt = _anderson_step(f, theta, prev_f[idx], prev_g[idx],
                             has_prev[idx] & good & ~conv & (it < _ANDERSON_STEPS), scale, lim, nx / 4, ny / 4)
        prev_f[idx] = f
        prev_g[idx] = f - theta
        has_prev[idx] = good
        a[idx], b[idx], c[idx], xc[idx], yc[idx] = nxt.T
        ok[idx] &= good
        converged[idx] = conv
        active[idx] = ~(conv | ~ok[idx])
    ok &= converged & np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    # a PSF narrower than about 0.8 px (sigma) has no fixed point: the weight shrinks onto the floor that
    # keeps it inside the stamp's pixel grid, where the iteration stops changing -- not a measurement
    ok &= (a > _FLOOR * (1 + 1e-6)) & (b > _FLOOR * (1 + 1e-6))
    out = (a, b, c, xc, yc, ok)
    if single:
        return tuple(v[0] for v in out)
    return out


#: ``-2 ln`` of the weight, relative to its peak, below which pixels are left out of the sums (1e-16).
_WINDOW_Q = 2.0 * np.log(1e16)
#: Stamps smaller than this (along both axes) are always summed whole: 8.6 sigma of a 2 px core is
#: 35 px across, so a window would rarely leave out a pixel and would still cost its arithmetic.
_WINDOW_MIN_SIZE = 41


def _window(var, centre, n):
    """Index range ``(lo, hi)`` of the ``n`` pixel offsets ``i - n // 2`` where a weight can exceed 1e-16 of its peak.

    ``var`` and ``centre`` are the largest moment ``M_aa`` and the largest
    centroid offset ``|c_a|`` along the axis over the stack.  An elliptical
    Gaussian weight of moment matrix ``M`` is below ``exp(-q / 2)`` of its
    peak wherever ``d^T M^-1 d > q``, and that region contains every pixel
    whose offset along an axis exceeds ``sqrt(q M_aa)`` from the centroid.
    With ``q = 2 ln 1e16`` the pixels left out change the weighted sums by
    less than their rounding (the adaptive weight shrinks from its first,
    broad guess to the PSF's core within a few steps, after which a 63 px
    stamp of a 2.3 px PSF is summed over about 41 x 39 pixels).
    """
    half = centre + math.sqrt(_WINDOW_Q * var) if var >= 0 else math.nan
    c = n // 2
    if not half < c:  # the whole axis (or NaN moments: no window)
        return 0, n
    k = int(half)
    return c - k, c + k + 1


#: Iterations after which a stamp that has not converged continues with the plain map alone (which
#: converges wherever it did before): insurance against an extrapolation that keeps overshooting.
_ANDERSON_STEPS = 40


def _anderson_step(f, theta, prev_f, prev_g, use, scale, lim, xlim, ylim):
    """The next iterate: ``F(theta)``, or its Anderson (depth 1) extrapolation where ``use`` and it is safe.

    The adaptive-moment map converges linearly on non-Gaussian PSFs (rate about
    0.5 on PSFEx models: 23 iterations to ``tol = 1e-9``).  With the residual
    ``g = F(theta) - theta``, Anderson mixing takes
    ``theta' = F_k - gamma (F_k - F_{k-1})``, ``gamma = <g_k, dg> / <dg, dg>``,
    ``dg = g_k - g_{k-1}`` (moments scaled by ``Ixx + Iyy``, centroids by its
    square root), which removes the dominant error mode.  The extrapolation is
    used only where it stays a positive-definite moment matrix inside the
    stamp; the fixed point, and the convergence test on ``F(theta) - theta``,
    are the plain iteration's (Walker & Ni 2011, SIAM J. Numer. Anal. 49, 1715).
    """
    nxt = f.copy()
    if not use.any():
        return nxt
    w = np.empty_like(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        w[:, :3] = 1.0 / scale[:, None]
        w[:, 3:] = 1.0 / np.sqrt(scale)[:, None]
        g = (f - theta) * w
        dg = g - prev_g * w
        gamma = np.sum(g * dg, axis=1) / np.sum(dg * dg, axis=1)
        acc = f - gamma[:, None] * (f - prev_f)
        a, b, c = acc[:, 0], acc[:, 1], acc[:, 2]
        safe = (use & np.isfinite(acc).all(axis=1) & np.isfinite(gamma) & (a > 1e-4) & (b > 1e-4) & (a < lim)
                & (b < lim) & (a * b - c * c > 1e-3 * a * b) & (np.abs(acc[:, 3]) <= xlim)
                & (np.abs(acc[:, 4]) <= ylim))
    nxt[safe] = acc[safe]
    return nxt


def _weighted_sums(st, x, y, powx_t, ia, ib, ic, xc, yc, xmax, ymax):
    """``S[n, i, j] = sum w I x^i y^j`` (``i + j <= 2``) for the weights of one iteration.

    The stamps come as ``st`` of shape (ny, n, nx), row ``y`` of every stamp
    together, so that each step below is a pass over long contiguous rows
    rather than over rows of ``nx`` values (the adaptive moments of 128 stamps
    of 63 px: 14.6 -> 12.3 ms against the (n, ny, nx) layout; the same for
    small stamps).  For a factored weight ``w = e_x(x) e_y(y) exp(-M^-1_xy x y)``,
    the cross term is ``z^y`` with ``z = exp(-M^-1_xy x)`` (one exponential per
    column instead of one per pixel): the rows of ``e_x z^y I`` are built
    outwards from ``y = 0`` by products with ``z`` or ``1 / z`` (the relative
    rounding error grows by about ``|y| eps``, below 1e-14 for any stamp size
    used here), one matrix product sums them over ``x`` against
    ``(1, x, x^2)`` and a small one over ``y`` against ``e_y (1, y, y^2)``.
    """
    ny, n, nx = st.shape
    out = np.zeros((n, 3, 3))
    sep = _separable_ok(np.nan_to_num(ic, nan=np.inf), xc, yc, xmax, ymax)
    powy = np.stack([np.ones_like(y), y, y * y], axis=-1)  # (ny, 3)
    if sep.any():
        j = np.flatnonzero(sep)
        m = j.size
        icj, xcj, ycj = ic[j], xc[j], yc[j]
        ax = -0.5 * ia[j, None] * (x[None] - xcj[:, None]) ** 2 + (icj * ycj)[:, None] * x[None]
        ay = -0.5 * ib[j, None] * (y[None] - ycj[:, None]) ** 2 + (icj * xcj)[:, None] * y[None]
        ex = np.exp(ax - ax.max(axis=1, keepdims=True))  # (m, nx)
        ey = np.exp(ay - ay.max(axis=1, keepdims=True))  # (m, ny)
        G = np.empty((ny, m, nx))
        c = int(np.flatnonzero(y == 0)[0])
        G[c] = ex
        if np.any(icj != 0):
            z = np.exp(-icj[:, None] * x[None, :])  # (m, nx)
            zi = 1.0 / z
            for r in range(c + 1, ny):
                np.multiply(G[r - 1], z, out=G[r])
            for r in range(c - 1, -1, -1):
                np.multiply(G[r + 1], zi, out=G[r])
        else:
            G[:] = ex
        G *= st if m == n else st[:, j]
        B = (powx_t @ G.reshape(ny * m, nx).T).reshape(3, ny, m)  # sum_x e_x z^y I x^i
        B *= ey.T
        out[j] = np.tensordot(B, powy, axes=([1], [0])).transpose(1, 0, 2)  # sum_y (.) e_y y^k
    if not sep.all():
        j = np.flatnonzero(~sep)
        s = st[:, j].transpose(1, 0, 2)  # (m, ny, nx)
        dx = x[None, None, :] - xc[j, None, None]
        dy = y[None, :, None] - yc[j, None, None]
        q = ia[j, None, None] * dx * dx + ib[j, None, None] * dy * dy + 2 * ic[j, None, None] * dx * dy
        w = np.exp(-0.5 * np.minimum(q, 700.0)) * s
        wx = w.sum(axis=1)  # (m, nx)
        wy = w.sum(axis=2)
        out[j, 0, 0] = wx.sum(axis=1)
        out[j, 1, 0] = wx @ x
        out[j, 2, 0] = wx @ (x * x)
        out[j, 0, 1] = wy @ y
        out[j, 0, 2] = wy @ (y * y)
        out[j, 1, 1] = np.einsum("myx,x,y->m", w, x, y)
    return out


#: Adaptive moments of recently measured single stamps, by the stamp's exact bytes (see :func:`stamp_moments`).
_STAMP_MOMENTS: dict = {}
_STAMP_MOMENTS_SIZE = 8
_STAMP_MOMENTS_LOCK = threading.Lock()  # tasks in several threads share the memo


def collapsed(moments) -> np.ndarray:
    """Where adaptive moments collapsed along both axes: an undersampled PSF, narrower than
    :data:`UNDERSAMPLED_SIGMA` along every axis.

    ``moments`` holds rows ``(ixx, iyy, ...)`` as :func:`adaptive_moments` returns them (its ``ok`` is
    False there): ``ixx`` and ``iyy`` on the iteration's floor.  A PSF narrow along one axis only
    (its weight collapsed along that axis, not the other) is not reported.

    Examples
    --------
    >>> y, x = np.mgrid[-7:8, -7:8]
    >>> stamps = np.stack([np.exp(-(x * x + y * y) / (2 * s * s)) for s in (0.5, 1.5)])
    >>> ixx, iyy, _, _, _, ok = adaptive_moments(stamps)
    >>> collapsed(np.stack([ixx, iyy], axis=1)).tolist(), ok.tolist()
    ([True, False], [False, True])
    """
    m = np.asarray(moments, dtype=np.float64)
    edge = _FLOOR * (1 + 1e-6)
    return (m[..., 0] <= edge) & (m[..., 1] <= edge)


def stamp_moments(stamp):
    """:func:`adaptive_moments` of one 2-d stamp as a tuple of 1-element arrays, remembered by its bytes.

    For the stamp that recurs in every fit of a batch (a constant reference
    PSF): measured once, then looked up (the last few stamps are kept).
    """
    s = np.ascontiguousarray(stamp, dtype=np.float64)
    key = (s.shape, s.tobytes())
    with _STAMP_MOMENTS_LOCK:
        out = _STAMP_MOMENTS.get(key)
    if out is None:
        out = adaptive_moments(s[None])  # (outside the lock: two threads may measure the same stamp, alike)
        for v in out:
            v.setflags(write=False)
        with _STAMP_MOMENTS_LOCK:
            while len(_STAMP_MOMENTS) >= _STAMP_MOMENTS_SIZE:
                _STAMP_MOMENTS.pop(next(iter(_STAMP_MOMENTS)))
            _STAMP_MOMENTS[key] = out
    return out


def _reset_after_fork():
    """In a forked child no other thread exists: a new lock for the memo.

    A fork taken while another thread of the parent held the lock copied it
    held, and every measurement in the child would have waited on it for good.
    """
    global _STAMP_MOMENTS_LOCK
    _STAMP_MOMENTS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def measure_shape(stamp, position=(0.0, 0.0)) -> Quadrupole:
    """Adaptive moments of one stamp as a :class:`Quadrupole`.

    Parameters
    ----------
    stamp : array_like, shape (ny, nx)
        One centred PSF image (use :func:`adaptive_moments` for a stack).
    position : (float, float)
        Where the stamp was realized, named by the error.

    Raises
    ------
    psfmatch.errors.InvalidInputError
        If ``stamp`` is not one 2-d, non-empty array of real numbers, or ``position`` is not a pair of
        finite numbers.
    psfmatch.errors.PsfComputeShapeError
        If the iteration fails (no positive flux, or no convergence).
    """
    from .errors import PsfComputeShapeError
    from .geom import as_point

    position = as_point(position, "measure_shape's position")
    ixx, iyy, ixy, xc, yc, ok = adaptive_moments(_real_stamps(stamp, "measure_shape's stamp", (2,),
                                                               " (measure a stack with adaptive_moments)"))
    if not ok:
        raise PsfComputeShapeError(position, "adaptive moments did not converge (a PSF narrower than about 0.8 px "
                                             "sigma is too undersampled for them, as is a stamp without a clear "
                                             "core)")
    return Quadrupole(float(ixx), float(iyy), float(ixy), float(xc), float(yc))
