"""Spatial functions of a kernel's coefficients: Chebyshev and plain polynomials over a box.

Terms are ordered as afw orders them: ``1, x, y, x^2, x y, y^2, x^3, ...``, i.e.
term ``(p, q)`` is ``X_p(x) Y_q(y)`` for ``n = p + q = 0..order`` and ``q = 0..n``.

``chebyshev1``: ``X_p(x) = T_p(x')`` with ``x' = (x - x_c) 2 / (x_max - x_min)``
on the box's pixel edges (``Box2D``), so ``x'`` spans [-1, 1] over the exposure.
``polynomial``: ``X_p(x) = x^p`` in raw parent pixel coordinates (LSST's
``PolynomialFunction2``).
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev as npcheb

from ..errors import InvalidConfigError, InvalidInputError
from ..geom import Box2D, Box2I
from .basis import MAX_DEGREE, _whole_number

__all__ = ["SpatialFunction", "SPATIAL_MODEL_TYPES", "full_column_rank", "axis_degree_caps"]

SPATIAL_MODEL_TYPES = ("chebyshev1", "polynomial")


def full_column_rank(F) -> bool:
    """Whether the spatial design ``F`` (n positions x n terms) determines every term.

    Columns are scaled to unit maximum first (raw-pixel polynomials span many decades); the
    rank is full when the smallest singular value exceeds ``1e-8`` times the largest.
    """
    Fs = F / np.maximum(np.abs(F).max(axis=0), 1e-300)
    if Fs.shape[0] < Fs.shape[1]:
        return False
    s = np.linalg.svd(Fs, compute_uv=False)
    return bool(s[-1] > 1e-8 * s[0])


def axis_degree_caps(x, y) -> tuple[int, int]:
    """The highest degree along x and along y that positions ``(x, y)`` can determine.

    ``n`` distinct coordinates along an axis determine a polynomial of degree
    at most ``n - 1`` along it: candidates on one row of cells (a strip)
    constrain the variation along x but nothing along y, and two rows a
    linear one.  A term ``(p, q)`` of a :class:`SpatialFunction` is
    constrained only when ``p <= cap_x`` and ``q <= cap_y`` (for positions
    on a grid, that is also sufficient; scattered positions may still leave
    the design rank-deficient, which :func:`full_column_rank` tells).

    Returns
    -------
    cap_x, cap_y : int
        The number of distinct x (y) coordinates minus one.
    """
    return len(np.unique(np.asarray(x, dtype=float))) - 1, len(np.unique(np.asarray(y, dtype=float))) - 1


def _terms(order):
    return [(n - q, q) for n in range(order + 1) for q in range(n + 1)]


class SpatialFunction:
    """A 2-d polynomial basis of a given order over a box.

    Parameters
    ----------
    kind : {"chebyshev1", "polynomial"}
    order : int
        Total degree, from 0 to :data:`~psfmatch.kernel.basis.MAX_DEGREE` (20).
    bbox : Box2D or Box2I
        The domain, of non-zero width and height; a ``Box2I`` is taken to its pixel edges.

    Raises
    ------
    InvalidConfigError
        If ``kind`` is not one of :data:`SPATIAL_MODEL_TYPES` or ``order`` is not a whole number
        from 0 to 20.
    InvalidInputError
        If ``bbox`` is not a ``Box2I`` or ``Box2D``, or is empty.
    """

    def __init__(self, kind, order, bbox):
        self._set(kind, order, bbox, MAX_DEGREE)

    @classmethod
    def _uncapped(cls, kind, order, bbox) -> "SpatialFunction":
        """A SpatialFunction checked as the constructor checks it, but of any order >= 0.

        For the functions psfmatch derives or reads back rather than the orders one asks for:
        :meth:`squared` (twice the order), :meth:`conditioned` and :meth:`from_dict` of those, and
        a kernel file written before the cap (whose coefficients already hold every term).
        """
        sf = object.__new__(cls)
        sf._set(kind, order, bbox, None)
        return sf

    def _set(self, kind, order, bbox, maximum):
        """Check and store the attributes; ``order`` from 0 to ``maximum`` (None: no upper bound)."""
        if kind not in SPATIAL_MODEL_TYPES:
            raise InvalidConfigError(f"spatialModelType must be one of {SPATIAL_MODEL_TYPES}; got {kind!r}")
        order = _whole_number(order, "spatialKernelOrder", "the total degree of the kernel's variation over the "
                              "field: 0 for a constant kernel, LSST's default is 2", minimum=0, maximum=maximum)
        if isinstance(bbox, Box2I):
            if bbox.isEmpty():
                raise InvalidInputError(f"a SpatialFunction's bbox must not be empty; got {bbox!r} (give the "
                                        "exposure's getBBox())")
            bbox = Box2D(bbox)
        elif not isinstance(bbox, Box2D):
            raise InvalidInputError(f"a SpatialFunction's bbox must be a Box2I or Box2D (the exposure's getBBox()); "
                                    f"got {type(bbox).__name__} {bbox!r}")
        self.kind = kind
        self.order = order
        self.bbox = bbox
        self.terms = _terms(self.order)

    @property
    def nterms(self) -> int:
        return len(self.terms)

    def term_mask(self, cap_x, cap_y) -> np.ndarray:
        """Which terms ``(p, q)`` have ``p <= cap_x`` and ``q <= cap_y`` (see :func:`axis_degree_caps`): bool per term.

        For the ``"chebyshev1"`` basis (which :meth:`conditioned` returns), the
        coefficients of the other terms set to 0 leave a function of degree at
        most ``cap_x`` in x and ``cap_y`` in y, in either basis.
        """
        return np.array([p <= cap_x and q <= cap_y for p, q in self.terms])

    def _scale(self, coords, axis):
        b = self.bbox
        lo, hi = (b.minX, b.maxX) if axis == 0 else (b.minY, b.maxY)
        return (np.asarray(coords, dtype=np.float64) - 0.5 * (lo + hi)) * 2.0 / (hi - lo)

    def evaluate_1d(self, coords, axis) -> np.ndarray:
        """``X_p`` (axis 0) or ``Y_q`` (axis 1) for ``p = 0..order`` at ``coords``: shape (order + 1, n)."""
        c = np.atleast_1d(np.asarray(coords, dtype=np.float64))
        out = np.empty((self.order + 1, c.size))
        if self.kind == "chebyshev1":
            t = self._scale(c, axis)
            out[0] = 1.0
            if self.order >= 1:
                out[1] = t
            for p in range(2, self.order + 1):
                out[p] = 2 * t * out[p - 1] - out[p - 2]
        else:
            out[0] = 1.0
            for p in range(1, self.order + 1):
                out[p] = out[p - 1] * c
        return out

    def evaluate(self, x, y) -> np.ndarray:
        """All terms at the positions ``(x, y)``: shape (nterms,) for scalars, (nterms, n) for arrays."""
        scalar = np.ndim(x) == 0 and np.ndim(y) == 0
        xs = self.evaluate_1d(x, 0)
        ys = self.evaluate_1d(y, 1)
        out = np.array([xs[p] * ys[q] for p, q in self.terms])
        return out[:, 0] if scalar else out

    def __call__(self, x, y):
        return self.evaluate(x, y)

    def conditioned(self) -> tuple["SpatialFunction", np.ndarray]:
        """A well-conditioned basis of the same functions, and the change from its coefficients to these.

        Fits solve for the spatial coefficients in this basis: raw-pixel
        monomials over a box far from the origin are nearly collinear (over
        ``x`` in [1e5, 1e5 + 1024], ``x^4 / 1e20`` varies by 4%), so their design
        looks rank-deficient although the functions are independent.  The
        Chebyshev terms over the same box span the same polynomials of total
        degree ``<= order`` (each axis is an affine change of variable), and
        ``sum_t c_t C_t(x, y) = sum_u (c @ B)_u X_u(x, y)``.

        Returns
        -------
        basis : SpatialFunction
            ``self`` for ``"chebyshev1"``; the Chebyshev terms over ``bbox`` for ``"polynomial"``.
        B : ndarray (nterms, nterms)
            ``C_t = sum_u B[t, u] X_u``: coefficients ``c`` of ``basis`` are ``c @ B`` in this one.
        """
        if self.kind == "chebyshev1":
            return self, np.eye(self.nterms)
        cheb = SpatialFunction._uncapped("chebyshev1", self.order, self.bbox)  # (the order of squared() too)
        per_axis = []
        b = self.bbox
        for lo, hi in ((b.minX, b.maxX), (b.minY, b.maxY)):
            a = 2.0 / (hi - lo)
            t = np.polynomial.Polynomial([-0.5 * (lo + hi) * a, a])  # t(x), the Chebyshev variable
            M = np.zeros((self.order + 1, self.order + 1))
            for p in range(self.order + 1):
                tp = np.polynomial.Polynomial(npcheb.cheb2poly(np.eye(self.order + 1)[p]))(t).coef
                M[p, :len(tp)] = tp  # T_p(t(x)) = sum_r M[p, r] x^r
            per_axis.append(M)
        Mx, My = per_axis
        index = {t: i for i, t in enumerate(self.terms)}
        B = np.zeros((self.nterms, self.nterms))
        for j, (p, q) in enumerate(cheb.terms):
            for r in range(p + 1):
                for s_ in range(q + 1):
                    B[j, index[(r, s_)]] += Mx[p, r] * My[q, s_]
        return cheb, B

    def precision_loss(self) -> float:
        """Relative precision (in units of the function's scale) of this basis's coefficients in float64.

        For ``"chebyshev1"`` about the rounding unit.  Raw-pixel monomials far
        from the origin cancel: a function of order-one values over the box is
        written with terms up to ``sum |B| |X(x)|`` (:meth:`conditioned`), so
        about ``eps`` times that is lost, e.g. 2e-6 for order 4 over a 1024 px
        box at ``x0 = 1e5``.
        """
        eps = np.finfo(np.float64).eps
        if self.kind == "chebyshev1" or self.order == 0:
            return float(eps)
        _, B = self.conditioned()
        b = self.bbox
        xs = np.array([b.minX, b.maxX, b.minX, b.maxX])
        ys = np.array([b.minY, b.minY, b.maxY, b.maxY])
        X = np.abs(self.evaluate(xs, ys))  # (nterms, 4): the monomials at the corners, where they are largest
        return float(eps * np.max(np.abs(B).sum(axis=0) @ X))

    def squared(self) -> "SpatialFunction":
        """The basis of order ``2 * order`` in which products of two terms expand.

        Its order may exceed :data:`~psfmatch.kernel.basis.MAX_DEGREE`, which caps the orders one asks for.
        """
        return SpatialFunction._uncapped(self.kind, 2 * self.order, self.bbox)

    def product_tensor(self) -> np.ndarray:
        """``P`` with ``f_j f_k = sum_p P[j, k, p] g_p``, ``g`` the terms of :meth:`squared`.

        Chebyshev products reduce with ``T_a T_c = (T_{a+c} + T_{|a-c|}) / 2``;
        monomials simply add their exponents.
        """
        sq = self.squared()
        index = {t: i for i, t in enumerate(sq.terms)}
        n = self.nterms
        P = np.zeros((n, n, sq.nterms))
        for j, (a, b) in enumerate(self.terms):
            for k, (c, d) in enumerate(self.terms):
                if self.kind == "polynomial":
                    P[j, k, index[(a + c, b + d)]] += 1.0
                else:
                    for px in (a + c, abs(a - c)):
                        for qy in (b + d, abs(b - d)):
                            P[j, k, index[(px, qy)]] += 0.25
        return P

    def to_dict(self) -> dict:
        return {"kind": self.kind, "order": self.order, "bbox": self.bbox.to_dict()}

    @classmethod
    def from_dict(cls, d) -> "SpatialFunction":
        """The SpatialFunction :meth:`to_dict` described, of any order (that of :meth:`squared` too)."""
        b = d["bbox"]
        return cls._uncapped(d["kind"], d["order"], Box2D((b["minX"], b["minY"]), (b["maxX"], b["maxY"])))

    def __eq__(self, other):
        return (isinstance(other, SpatialFunction) and self.kind == other.kind and self.order == other.order
                and self.bbox == other.bbox)

    def __repr__(self):
        return f"SpatialFunction({self.kind!r}, order={self.order}, bbox={self.bbox!r})"

