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

from dataclasses import dataclass

import numpy as np

__all__ = ["Quadrupole", "adaptive_moments", "measure_shape"]


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


def adaptive_moments(stamps, guess_sigma=None, max_iter=100, tol=1e-9):
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

    Returns
    -------
    ixx, iyy, ixy, xc, yc : ndarray
        Moments (pixels squared) and centroid offsets from the centre pixel.
    ok : ndarray of bool
        False where the iteration did not converge or the image has no positive flux.
    """
    s = np.asarray(stamps, dtype=np.float64)
    single = s.ndim == 2
    if single:
        s = s[None]
    n, ny, nx = s.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    xx = (xx - nx // 2).astype(np.float64)
    yy = (yy - ny // 2).astype(np.float64)
    flux = s.sum(axis=(1, 2))
    ok = np.isfinite(flux) & (flux > 0)
    safe = np.where(ok, flux, 1.0)
    xc = np.einsum("nij,ij->n", s, xx) / safe
    yc = np.einsum("nij,ij->n", s, yy) / safe
    if guess_sigma is None:
        r2 = np.einsum("nij,ij->n", s, xx ** 2 + yy ** 2) / safe
        guess = np.clip(np.sqrt(np.abs(r2) / 2.0), 0.5, max(nx, ny) / 4.0)
    else:
        guess = np.broadcast_to(np.asarray(guess_sigma, dtype=float), (n,)).copy()
    xc = np.clip(np.where(ok, xc, 0.0), -nx / 4, nx / 4)
    yc = np.clip(np.where(ok, yc, 0.0), -ny / 4, ny / 4)
    a = guess ** 2  # M = [[a, c], [c, b]]
    b = guess ** 2
    c = np.zeros(n)
    converged = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        det = a * b - c * c
        det = np.where(det > 0, det, np.nan)
        ia, ib, ic = b / det, a / det, -c / det
        dx = xx[None] - xc[:, None, None]
        dy = yy[None] - yc[:, None, None]
        q = ia[:, None, None] * dx * dx + ib[:, None, None] * dy * dy + 2 * ic[:, None, None] * dx * dy
        w = np.exp(-0.5 * np.minimum(q, 700.0)) * s
        m0 = w.sum(axis=(1, 2))
        good = np.isfinite(m0) & (m0 > 0)
        m0 = np.where(good, m0, 1.0)
        mx = np.einsum("nij,nij->n", w, dx) / m0
        my = np.einsum("nij,nij->n", w, dy) / m0
        dx = dx - mx[:, None, None]
        dy = dy - my[:, None, None]
        qa = np.einsum("nij,nij->n", w, dx * dx) / m0
        qb = np.einsum("nij,nij->n", w, dy * dy) / m0
        qc = np.einsum("nij,nij->n", w, dx * dy) / m0
        # Gaussian closed form: M_new^{-1} = Q^{-1} - M^{-1}
        qdet = qa * qb - qc * qc
        with np.errstate(divide="ignore", invalid="ignore"):
            na_i = qb / qdet - ia
            nb_i = qa / qdet - ib
            nc_i = -qc / qdet - ic
            ndet_i = na_i * nb_i - nc_i * nc_i
            pd = (qdet > 0) & (na_i > 0) & (ndet_i > 0)
            na = np.where(pd, nb_i / ndet_i, 2 * qa)
            nb = np.where(pd, na_i / ndet_i, 2 * qb)
            nc = np.where(pd, -nc_i / ndet_i, 2 * qc)
        # keep the weight inside the stamp
        lim = (max(nx, ny) / 2.0) ** 2
        na, nb = np.clip(na, 1e-4, lim), np.clip(nb, 1e-4, lim)
        nc = np.clip(nc, -0.999 * np.sqrt(na * nb), 0.999 * np.sqrt(na * nb))
        change = np.abs(na - a) + np.abs(nb - b) + np.abs(nc - c)
        scale = np.abs(a) + np.abs(b)
        xc = xc + np.where(good, mx, 0.0)
        yc = yc + np.where(good, my, 0.0)
        a, b, c = np.where(good, na, a), np.where(good, nb, b), np.where(good, nc, c)
        ok &= good
        converged = (change <= tol * scale) & np.isfinite(change)
        if np.all(converged | ~ok):
            break
    ok &= converged & np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    out = (a, b, c, xc, yc, ok)
    if single:
        return tuple(v[0] for v in out)
    return out


def measure_shape(stamp, position=(0.0, 0.0)) -> Quadrupole:
    """Adaptive moments of one stamp as a :class:`Quadrupole`.

    Raises
    ------
    psfmatch.errors.PsfComputeShapeError
        If the iteration fails (no positive flux, or no convergence).
    """
    from .errors import PsfComputeShapeError

    ixx, iyy, ixy, xc, yc, ok = adaptive_moments(stamp)
    if not ok:
        raise PsfComputeShapeError(position, "adaptive moments did not converge")
    return Quadrupole(float(ixx), float(iyy), float(ixy), float(xc), float(yc))
