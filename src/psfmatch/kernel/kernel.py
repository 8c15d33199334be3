"""The spatially varying matching kernel: basis kernels times spatial coefficient functions.

``K_x(u) = s * sum_i a_i(x) B_i(u)`` with ``a_i(x) = sum_j theta_ij f_j(x)``,
where ``B_i`` are the basis kernels, ``f_j`` the spatial functions
(:class:`~psfmatch.kernel.spatial.SpatialFunction`), ``theta`` the spatial
coefficients and ``s`` the ``kernelSum``.  The first basis kernel is the only
one with a non-zero sum (1) and its coefficient is the constant 1, so
``sum_u K_x(u) = s`` everywhere.

The kernel refactors as ``K_x = sum_j f_j(x) R_j`` with ``R_j = s sum_i
theta_ij B_i`` (:meth:`LinearCombinationKernel.term_images`), which is how
:mod:`psfmatch.convolve` applies it exactly with one transform per term.

Convention: the kernel is applied as a convolution, ``matched = science (*) K``
(``out(x) = sum_u K(u) I(x - u)``).  LSST's afw applies kernel images as a
correlation; :meth:`LinearCombinationKernel.computeImageLsst` returns the flipped
image that reproduces our result under afw's convention.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..geom import Box2I, Extent2I, Point2I, as_point
from .basis import KernelBasis
from .spatial import SpatialFunction

__all__ = ["LinearCombinationKernel"]


def as_real(value, name) -> float:
    """``value`` as a float, once it is a real number; :class:`InvalidInputError` naming ``name`` otherwise.

    A string is refused, although ``float("1")`` would take it.
    """
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number; got {value!r}") from None


def _finite_kernel_sum(kernel_sum) -> float:
    """``kernel_sum`` as a float, once it is a finite number (InvalidInputError otherwise)."""
    value = as_real(kernel_sum, "kernel_sum")
    if not np.isfinite(value):
        raise InvalidInputError(f"kernel_sum must be finite; got {kernel_sum!r} (the kernel's images would be "
                                "NaN or inf, and cannot be saved)")
    return value


class LinearCombinationKernel:
    """A (possibly spatially varying) linear combination of basis kernels.

    Parameters
    ----------
    basis : KernelBasis
        ``n_b`` basis kernels of size ``k x k``.
    coefficients : array_like, shape (n_b, n_s)
        Spatial coefficients ``theta``; ``n_s = 1`` for a spatially invariant kernel.
    spatial_function : SpatialFunction or None
        Required when ``n_s > 1``.
    kernel_sum : float
        Overall scale ``s`` (the ``kernelSum`` of the task); finite.
    bbox : Box2I, optional
        The region the kernel was fitted for (the exposure's box).  Outside it
        a spatially varying kernel's coefficients are extrapolated.

    Raises
    ------
    InvalidInputError
        If the coefficients do not match the basis and the spatial function,
        a coefficient or ``kernel_sum`` is not a finite number, or ``bbox`` is
        not a `~psfmatch.geom.Box2I` (or None).
    """

    def __init__(self, basis: KernelBasis, coefficients, spatial_function=None, kernel_sum=1.0, bbox=None):
        if not isinstance(basis, KernelBasis):
            raise InvalidInputError(f"basis must be a KernelBasis (e.g. alard_lupton_basis(...)); got "
                                    f"{type(basis).__name__}")
        if spatial_function is not None and not isinstance(spatial_function, SpatialFunction):
            raise InvalidInputError(f"spatial_function must be a SpatialFunction (e.g. SpatialFunction(order, "
                                    f"'chebyshev1', bbox)) or None; got {type(spatial_function).__name__} "
                                    f"{spatial_function!r}")
        self.basis = basis
        try:
            coeffs = np.array(coefficients, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the kernel's coefficients must be numbers, one row per basis kernel ({exc})") \
                from None
        if coeffs.ndim == 1:
            coeffs = coeffs[:, None]
        if coeffs.ndim != 2:
            raise InvalidInputError(f"the kernel's coefficients must be 1-d (one per basis kernel) or 2-d (basis "
                                    f"kernels x spatial terms); got shape {coeffs.shape}")
        if coeffs.shape[0] != len(basis):
            raise InvalidInputError(f"coefficients have {coeffs.shape[0]} rows for {len(basis)} basis kernels")
        if coeffs.shape[1] > 1 and spatial_function is None:
            raise InvalidInputError("a spatially varying kernel needs a spatial function")
        if spatial_function is not None and coeffs.shape[1] != spatial_function.nterms:
            raise InvalidInputError(
                f"coefficients have {coeffs.shape[1]} spatial terms; the spatial function has {spatial_function.nterms}")
        if not np.all(np.isfinite(coeffs)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(coeffs))[0])
            raise InvalidInputError(f"the kernel's coefficients must be finite; coefficient {bad} is {coeffs[bad]} "
                                    "(a kernel that cannot be evaluated or saved; check the fit that gave them)")
        self.kernel_sum = _finite_kernel_sum(kernel_sum)
        if bbox is not None and not isinstance(bbox, Box2I):
            raise InvalidInputError(f"bbox must be a Box2I (the box the kernel was fitted on) or None; got {bbox!r}")
        coeffs.setflags(write=False)
        self.coefficients = coeffs
        self.spatial_function = spatial_function
        self.bbox = bbox

    # --- LSST-like accessors -------------------------------------------
    def getDimensions(self) -> Extent2I:
        k = self.basis.kernel_size
        return Extent2I(k, k)

    def getWidth(self) -> int:
        return self.basis.kernel_size

    def getHeight(self) -> int:
        return self.basis.kernel_size

    def getCtr(self) -> Point2I:
        h = self.basis.kernel_size // 2
        return Point2I(h, h)

    def getNKernelParameters(self) -> int:
        return len(self.basis)

    def getNSpatialParameters(self) -> int:
        return self.coefficients.shape[1]

    def isSpatiallyVarying(self) -> bool:
        return self.coefficients.shape[1] > 1 and bool(np.any(self.coefficients[:, 1:] != 0))

    def getKernelList(self):
        return list(self.basis.images)

    def getBasis(self) -> KernelBasis:
        return self.basis

    def getSpatialFunction(self):
        return self.spatial_function

    def getSpatialParameters(self) -> np.ndarray:
        """The spatial coefficients ``theta`` (n_b, n_s), scaled by ``kernelSum``."""
        return self.coefficients * self.kernel_sum

    def getKernelParameters(self, position=None) -> np.ndarray:
        """The basis coefficients ``s a_i(x)`` at ``position`` (the field centre by default)."""
        x, y = self._xy(position)
        return self.kernel_sum * (self.coefficients @ self._f(x, y))

    # --- evaluation ------------------------------------------------------
    def _xy(self, position):
        if position is None:
            if self.bbox is not None:
                return self.bbox.getCenter()
            return (0.0, 0.0)
        return as_point(position)

    def _f(self, x, y):
        if self.spatial_function is None:
            return np.ones(1) if np.ndim(x) == 0 else np.ones((1, np.size(x)))
        return self.spatial_function.evaluate(x, y)

    def computeImage(self, position=None, normalize=False, *, doNormalize=None) -> np.ndarray:
        """The kernel image (``k x k`` float64) at a parent ``position``.

        Parameters
        ----------
        position : Point2D or (x, y)
            Where to evaluate (the centre of the fitted box by default).
        normalize : bool
            If True, divide by the image's sum (unit sum); else its sum is ``kernelSum``.
        doNormalize : bool, optional
            afw's name for ``normalize``.

        Notes
        -----
        The spatial model is fitted over ``bbox``; at a ``position`` outside
        it the coefficients are extrapolated (polynomials grow quickly there,
        and the image can become strongly negative) without a warning.
        :func:`~psfmatch.convolve.convolve_masked_image` warns when an image
        reaches outside ``bbox``.
        """
        if doNormalize is not None:
            normalize = doNormalize
        x, y = self._xy(position)
        a = self.kernel_sum * (self.coefficients @ self._f(x, y))
        img = np.tensordot(a, self.basis.images, axes=1)
        if normalize:
            total = img.sum()
            if total == 0:
                raise InvalidInputError("cannot normalize the kernel: its sum is 0 (kernelSum=0)")
            img = img / total
        return img

    def computeImages(self, x, y) -> np.ndarray:
        """Kernel images at many positions: shape (n, k, k).

        As for :meth:`computeImage`, positions outside ``bbox`` (the box the
        spatial model was fitted on) get extrapolated coefficients, without a
        warning.

        Raises
        ------
        InvalidInputError
            If ``x`` and ``y`` are not 1-d sequences of the same length of finite
            numbers (as :meth:`computeImage` refuses a non-finite position).
        """
        try:
            x = np.atleast_1d(np.asarray(x, dtype=float))
            y = np.atleast_1d(np.asarray(y, dtype=float))
        except (TypeError, ValueError):
            raise InvalidInputError(f"computeImages needs numeric x and y; got {x!r} and {y!r}") from None
        if x.ndim != 1 or x.shape != y.shape:
            raise InvalidInputError(f"computeImages needs x and y of the same length (1-d); got shapes {x.shape} "
                                    f"and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            bad = int(np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))[0])
            raise InvalidInputError(f"computeImages needs finite positions; position {bad} is ({x[bad]}, {y[bad]})")
        a = self.kernel_sum * (self.coefficients @ self._f(x, y))  # (n_b, n)
        return np.tensordot(a.T, self.basis.images, axes=1)

    def computeImageLsst(self, position=None) -> np.ndarray:
        """The kernel image flipped for LSST's afw, which applies kernels as correlations."""
        return self.computeImage(position)[::-1, ::-1].copy()

    def getSum(self, position=None) -> float:
        """Sum of the kernel image at ``position`` (``kernelSum`` by construction)."""
        return float(self.computeImage(position).sum())

    def term_images(self) -> np.ndarray:
        """``R_j = s sum_i theta_ij B_i``: the kernel as ``sum_j f_j(x) R_j``; shape (n_s, k, k)."""
        return self.kernel_sum * np.tensordot(self.coefficients.T, self.basis.images, axes=1)

    def __call__(self, position=None):
        return self.computeImage(position)

    def __repr__(self):
        sf = "constant" if self.spatial_function is None else f"{self.spatial_function.kind} order {self.spatial_function.order}"
        return (f"LinearCombinationKernel({len(self.basis)} {self.basis.kind} kernels of "
                f"{self.basis.kernel_size}x{self.basis.kernel_size}, {sf}, kernelSum={self.kernel_sum})")

    def writeFits(self, path, overwrite=False) -> None:
        """Save the kernel (basis, spatial function, coefficients, box) to FITS, atomically.

        See :func:`psfmatch.io.write_kernel`.
        """
        from ..io.kernel_fits import write_kernel

        write_kernel(self, path, overwrite=overwrite)

    @classmethod
    def readFits(cls, path) -> "LinearCombinationKernel":
        """Load a kernel saved by :meth:`writeFits`; see :func:`psfmatch.io.read_kernel`."""
        from ..io.kernel_fits import read_kernel

        return read_kernel(path)

    def writeImageGridFits(self, path, nx=5, ny=5, *, positions=None, lsst=False, overwrite=False) -> None:
        """Write the kernel images on an ``nx x ny`` grid (or at ``positions``) to FITS.

        See :func:`psfmatch.io.write_kernel_image_grid`; ``lsst=True`` flips the
        images for afw's correlation convention.
        """
        from ..io.kernel_fits import write_kernel_image_grid

        write_kernel_image_grid(self, path, nx=nx, ny=ny, positions=positions, lsst=lsst, overwrite=overwrite)

    def with_kernel_sum(self, kernel_sum) -> "LinearCombinationKernel":
        """The same kernel scaled to sum to ``kernel_sum`` everywhere.

        Raises
        ------
        InvalidInputError
            If ``kernel_sum`` is not a finite number.
        """
        return LinearCombinationKernel(self.basis, self.coefficients, self.spatial_function, kernel_sum, self.bbox)

    def to_dict(self) -> dict:
        """A JSON-friendly description (arrays as nested lists)."""
        return {
            "basis_kind": self.basis.kind,
            "basis_description": self.basis.description,
            "basis": self.basis.images.tolist(),
            "coefficients": self.coefficients.tolist(),
            "spatial_function": None if self.spatial_function is None else self.spatial_function.to_dict(),
            "kernel_sum": self.kernel_sum,
            "bbox": None if self.bbox is None else self.bbox.to_dict(),
        }

    @classmethod
    def from_dict(cls, d) -> "LinearCombinationKernel":
        sf = d.get("spatial_function")
        bb = d.get("bbox")
        return cls(KernelBasis(np.array(d["basis"]), d["basis_kind"], dict(d.get("basis_description", {}))),
                   np.array(d["coefficients"]), None if sf is None else SpatialFunction.from_dict(sf),
                   d.get("kernel_sum", 1.0),
                   None if bb is None else Box2I((bb["x0"], bb["y0"]), (bb["width"], bb["height"])))
