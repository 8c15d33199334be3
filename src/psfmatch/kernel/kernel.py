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

from collections.abc import Mapping

import numpy as np

from ..errors import InvalidInputError, PsfMatchError
from ..geom import Box2I, Extent2I, Point2I, as_point
from .basis import KernelBasis
from .spatial import SpatialFunction

__all__ = ["KernelParameterFunction", "LinearCombinationKernel"]


def as_real(value, name) -> float:
    """``value`` as a float, once it is a real number; :class:`InvalidInputError` naming ``name`` otherwise.

    A string is refused, although ``float("1")`` would take it, and so is a boolean (``True`` would be 1:
    most likely a flag passed in the wrong place).
    """
    try:
        if isinstance(value, (str, bytes, bool, np.bool_)):
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


def _image_array(obj):
    """``obj`` as the 2-d array that afw's ``computeImage(image, ...)`` fills: itself, or its ``array``; else None."""
    arr = obj if isinstance(obj, np.ndarray) else getattr(obj, "array", None)
    return arr if isinstance(arr, np.ndarray) and arr.ndim == 2 else None


def _describe(value) -> str:
    """``repr(value)``, or the shape of an array of more than a few values (a message never lists an array)."""
    if isinstance(value, np.ndarray) and value.size > 4:
        return f"an array of shape {value.shape}"
    return repr(value)


def _real_coordinate(value, name) -> float:
    """A finite coordinate ``x`` or ``y``, or InvalidInputError naming ``name``."""
    if isinstance(value, np.ndarray) and value.size > 1:
        raise InvalidInputError(f"{name} must be a number; got {_describe(value)} (computeImages(x, y) takes arrays)")
    v = as_real(value, name)
    if not np.isfinite(v):
        raise InvalidInputError(f"{name} must be finite; got {value!r}")
    return v


def _positions(x, y, who):
    """``x`` and ``y`` as 1-d float arrays of one length and finite values, or InvalidInputError naming ``who``."""
    try:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
    except (TypeError, ValueError):
        raise InvalidInputError(f"{who} needs numeric x and y; got {_describe(x)} and {_describe(y)}") from None
    if x.ndim != 1 or x.shape != y.shape:
        raise InvalidInputError(f"{who} needs x and y of the same length (1-d); got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        bad = int(np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))[0])
        raise InvalidInputError(f"{who} needs finite positions; position {bad} is ({x[bad]}, {y[bad]})")
    return x, y


class KernelParameterFunction:
    """afw's spatial function of one kernel parameter: its value over the field.

    ``f(x, y)`` is ``kernel.getKernelParameters((x, y))[index]``, the coefficient
    of basis kernel ``index`` at ``(x, y)``; ``getParameters()`` are its
    spatial coefficients, ``kernel.getSpatialParameters()[index]``.  Returned by
    :meth:`LinearCombinationKernel.getSpatialFunction` with an index.
    """

    def __init__(self, kernel, index):
        self.kernel = kernel
        self.index = index

    def __call__(self, x, y):
        """The parameter at ``(x, y)``: a float for scalars, a 1-d array for sequences.

        Raises
        ------
        InvalidInputError
            If ``x`` and ``y`` are not finite numbers, or sequences of one length of them.
        """
        scalar = np.ndim(x) == 0 and np.ndim(y) == 0
        xs, ys = _positions(x, y, f"getSpatialFunction({self.index})")
        values = self.kernel.getSpatialParameters()[self.index] @ self.kernel._f(xs, ys)
        return float(values[0]) if scalar else values

    def getParameters(self) -> np.ndarray:
        """The spatial coefficients of this parameter (scaled by ``kernelSum``)."""
        return self.kernel.getSpatialParameters()[self.index]

    def getNParameters(self) -> int:
        return self.kernel.getNSpatialParameters()

    def __repr__(self):
        return f"KernelParameterFunction(parameter {self.index} of {self.kernel!r})"


#: The keys :meth:`LinearCombinationKernel.from_dict` needs.
_FROM_DICT_REQUIRED = ("basis", "basis_kind", "coefficients")


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

    def getSpatialFunction(self, index=None):
        """The spatial function; with ``index``, afw's function of kernel parameter ``index``.

        Parameters
        ----------
        index : int, optional
            Without it, the :class:`~psfmatch.kernel.spatial.SpatialFunction`
            that every kernel parameter shares (None for a constant kernel): its
            ``evaluate(x, y)`` gives the values of the spatial *terms*.  With it,
            as afw's ``getSpatialFunction(index)``: a :class:`KernelParameterFunction`
            whose value at ``(x, y)`` is the kernel parameter ``index`` there,
            ``getKernelParameters((x, y))[index]``.

        Raises
        ------
        InvalidInputError
            If ``index`` is not an integer in ``range(getNKernelParameters())``.
        """
        if index is None:
            return self.spatial_function
        n = len(self.basis)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise InvalidInputError(f"getSpatialFunction(index) takes a kernel parameter index, an integer from 0 to "
                                    f"{n - 1}; got {_describe(index)} (getSpatialFunction() without an index returns "
                                    "the spatial function every parameter shares)")
        return KernelParameterFunction(self, int(index))

    def getSpatialFunctionList(self) -> list:
        """afw's list of the kernel parameters' spatial functions: ``getSpatialFunction(i)`` for every ``i``."""
        return [KernelParameterFunction(self, i) for i in range(len(self.basis))]

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

    def computeImage(self, position=None, normalize=False, *xy, image=None, doNormalize=None, x=None, y=None):
        """The kernel image (``k x k`` float64) at a parent ``position``; or afw's form, filling ``image``.

        psfmatch's form, ``computeImage(position, normalize)``, returns a new
        image.  afw's form, ``computeImage(image, doNormalize, x, y)``, fills
        ``image`` (a writable 2-d float array of the kernel's dimensions, or an
        object whose ``array`` is one) in place and returns the image's sum
        before normalization.  The position may also be given as ``x`` and
        ``y`` keywords in either form.

        Parameters
        ----------
        position : Point2D or (x, y), optional
            Where to evaluate (the centre of the fitted box by default: afw's
            default is (0, 0)).  In afw's form, the image to fill instead.
        normalize : bool
            If True, divide by the image's sum (unit sum); else its sum is ``kernelSum``.
        *xy : float
            afw's positional ``x, y``, after the image to fill.
        image : ndarray, optional
            The image to fill (afw's keyword).
        doNormalize : bool, optional
            afw's name for ``normalize``.
        x, y : float, optional
            The position, as afw's keywords.

        Returns
        -------
        ndarray or float
            The image; in afw's form, the sum of the image before normalization.

        Raises
        ------
        InvalidInputError
            If the position is given twice or half, is not a pair of finite
            numbers, or ``image`` does not have the kernel's dimensions, is
            not floating point or is read-only; or ``normalize`` is asked of a
            kernel whose sum is 0.

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
        if image is None and _image_array(position) is not None:  # afw's computeImage(image, doNormalize, ...)
            image, position = position, None
        elif image is not None and position is not None:
            raise InvalidInputError("computeImage got both an image to fill and a position: give the position as x "
                                    "and y, as afw's computeImage(image, doNormalize, x, y)")
        position = self._afw_position(position, xy, x, y, image is not None)
        px, py = self._xy(position)
        a = self.kernel_sum * (self.coefficients @ self._f(px, py))
        img = np.tensordot(a, self.basis.images, axes=1)
        total = float(img.sum()) if normalize or image is not None else None
        if normalize:
            if total == 0:
                raise InvalidInputError("cannot normalize the kernel: its sum is 0 (kernelSum=0)")
            img = img / total
        if image is None:
            return img
        self._fill_target(image)[...] = img
        return total

    def _afw_position(self, position, xy, x, y, filling):
        """The position of :meth:`computeImage` from its ``position``, extra positionals ``xy`` and ``x``, ``y``."""
        if xy:
            if not filling:
                raise InvalidInputError(
                    f"computeImage takes {len(xy)} more positional argument(s) (x, y) only after an image to fill, "
                    "as afw's computeImage(image, doNormalize, x, y); to get the image at a position give "
                    "computeImage((x, y), normalize) or computeImage(x=x, y=y)")
            if len(xy) > 2:
                raise InvalidInputError(f"computeImage(image, doNormalize, x, y) takes at most x and y after "
                                        f"doNormalize; got {len(xy)} more arguments")
            if (x is not None) or (y is not None and len(xy) == 2):
                raise InvalidInputError("computeImage got x or y both as a positional argument and as a keyword")
            x, y = (xy[0], xy[1]) if len(xy) == 2 else (xy[0], y)
        if x is None and y is None:
            if isinstance(position, np.ndarray) and position.size != 2:
                raise InvalidInputError(
                    f"position must be an (x, y) pair; got an array of shape {position.shape} (afw's "
                    f"computeImage(image, doNormalize) fills a 2-d float array of the kernel's dimensions, "
                    f"{self.getWidth()}x{self.getHeight()})")
            return position
        if position is not None:
            raise InvalidInputError("computeImage got both a position and x or y: give the position once, "
                                    "computeImage((x, y)) or computeImage(x=x, y=y)")
        if x is None or y is None:
            raise InvalidInputError(f"computeImage needs both x and y; got only {'x' if y is None else 'y'}")
        return (_real_coordinate(x, "x"), _real_coordinate(y, "y"))

    def _fill_target(self, image) -> np.ndarray:
        """The array of afw's ``computeImage(image, ...)``, once it can take this kernel's image."""
        arr = _image_array(image)
        k = self.basis.kernel_size
        if arr is None or arr.shape != (k, k):
            what = f"an array of shape {arr.shape}" if arr is not None else type(image).__name__
            raise InvalidInputError(
                f"computeImage(image, doNormalize) fills an image of the kernel's dimensions, {k}x{k} "
                f"(e.g. numpy.zeros(({k}, {k}))); got {what}")
        if arr.dtype.kind != "f":
            raise InvalidInputError(f"computeImage(image, doNormalize) fills a floating-point image; got dtype "
                                    f"{arr.dtype} (give e.g. numpy.zeros(({k}, {k})), or use the returned image of "
                                    "computeImage((x, y)))")
        if not arr.flags.writeable:
            raise InvalidInputError("computeImage(image, doNormalize) cannot fill a read-only array; give a "
                                    "writable one, or use the returned image of computeImage((x, y))")
        return arr

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
        x, y = _positions(x, y, "computeImages")
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
        """The kernel that :meth:`to_dict` described.

        Parameters
        ----------
        d : mapping
            ``to_dict()``'s dict (also once through JSON): ``basis``,
            ``basis_kind`` and ``coefficients`` are required; ``basis_description``,
            ``spatial_function``, ``kernel_sum`` (default 1) and ``bbox`` may be
            absent or None.

        Raises
        ------
        InvalidInputError
            If ``d`` is not a mapping, lacks a required key, or an entry cannot
            be decoded (the message names the key).
        """
        who = "LinearCombinationKernel.from_dict"
        if not isinstance(d, Mapping):
            raise InvalidInputError(f"{who} needs a mapping (the dict LinearCombinationKernel.to_dict returns); got "
                                    f"{type(d).__name__}")
        missing = [key for key in _FROM_DICT_REQUIRED if key not in d]
        if missing:
            raise InvalidInputError(f"{who}: the description lacks the key(s) {', '.join(map(repr, missing))}; pass "
                                    "the dict LinearCombinationKernel.to_dict returns (keys "
                                    f"{list(_FROM_DICT_REQUIRED)} and optionally 'basis_description', "
                                    "'spatial_function', 'kernel_sum', 'bbox')")

        def decode(key, make):
            """``make(d[key])`` (None when ``d[key]`` is absent or None), or InvalidInputError naming ``key``."""
            if d.get(key) is None:
                if key in _FROM_DICT_REQUIRED:
                    raise InvalidInputError(f"{who}: the {key!r} entry is None; pass the dict "
                                            "LinearCombinationKernel.to_dict returns")
                return None
            try:
                return make(d[key])
            except PsfMatchError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                raise InvalidInputError(f"{who}: the {key!r} entry cannot be decoded ({type(exc).__name__}: {exc}); "
                                        "pass the dict LinearCombinationKernel.to_dict returns") from exc

        def array(value):
            return np.array(value, dtype=np.float64)

        kind = decode("basis_kind", lambda k: k)  # (None refused, as for every required entry)
        basis = decode("basis", lambda images: KernelBasis(array(images), kind,
                                                           decode("basis_description", dict) or {}))
        kernel_sum = d.get("kernel_sum")
        coefficients = decode("coefficients", array)

        def spatial(sfd):
            # the order the coefficients hold, before building it (an absurd order would allocate its terms)
            order = sfd["order"]
            n = coefficients.shape[1] if coefficients.ndim == 2 else -1
            if not (isinstance(order, (int, np.integer)) and order >= 0 and (order + 1) * (order + 2) // 2 == n):
                raise InvalidInputError(f"{who}: the spatial function's order {order!r} does not match the "
                                        f"coefficients' {n} spatial terms; pass the dict LinearCombinationKernel."
                                        "to_dict returns")
            return SpatialFunction.from_dict(sfd)

        return cls(basis, coefficients, decode("spatial_function", spatial),
                   1.0 if kernel_sum is None else kernel_sum,
                   decode("bbox", lambda bb: Box2I((bb["x0"], bb["y0"]), (bb["width"], bb["height"]))))
