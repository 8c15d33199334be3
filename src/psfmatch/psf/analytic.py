"""Analytic PSF models: Gaussian, double Gaussian, Moffat and a spatially varying Gaussian.

All are point-sampled at pixel centres and normalized to unit sum over their
stamp, as LSST's ``SingleGaussianPsf`` and ``DoubleGaussianPsf`` are.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from ..errors import InvalidInputError
from ..geom import Box2I, Extent2I, Point2D
from .base import Psf, _array_key, _check_odd_size, _overrides_model

__all__ = ["GaussianPsf", "DoubleGaussianPsf", "MoffatPsf", "VariableGaussianPsf", "elliptical_gaussian",
           "elliptical_gaussian_stack"]


def _positive(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number; got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise InvalidInputError(f"{name} must be positive and finite; got {value!r}")
    return v


def _sigma(name, value):
    """:func:`_positive`, for a Gaussian width whose square the profile divides by.

    Raises
    ------
    InvalidInputError
        If ``value`` is not a positive finite number, or its square is not a normal float (it
        underflows, as ``1e-200 ** 2`` does, or overflows): the profile would be NaN.
    """
    v = _positive(name, value)
    if not sys.float_info.min <= v * v <= sys.float_info.max:
        raise InvalidInputError(f"{name} = {value!r} px is outside the range a Gaussian width can be computed with "
                                f"(its square is not a normal float); give the width in pixels, as in 2.0")
    return v


def _is_zero(value) -> bool:
    """Whether ``value`` is a number equal to zero (False for anything that is not a number)."""
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def _grid(width, height, dx=0.0, dy=0.0):
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return x - width // 2 - dx, y - height // 2 - dy


@functools.lru_cache(maxsize=32)
def _axes(width, height):
    """Read-only pixel offsets from the stamp centre: ``x`` (width,), ``y`` (height,) and ``y x`` (height, width)."""
    x = np.arange(width, dtype=np.float64) - width // 2
    y = np.arange(height, dtype=np.float64) - height // 2
    xy = y[:, None] * x[None, :]
    for a in (x, y, xy):
        a.setflags(write=False)
    return x, y, xy


def elliptical_gaussian(width, height, ixx, iyy, ixy=0.0, dx=0.0, dy=0.0) -> np.ndarray:
    """A point-sampled elliptical Gaussian of covariance ``[[ixx, ixy], [ixy, iyy]]``, unit sum.

    ``exp(-q/2)`` with ``q = (iyy x^2 - 2 ixy x y + ixx y^2) / det`` is evaluated
    as the outer product of the two 1-d factors times ``exp(ixy x y / det)``
    (skipped for a round or axis-aligned Gaussian): the same values to rounding
    as the direct 2-d evaluation, several times faster on small stamps.
    """
    det = ixx * iyy - ixy * ixy
    if not det > 0:
        raise InvalidInputError(f"Gaussian covariance must be positive definite; got ixx={ixx}, iyy={iyy}, ixy={ixy}")
    x, y, xy = _axes(width, height)
    if dx or dy:
        x, y = x - dx, y - dy
        xy = y[:, None] * x[None, :]
    cross = ixy / det
    if cross and abs(cross) * float(np.abs(xy).max()) > 300.0:  # factors could overflow: direct form
        q = (iyy * x[None, :] ** 2 - 2 * ixy * xy + ixx * y[:, None] ** 2) / det
        img = np.exp(-0.5 * q)
        return img / img.sum()
    img = np.exp((-0.5 * ixx / det) * (y * y))[:, None] * np.exp((-0.5 * iyy / det) * (x * x))[None, :]
    if cross:
        img *= np.exp(cross * xy)
    return img / img.sum()


def elliptical_gaussian_stack(width, height, ixx, iyy, ixy):
    """:func:`elliptical_gaussian` (centred) for arrays of covariances: a stack (n, height, width).

    The same separable evaluation, vectorized over the stamps; returns None when
    some stamp would need the direct form (its factors could overflow), for the
    caller to evaluate one by one.
    """
    ixx, iyy, ixy = (np.asarray(v, dtype=np.float64) for v in (ixx, iyy, ixy))
    det = ixx * iyy - ixy * ixy
    if not np.all(det > 0):
        return None
    x, y, xy = _axes(width, height)
    cross = ixy / det
    if np.any(np.abs(cross) * float(np.abs(xy).max()) > 300.0):
        return None
    img = (np.exp((-0.5 * ixx / det)[:, None] * (y * y)[None, :])[:, :, None]
           * np.exp((-0.5 * iyy / det)[:, None] * (x * x)[None, :])[:, None, :])
    if np.any(cross):
        img *= np.exp(cross[:, None, None] * xy[None])
    return img / img.sum(axis=(1, 2), keepdims=True)


class _AnalyticPsf(Psf):
    def __init__(self, width, height):
        _check_odd_size(width, height)
        self._w, self._h = int(width), int(height)

    def _kernel_image(self, x, y):
        return self._image_at(x, y, 0.0, 0.0)

    def computeBBox(self, position=None):
        return Box2I((-(self._w // 2), -(self._h // 2)), (self._w, self._h))

    def getDimensions(self) -> Extent2I:
        return Extent2I(self._w, self._h)

    def isSpatiallyVarying(self):
        """False: the same image everywhere (True for a subclass that redefines the model's methods)."""
        return _overrides_model(type(self))


class GaussianPsf(_AnalyticPsf):
    """A round Gaussian PSF, LSST's ``SingleGaussianPsf``.

    Parameters
    ----------
    width, height : int
        Odd stamp size in pixels.
    sigma : float
        Gaussian sigma in pixels.

    Raises
    ------
    InvalidInputError
        If ``sigma`` is not a positive finite number whose square is a normal float.

    Examples
    --------
    >>> psf = GaussianPsf(25, 25, 2.0)
    >>> image = psf.computeKernelImage((100.0, 200.0))   # centred, odd, unit sum
    >>> image.shape, round(float(image.sum()), 12)
    ((25, 25), 1.0)
    >>> round(psf.computeShape((100.0, 200.0)).sigma, 4)   # adaptive moments
    2.0
    >>> psf.resized(31, 31)
    GaussianPsf(31, 31, sigma=2.0)
    """

    name = "GaussianPsf"

    def __init__(self, width, height, sigma):
        super().__init__(width, height)
        self._sigma = _sigma("sigma", sigma)

    def getSigma(self) -> float:
        return self._sigma

    def _image_at(self, x, y, dx, dy):
        s2 = self._sigma ** 2
        return elliptical_gaussian(self._w, self._h, s2, s2, 0.0, dx, dy)

    def resized(self, width, height):
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(width, height)
        return GaussianPsf(width, height, self._sigma)

    def _eq_key(self):
        return self._w, self._h, self._sigma

    def __repr__(self):
        return f"GaussianPsf({self._w}, {self._h}, sigma={self._sigma!r})"


class DoubleGaussianPsf(_AnalyticPsf):
    """The sum of two concentric round Gaussians, LSST's ``DoubleGaussianPsf``.

    The image is ``exp(-r^2 / 2 sigma1^2) + b exp(-r^2 / 2 sigma2^2)``, normalized:
    ``b`` is the ratio of the second component's peak to the first's (LSST's
    semantics), so the second component holds the flux fraction
    ``b sigma2^2 / (sigma1^2 + b sigma2^2)``.

    Parameters
    ----------
    width, height : int
        Odd stamp size in pixels.
    sigma1 : float
        Core sigma in pixels.
    sigma2 : float, optional
        Wing sigma, positive; None (the default) means ``2 * sigma1``.  It only
        matters when ``b > 0``; with ``b == 0``, ``sigma2 = 0`` (LSST's
        "unused") is accepted and taken as the default.
    b : float
        Peak ratio of the wing to the core, >= 0.

    Raises
    ------
    InvalidInputError
        If a sigma is not positive and finite (``sigma2 <= 0`` with ``b > 0``
        included) or its square is not a normal float (``1e-200``), or ``b`` is
        negative or not finite.
    """

    name = "DoubleGaussianPsf"

    def __init__(self, width, height, sigma1, sigma2=None, b=0.0):
        super().__init__(width, height)
        self._sigma1 = _sigma("sigma1", sigma1)
        try:
            self._b = float(b)
        except (TypeError, ValueError):
            raise InvalidInputError(f"b must be a number; got {b!r}") from None
        if not (np.isfinite(self._b) and self._b >= 0):
            raise InvalidInputError(f"b (the wing-to-core peak ratio) must be >= 0; got {b!r}")
        if sigma2 is None or (self._b == 0 and _is_zero(sigma2)):  # no wing: LSST's sigma2 = 0 means unused
            self._sigma2 = 2.0 * self._sigma1
        else:
            try:
                self._sigma2 = _sigma("sigma2", sigma2)
            except InvalidInputError as exc:
                used = f", used since b = {self._b:g} > 0" if self._b > 0 else ""
                raise InvalidInputError(f"DoubleGaussianPsf {exc} (the wing's sigma{used}); omit sigma2 (None) for "
                                        "the default 2 * sigma1") from None

    def getSigma1(self) -> float:
        return self._sigma1

    def getSigma2(self) -> float:
        return self._sigma2

    def getB(self) -> float:
        return self._b

    def _image_at(self, x, y, dx, dy):
        gx, gy = _grid(self._w, self._h, dx, dy)
        r2 = gx * gx + gy * gy
        img = np.exp(-0.5 * r2 / self._sigma1 ** 2)
        if self._b > 0:
            img = img + self._b * np.exp(-0.5 * r2 / self._sigma2 ** 2)
        return img / img.sum()

    def resized(self, width, height):
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(width, height)
        return DoubleGaussianPsf(width, height, self._sigma1, self._sigma2, self._b)

    def _eq_key(self):
        return self._w, self._h, self._sigma1, self._sigma2, self._b

    def __repr__(self):
        return (f"DoubleGaussianPsf({self._w}, {self._h}, sigma1={self._sigma1!r}, "
                f"sigma2={self._sigma2!r}, b={self._b!r})")


class MoffatPsf(_AnalyticPsf):
    """A round Moffat PSF, ``(1 + r^2 / alpha^2)^-beta`` with ``alpha = fwhm / (2 sqrt(2^(1/beta) - 1))``.

    Parameters
    ----------
    width, height : int
        Odd stamp size in pixels.
    fwhm : float
        Full width at half maximum, pixels.
    beta : float
        Moffat index, > 1 (finite flux).

    References
    ----------
    Moffat, A. F. J. 1969, A&A 3, 455.
    """

    name = "MoffatPsf"

    def __init__(self, width, height, fwhm, beta):
        super().__init__(width, height)
        self._fwhm = _positive("fwhm", fwhm)
        self._beta = _positive("beta", beta)
        if self._beta <= 1:
            raise InvalidInputError(f"Moffat beta must be > 1 for finite flux; got {beta!r}")
        # 2^(1/beta) - 1 as expm1: exact for large beta (the difference underflowed to 0, a flat stamp, at 1e300)
        self._alpha = self._fwhm / (2.0 * math.sqrt(math.expm1(math.log(2.0) / self._beta)))

    def getFwhm(self) -> float:
        return self._fwhm

    def getBeta(self) -> float:
        return self._beta

    def getAlpha(self) -> float:
        return self._alpha

    def _image_at(self, x, y, dx, dy):
        gx, gy = _grid(self._w, self._h, dx, dy)
        # (1 + r^2/alpha^2)^-beta as exp(-beta log1p(.)): exact for large beta, where 1 + r^2/alpha^2 rounds to 1
        img = np.exp(-self._beta * np.log1p((gx / self._alpha) ** 2 + (gy / self._alpha) ** 2))
        return img / img.sum()

    def resized(self, width, height):
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(width, height)
        return MoffatPsf(width, height, self._fwhm, self._beta)

    def _eq_key(self):
        return self._w, self._h, self._fwhm, self._beta

    def __repr__(self):
        return f"MoffatPsf({self._w}, {self._h}, fwhm={self._fwhm!r}, beta={self._beta!r})"


class VariableGaussianPsf(_AnalyticPsf):
    """An elliptical Gaussian whose size and ellipticity are polynomials in position.

    With ``u, v`` the position scaled to [-1, 1] over ``bbox`` (pixel edges), each
    of ``sigma``, ``e1`` and ``e2`` is ``sum_k c_k m_k(u, v)`` over the monomials
    ``1, u, v, u^2, u v, v^2, u^3, ...``.  The covariance at a position is
    ``sigma^2 [[1 + e1, e2], [e2, 1 - e1]]`` (so ``sigma`` is the trace radius
    and ``e`` the distortion).

    Parameters
    ----------
    width, height : int
        Odd stamp size.
    bbox : Box2I
        The domain over which the polynomials are scaled (usually the exposure's box); not empty.
    sigma, e1, e2 : sequence of float
        Polynomial coefficients (a scalar means a constant).
    """

    name = "VariableGaussianPsf"

    def __init__(self, width, height, bbox, sigma, e1=(0.0,), e2=(0.0,)):
        super().__init__(width, height)
        if not isinstance(bbox, Box2I):
            raise InvalidInputError(f"bbox must be a Box2I; got {type(bbox).__name__}")
        if bbox.isEmpty():
            raise InvalidInputError(f"VariableGaussianPsf bbox {bbox!r} is empty; give the (non-empty) domain "
                                    "over which the polynomials are scaled, usually the exposure's box")
        self._bbox = bbox
        self._coeffs = {}
        for name, c in (("sigma", sigma), ("e1", e1), ("e2", e2)):
            try:
                arr = np.atleast_1d(np.array(c, dtype=float))
            except (TypeError, ValueError):
                raise InvalidInputError(f"{name} must be a number or a sequence of polynomial coefficients; "
                                        f"got {c!r}") from None
            if arr.ndim != 1:
                raise InvalidInputError(f"{name} must be a number or a 1-d sequence of polynomial coefficients; "
                                        f"got shape {arr.shape}")
            n = len(arr)
            order = int(round((np.sqrt(8 * n + 1) - 3) / 2))
            if n == 0 or (order + 1) * (order + 2) // 2 != n or not np.all(np.isfinite(arr)):
                raise InvalidInputError(
                    f"{name} needs (o+1)(o+2)/2 finite coefficients (1, 3, 6, ...) for some order o >= 0; "
                    f"got {n}: {arr.tolist()}")
            self._coeffs[name] = arr

    def _uv(self, x, y):
        b = self._bbox
        u = (x - (b.getMinX() - 0.5)) / b.getWidth() * 2 - 1
        v = (y - (b.getMinY() - 0.5)) / b.getHeight() * 2 - 1
        return u, v

    @staticmethod
    def _poly(c, u, v):
        out, k, order = 0.0, 0, 0
        while k < len(c):
            for j in range(order + 1):
                out += c[k] * u ** (order - j) * v ** j
                k += 1
            order += 1
        return out

    def parameters(self, position, _arrays=False):
        """``(sigma, e1, e2)`` at ``position`` (with ``_arrays``, ``position`` is a pair of coordinate arrays)."""
        x, y = position
        fast = self.__dict__.get("_fast")
        if fast is None:  # plain floats: the same IEEE arithmetic as on numpy scalars, without their overhead
            b = self._bbox
            fast = self._fast = (float(b.getMinX() - 0.5), float(b.getWidth()), float(b.getMinY() - 0.5),
                                 float(b.getHeight()), tuple([float(v) for v in self._coeffs[n]]
                                                             for n in ("sigma", "e1", "e2")))
        x0, w, y0, h, coeffs = fast
        u = (x - x0) / w * 2 - 1
        v = (y - y0) / h * 2 - 1
        if _arrays:
            return tuple(np.broadcast_to(self._poly(c, u, v), np.shape(u)).astype(np.float64) for c in coeffs)
        return tuple(float(self._poly(c, u, v)) for c in coeffs)

    def _image_at(self, x, y, dx, dy):
        s, e1, e2 = self.parameters((x, y))
        if not (s > 0 and e1 * e1 + e2 * e2 < 1):
            raise InvalidInputError(f"VariableGaussianPsf parameters sigma={s:.4g}, e=({e1:.4g}, {e2:.4g}) "
                                    "are not a valid Gaussian here")
        s2 = s * s
        return elliptical_gaussian(self._w, self._h, s2 * (1 + e1), s2 * (1 - e1), s2 * e2, dx, dy)

    def _kernel_images(self, xs, ys):
        s, e1, e2 = self.parameters((np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)),
                                    _arrays=True)
        if not np.all((s > 0) & (e1 * e1 + e2 * e2 < 1)):
            return None  # the one-by-one path names the first bad position
        s2 = s * s
        return elliptical_gaussian_stack(self._w, self._h, s2 * (1 + e1), s2 * (1 - e1), s2 * e2)

    def getAveragePosition(self):
        return self._bbox.getCenter()

    def getBBox(self) -> Box2I:
        return self._bbox

    def isSpatiallyVarying(self):
        return any(len(c) > 1 for c in self._coeffs.values()) or _overrides_model(type(self))

    def resized(self, width, height):
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(width, height)
        return VariableGaussianPsf(width, height, self._bbox, self._coeffs["sigma"], self._coeffs["e1"],
                                   self._coeffs["e2"])

    def _eq_key(self):
        return (self._w, self._h, self._bbox) + tuple(_array_key(self._coeffs[n]) for n in ("sigma", "e1", "e2"))

    def __repr__(self):
        c = {k: v.tolist() for k, v in self._coeffs.items()}
        return f"VariableGaussianPsf({self._w}, {self._h}, {self._bbox!r}, **{c})"


# Point2D is re-exported for convenience of `from psfmatch.psf import Point2D`
Point2D = Point2D
