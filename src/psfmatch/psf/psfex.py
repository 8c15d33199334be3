"""PSFEx models (``.psf`` files) as psfmatch PSFs.

A PSFEx file (Bertin 2011) holds, in a binary table ``PSF_DATA`` with one row
and one column ``PSF_MASK``, a cube of ``n`` basis images ``B_k`` sampled on a
grid whose step is ``PSF_SAMP`` image pixels, and the header of a polynomial
in the scaled positions ``xs = (X - POLZERO1) / POLSCAL1`` and
``ys = (Y - POLZERO2) / POLSCAL2``.  The model at a position is
``M = sum_k c_k B_k`` with the terms ``c_k = xs^i ys^j`` in PSFEx order (``j``
outer, ``i`` inner: ``1, x, x^2, y, x y, y^2`` for degree 2).  ``M`` is an
*effective* PSF (pixel response included).

Conventions (stated once, applied in one place)
------------------------------------------------
Positions.
    psfmatch positions are 0-based parent pixel coordinates.  PSFEx contexts
    ``X_IMAGE``/``XWIN_IMAGE`` are SExtractor (FITS) coordinates, 1-based.
    :meth:`PsfexPsf.to_context` is the only place that converts: it adds
    ``origin`` (1 by default; 0 for files written by LSST's
    ``meas_extensions_psfex``, whose positions are already 0-based).
Resampling (``PSF_SAMP``).
    The stamp pixel at offset ``(dx, dy)`` image pixels from the PSF centre
    takes the value of ``M`` at sample coordinates ``c + (dx, dy) / PSF_SAMP``,
    ``c = (PSFAXIS1 // 2, PSFAXIS2 // 2)``, interpolated with a separable
    **Lanczos-3** kernel ``L(t) = sinc(t) sinc(t / 3)`` (``|t| < 3``) whose six
    weights are renormalized to unit sum for every output pixel, as PSFEx's
    ``vignet_resample`` does.  Samples outside the grid count as zero.  When
    ``PSF_SAMP == 1`` and the offset is integral the stamp equals ``M``
    exactly.
Stamps.
    :meth:`~psfmatch.psf.base.Psf.computeKernelImage` returns an odd stamp of
    ``odd(ceil(PSFAXIS * PSF_SAMP))`` pixels per axis (so that a model with
    ``PSF_SAMP > 1`` is not truncated), centred on its centre pixel, unit sum.
    :meth:`~psfmatch.psf.base.Psf.computeImage` places the star at its
    sub-pixel position with the base class's Fourier shift of the kernel
    image (the adaptive centroid moves by the offset to about 1e-7 px; the
    unweighted first moment of a stamp with negative wings, extrapolated at a
    corner, by up to 0.01 px more; a Lanczos kernel evaluated at a fractional
    offset is not phase-exact and would move the centroid by up to 0.02 px).
    Lanczos-3 is kept for ``PSF_SAMP`` because PSFEx fits its models through
    the same interpolant, so the stamps reproduce PSFEx's own predictions
    (and GalSim's ``DES_PSFEx``, to about 1e-5 of the peak).

References
----------
Bertin, E. 2011, ASP Conf. Ser. 442, 435 (PSFEx).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os

import numpy as np

from ..errors import CorruptFileError, InvalidInputError, UnsupportedFormatError
from ..geom import Box2I, Point2D
from .base import Psf, _array_key, _check_odd_size, _defining_depth, _overrides_model, _stamp_size

__all__ = ["PsfexPsf", "read_psfex", "is_psfex", "psfex_terms", "lanczos_weights", "LANCZOS_ORDER"]

#: Order of the Lanczos interpolant used to resample PSF_SAMP grids.
LANCZOS_ORDER = 3

#: Largest kernel-image side a PSFEx model may have unless ``stamp_size`` is given explicitly: a
#: ``PSF_SAMP`` or ``PSFAXIS`` that asks for more comes from a damaged header (real models need a few
#: hundred pixels at most), and evaluating it would allocate gigabytes.
MAX_STAMP_SIZE = 4095


def psfex_terms(v1, v2, degree) -> np.ndarray:
    """The polynomial terms ``v1^i v2^j`` in PSFEx order (``j = 0..d`` outer, ``i = 0..d-j`` inner).

    Parameters
    ----------
    v1, v2 : float or ndarray
        The scaled context values (``(X - POLZERO1) / POLSCAL1``, ...); arrays
        of one shape give one row of terms per element.
    degree : int
        The polynomial degree ``d``.

    Returns
    -------
    ndarray, shape ((d + 1)(d + 2) / 2,) + shape of ``v1``
        Term ``(i, j)`` sits at index ``i + j (d + 1) - j (j - 1) / 2``.
    """
    out = []
    for j in range(degree + 1):
        for i in range(degree + 1 - j):
            out.append(v1 ** i * v2 ** j)
    return np.array(out, dtype=np.float64)


def _lanczos(t, order=LANCZOS_ORDER):
    t = np.asarray(t, dtype=np.float64)
    return np.where(np.abs(t) < order, np.sinc(t) * np.sinc(t / order), 0.0)


def lanczos_weights(coords, n, order=LANCZOS_ORDER) -> np.ndarray:
    """Interpolation matrix ``W`` with ``f(coords) = W @ samples`` for samples at ``0..n-1``.

    Each row holds the Lanczos weights ``L(u - j)``, divided by the sum of the
    ``2 * order`` weights of the full kernel support (so that a constant is
    reproduced exactly away from the edges); samples outside ``0..n-1``
    count as zero.

    Parameters
    ----------
    coords : array_like, shape (m,)
        Sample coordinates where the function is wanted.
    n : int
        Number of samples.
    order : int
        Lanczos order (3).
    """
    u = np.asarray(coords, dtype=np.float64)[:, None]
    taps = np.floor(u) + np.arange(-order + 1, order + 1)[None, :]
    norm = _lanczos(u - taps, order).sum(axis=1, keepdims=True)
    w = _lanczos(u - np.arange(n)[None, :], order)
    return w / norm


def _real(value) -> float:
    """``float(value)`` for a real number (a bool or a string is none); NaN for anything else."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return float("nan")
    return float(value)


def _first_non_finite(basis) -> str:
    """Where the first NaN or inf of a ``(n, ny, nx)`` basis stack is, and how many there are, in words."""
    bad = ~np.isfinite(basis)
    term, row, col = (int(i) for i in np.argwhere(bad)[0])
    count = int(np.count_nonzero(bad))
    return (f"basis image {term} (of {basis.shape[0]}) holds {basis[term, row, col]} at row {row}, column {col}, "
            f"{count} non-finite value{'s' if count > 1 else ''} in all")


def _real_pair(value, name, what) -> tuple:
    """``value`` as a pair of floats, or InvalidInputError naming ``name``."""
    try:
        pair = tuple(_real(v) for v in value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(math.isnan(v) for v in pair):
        raise InvalidInputError(f"PsfexPsf {name} must be a pair of numbers ({what}); got {value!r}")
    return pair


def _odd_cover(n):
    m = int(math.ceil(n - 1e-9))
    return m if m % 2 == 1 else m + 1


class PsfexPsf(Psf):
    """A PSFEx model: polynomial combination of sampled basis images.

    Most users call :meth:`readFits` (or :func:`psfmatch.psf.read_psf`).

    Parameters
    ----------
    basis : array_like, shape (n_terms, ny, nx)
        The ``PSF_MASK`` cube ``B_k`` on the sample grid.
    degree : int
        Polynomial degree ``d`` (``n_terms == (d + 1)(d + 2) / 2``); 0 for a constant model.
    polzero, polscal : (float, float)
        ``(POLZERO, POLSCAL)`` of the x and y contexts, in the file's convention.
    psf_samp : float
        Sample step of the basis images, in image pixels (``PSF_SAMP``).
    origin : {1, 0}
        Pixel coordinate of the centre of the first pixel in the file's
        context (1: SExtractor/FITS, the default; 0: LSST-made files).
    stamp_size : int or (int, int), optional
        Odd ``(width, height)`` of the kernel images; default
        ``odd(ceil(PSFAXIS * PSF_SAMP))`` per axis.
    header : mapping, optional
        The PSF_DATA header keywords, kept for reference and persistence.
    source : str, optional
        Where the model came from (used in messages).

    Raises
    ------
    InvalidInputError
        If the arrays or parameters are invalid or inconsistent (the message
        names the value and what is expected).

    Examples
    --------
    >>> import numpy as np
    >>> from psfmatch.psf import PsfexPsf
    >>> y, x = np.mgrid[-12:13, -12:13]
    >>> b0 = np.exp(-(x**2 + y**2) / 8.0)
    >>> psf = PsfexPsf(b0[None], degree=0, psf_samp=1.0)
    >>> psf.computeKernelImage((100, 100)).shape
    (25, 25)
    """

    name = "PsfexPsf"

    def __init__(self, basis, *, degree, polzero=(0.0, 0.0), polscal=(1.0, 1.0), psf_samp=1.0, origin=1,
                 stamp_size=None, header=None, source=None):
        try:
            b = np.array(basis, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"PsfexPsf basis must be a numeric array (n_terms, ny, nx); got "
                                    f"{type(basis).__name__}") from None
        if b.ndim == 2:
            b = b[None]
        if b.ndim != 3 or b.shape[0] == 0 or min(b.shape[1:]) < 1:
            raise InvalidInputError(f"PsfexPsf basis must have shape (n_terms, ny, nx); got {b.shape}")
        d = _real(degree)
        if not (math.isfinite(d) and d == int(d) and d >= 0):
            raise InvalidInputError(f"PsfexPsf degree must be a non-negative integer; got {degree!r}")
        degree = int(d)
        nterms = (degree + 1) * (degree + 2) // 2
        if b.shape[0] != nterms:
            raise InvalidInputError(
                f"PsfexPsf: degree {degree} needs {nterms} basis images; got {b.shape[0]}")
        if not np.all(np.isfinite(b)):
            raise InvalidInputError(f"PsfexPsf basis images contain NaN or inf values: {_first_non_finite(b)}; "
                                    "every basis pixel must be finite: repair the model (rerun PSFEx) or replace "
                                    "those pixels before building the PSF")
        samp = _real(psf_samp)
        if not (math.isfinite(samp) and samp > 0):
            raise InvalidInputError(f"PsfexPsf psf_samp must be positive (a number: the sample step in image "
                                    f"pixels); got {psf_samp!r}")
        psf_samp = samp
        polzero = _real_pair(polzero, "polzero", "the (x, y) context offsets POLZERO1/2")
        polscal = _real_pair(polscal, "polscal", "the (x, y) context scales POLSCAL1/2")
        if not all(math.isfinite(v) for v in polzero):
            raise InvalidInputError(f"PsfexPsf polzero must be finite; got {polzero}")
        if degree > 0 and not all(math.isfinite(v) and v != 0 for v in polscal):
            raise InvalidInputError(f"PsfexPsf polscal must be finite and non-zero; got {polscal}")
        if _real(origin) not in (0.0, 1.0):
            raise InvalidInputError(f"PsfexPsf origin must be 0 or 1; got {origin!r}")
        b.setflags(write=False)
        self._basis = b
        self.degree = degree
        self.polzero = polzero
        self.polscal = polscal
        self.psf_samp = psf_samp
        self.origin = int(origin)
        self.header = dict(header) if header is not None else {}
        self.source = source
        ny, nx = b.shape[1:]
        if stamp_size is None:
            w, h = _odd_cover(nx * psf_samp), _odd_cover(ny * psf_samp)
            if max(w, h) > MAX_STAMP_SIZE:
                raise InvalidInputError(
                    f"PsfexPsf: psf_samp = {psf_samp:.6g} with a {nx}x{ny} sample grid gives {w}x{h}-pixel kernel "
                    f"images, more than MAX_STAMP_SIZE = {MAX_STAMP_SIZE} per side; pass stamp_size= to choose "
                    "the stamp size")
        else:
            w, h = _stamp_size(stamp_size)
        self._w, self._h = int(w), int(h)

    # --- reading ---------------------------------------------------------
    @classmethod
    def readFits(cls, source, *, ext=None, origin=1, stamp_size=None) -> "PsfexPsf":
        """Read a PSFEx model; see :func:`read_psfex`."""
        return read_psfex(source, ext=ext, origin=origin, stamp_size=stamp_size)

    # --- accessors -------------------------------------------------------
    @property
    def basis(self) -> np.ndarray:
        """The (read-only) basis cube ``(n_terms, ny, nx)`` on the sample grid."""
        return self._basis

    @property
    def sample_shape(self):
        """``(ny, nx)`` of the sample grid (``PSFAXIS2, PSFAXIS1``)."""
        return self._basis.shape[1:]

    def getDimensions(self):
        """``(width, height)`` of the kernel images."""
        return (self._w, self._h)

    def getAveragePosition(self) -> Point2D:
        """The model's centre ``(POLZERO1, POLZERO2)`` in psfmatch's 0-based coordinates."""
        return Point2D(self.polzero[0] - self.origin, self.polzero[1] - self.origin)

    def isSpatiallyVarying(self) -> bool:
        """True for degree > 0 (and for a subclass that redefines the model's methods)."""
        return self.degree > 0 or _overrides_model(type(self))

    def getBBox(self) -> Box2I:
        """The region the model was fitted on, in psfmatch's 0-based pixels.

        PSFEx sets ``POLZERO`` and ``POLSCAL`` to the centre and the extent of
        its stars' positions, so the model is an interpolation inside
        ``POLZERO +- POLSCAL / 2`` and an extrapolation outside.

        Raises
        ------
        InvalidInputError
            For a constant model (degree 0), which has no such region.
        """
        if self.degree == 0:
            raise InvalidInputError(f"{self.name} of degree 0 is the same everywhere: it has no fitted region")
        lo = [z - self.origin - sc / 2 for z, sc in zip(self.polzero, self.polscal)]
        hi = [z - self.origin + sc / 2 for z, sc in zip(self.polzero, self.polscal)]
        xmin, ymin = (math.floor(min(a, b)) for a, b in zip(lo, hi))
        xmax, ymax = (math.ceil(max(a, b)) for a, b in zip(lo, hi))
        return Box2I.from_corners(xmin, ymin, xmax, ymax)

    # --- evaluation ------------------------------------------------------
    def to_context(self, x, y):
        """The file's context values ``(X, Y)`` for the 0-based psfmatch position ``(x, y)``.

        This is the one place where psfmatch's 0-based positions meet PSFEx's
        convention: ``X = x + origin``.
        """
        return x + self.origin, y + self.origin

    def coefficients(self, position) -> np.ndarray:
        """The basis coefficients ``c_k`` at a 0-based parent ``position``, in PSFEx order."""
        x, y = position
        return self._coefficient_matrix([x], [y])[0]

    def _coefficient_matrix(self, xs, ys) -> np.ndarray:
        """:meth:`coefficients` at many positions: an (n, n_terms) array."""
        cx, cy = self.to_context(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        if self.degree == 0:
            return np.ones((len(cx), 1))
        return psfex_terms((cx - self.polzero[0]) / self.polscal[0], (cy - self.polzero[1]) / self.polscal[1],
                           self.degree).T

    def computeSampledImage(self, position=None) -> np.ndarray:
        """The raw model ``M = sum_k c_k B_k`` on the sample grid, before resampling or normalization.

        Its sum is about ``1 / PSF_SAMP**2``.
        """
        pos = self.getAveragePosition() if position is None else position
        c = self.coefficients(pos)
        return np.tensordot(c, self._basis, axes=1)

    def model_flux(self, position=None) -> float:
        """``sum(M) * PSF_SAMP**2``: the model's flux in image pixels before normalization (about 1)."""
        return float(self.computeSampledImage(position).sum() * self.psf_samp ** 2)

    def _resample(self, model, dx, dy):
        """``W_y M W_x^T``: ``model`` (ny, nx) on the sample grid resampled to a stamp offset by ``(dx, dy)``."""
        ny, nx = model.shape[-2:]
        ox = (np.arange(self._w) - self._w // 2 - dx) / self.psf_samp + nx // 2
        oy = (np.arange(self._h) - self._h // 2 - dy) / self.psf_samp + ny // 2
        wx = lanczos_weights(ox, nx)
        wy = lanczos_weights(oy, ny)
        return wy @ model @ wx.T

    def _stamp_basis(self) -> np.ndarray:
        """The basis resampled onto the kernel-image grid, ``B'_k = W_y B_k W_x^T``: (n_terms, h, w), cached.

        The resampling is linear and, for a stamp centred on its position, the
        same at every position, so a kernel image is
        ``W_y (sum_k c_k B_k) W_x^T = sum_k c_k B'_k``: one weighted sum of
        these images instead of two matrix products per stamp (the same values
        to rounding; 0.3 ms -> a few us per 63 x 63 stamp).
        """
        key = (self.psf_samp, self._w, self._h)
        cached = self.__dict__.get("_stamp_basis_cache")
        if cached is None or cached[0] != key:
            stamps = self._resample(self._basis, 0.0, 0.0)
            stamps.setflags(write=False)
            cached = self._stamp_basis_cache = (key, stamps)
        return cached[1]

    def _kernel_image(self, x, y):
        # far outside the model's domain the polynomial may overflow: the stamp is then checked (and
        # rejected with a PsfEvaluationError naming the position) instead of warning on the way
        with np.errstate(over="ignore", invalid="ignore"):
            return np.tensordot(self.coefficients((x, y)), self._stamp_basis(), axes=1)

    def _kernel_images(self, xs, ys):
        """Every stamp at once: the coefficient matrix (n, n_terms) times the resampled basis.

        None (every position evaluated on its own, through :meth:`coefficients`)
        when a subclass overrides :meth:`coefficients` but not
        :meth:`_coefficient_matrix`, which would bypass the override.
        """
        cls = type(self)
        if _defining_depth(cls, "_coefficient_matrix") > _defining_depth(cls, "coefficients"):
            return None
        basis = self._stamp_basis()
        with np.errstate(over="ignore", invalid="ignore"):
            coeffs = self._coefficient_matrix(xs, ys)
            return (coeffs @ basis.reshape(len(basis), -1)).reshape((len(coeffs),) + basis.shape[1:])

    def resized(self, width, height) -> "PsfexPsf":
        _check_odd_size(width, height)
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(width, height)
        return PsfexPsf(self._basis, degree=self.degree, polzero=self.polzero, polscal=self.polscal,
                        psf_samp=self.psf_samp, origin=self.origin, stamp_size=(int(width), int(height)),
                        header=self.header, source=self.source)

    # --- writing ---------------------------------------------------------
    def to_hdu(self):
        """This model as a standard PSFEx ``PSF_DATA`` binary table HDU (1-based contexts).

        A model read with ``origin=0`` is written with its POLZERO shifted by
        +1, so that reading the table back with the default ``origin=1`` gives
        the same model.  The basis is stored as float32 (``E``), as PSFEx
        writes it, when float32 holds it exactly (a model read from a file);
        otherwise (a basis computed in float64) as float64 (``D``), so that
        it reads back bit for bit.
        """
        from astropy.io import fits

        n, ny, nx = self._basis.shape
        single = self._basis.astype(np.float32)
        exact = np.array_equal(single, self._basis)
        col = fits.Column(name="PSF_MASK", format=f"{n * ny * nx}{'E' if exact else 'D'}", dim=f"({nx}, {ny}, {n})",
                          array=(single if exact else self._basis)[None])
        hdu = fits.BinTableHDU.from_columns([col], name="PSF_DATA")
        h = hdu.header
        for key in ("LOADED", "ACCEPTED", "CHI2", "PSF_FWHM"):
            if key in self.header:
                h[key] = self.header[key]
        shift = 1 - self.origin
        if self.degree == 0:
            h["POLNAXIS"] = (0, "Number of context parameters")
        else:
            names = (self.header.get("POLNAME_X", "X_IMAGE"), self.header.get("POLNAME_Y", "Y_IMAGE"))
            h["POLNAXIS"] = (2, "Number of context parameters")
            for i in (0, 1):
                h[f"POLGRP{i + 1}"] = (1, "Polynom group for this context parameter")
                h[f"POLNAME{i + 1}"] = (names[i], "Name of this context parameter")
                h[f"POLZERO{i + 1}"] = (self.polzero[i] + shift, "Offset value for this context parameter")
                h[f"POLSCAL{i + 1}"] = (self.polscal[i], "Scale value for this context parameter")
            h["POLNGRP"] = (1, "Number of context groups")
            h["POLDEG1"] = (self.degree, "Polynom degree for this context group")
        h["PSF_SAMP"] = (self.psf_samp, "Sampling step of the PSF data")
        h["PSFNAXIS"] = (3, "Dimensionality of the PSF data")
        h["PSFAXIS1"] = (nx, "Number of element along this axis")
        h["PSFAXIS2"] = (ny, "Number of element along this axis")
        h["PSFAXIS3"] = (n, "Number of element along this axis")
        return hdu

    # --- equality and pickling ------------------------------------------
    def _eq_key(self):
        """The model's parameters; ``header`` and ``source`` (records of where it came from) do not count.

        ``POLZERO`` enters as ``POLZERO - origin``, the model's centre in
        psfmatch's 0-based pixels, which is all the images depend on: a model
        read with ``origin=0`` equals its persisted copy, written 1-based.
        """
        centre = tuple(z - self.origin for z in self.polzero)
        return (_array_key(self._basis), self.degree, centre, tuple(self.polscal), self.psf_samp, self._w, self._h)

    def __getstate__(self):
        """The model without its cache of resampled stamps (rebuilt on use)."""
        state = self.__dict__.copy()
        state.pop("_stamp_basis_cache", None)
        return state

    def __setstate__(self, state):
        """Restore a pickled (or copied) model with its basis read-only again, as pickling drops the flag."""
        self.__dict__.update(state)
        self._basis.setflags(write=False)

    def __repr__(self):
        n, ny, nx = self._basis.shape
        src = f", source={self.source!r}" if self.source else ""
        return (f"PsfexPsf(<{n} x {nx}x{ny} basis>, degree={self.degree}, psf_samp={self.psf_samp:.6g}, "
                f"stamp={self._w}x{self._h}{src})")


# ---------------------------------------------------------------------------
# reading


@contextlib.contextmanager
def _open(source):
    """``(HDUList, display name, guard)`` for a path, an HDUList or an HDU.

    Everything is read under :func:`psfmatch.io.fits.read_guard`: what a damaged
    file makes astropy or numpy raise comes out as ``CorruptFileError`` naming
    the file and the HDU.  A file opened here is closed on the way out.
    """
    from astropy.io import fits

    from ..io.fits import open_fits, read_guard

    what = "PSFEx model"
    if isinstance(source, (str, os.PathLike)):
        with open_fits(source, "PSFEx", hint="; a PSFEx model is a FITS file with a PSF_DATA binary table") as (
                hdul, guard):
            guard.what = what
            yield hdul, os.fspath(source), guard
        return
    if isinstance(source, fits.HDUList):
        hdul, name = source, getattr(source, "filename", lambda: None)() or "<HDUList>"
    elif isinstance(source, (fits.BinTableHDU, fits.TableHDU)):
        hdul, name = fits.HDUList([fits.PrimaryHDU(), source]), "<HDU>"
    else:
        raise InvalidInputError(
            f"a PSFEx source must be a path, an astropy HDUList or a binary-table HDU; got {type(source).__name__}")
    with read_guard(name, what) as guard:
        yield hdul, name, guard


def _find_table(hdul, ext, where):
    from astropy.io import fits

    if ext is not None:
        if isinstance(ext, (bool, np.bool_)):  # (astropy takes True for index 1)
            raise InvalidInputError(f"{where}: ext must be an HDU's index (an integer) or name; got {ext!r}")
        try:
            hdu = hdul[ext]
        except (KeyError, IndexError):
            raise UnsupportedFormatError(f"{where}: no HDU {ext!r}; the file has "
                                         f"{[h.name for h in hdul]}") from None
    else:
        hdu = None
        for h in hdul:
            if h.name == "PSF_DATA":
                hdu = h
                break
        if hdu is None:
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU) and h.columns is not None
                        and "PSF_MASK" in [c.name.upper() for c in h.columns]), None)
        if hdu is None:
            from ..io.fits import no_image_remedy

            other = no_image_remedy(hdul)
            remedy = (other.replace("not an image", "not a PSFEx model") if other.startswith("it is a Piff")
                      else "pass ext= if the table has another name")
            raise UnsupportedFormatError(
                f"{where}: not a PSFEx model: no PSF_DATA binary table with a PSF_MASK column (HDUs: "
                f"{[h.name for h in hdul]}); {remedy}")
    if not isinstance(hdu, fits.BinTableHDU):
        raise UnsupportedFormatError(f"{where}[{hdu.name}]: a PSFEx PSF_DATA HDU must be a binary table; "
                                     f"got {type(hdu).__name__}")
    return hdu


def is_psfex(source) -> bool:
    """Whether ``source`` (path or HDUList) holds a PSFEx ``PSF_DATA`` table (a cheap header sniff)."""
    from astropy.io import fits

    try:
        with _open(source) as (hdul, _, _):
            for h in hdul:
                if isinstance(h, fits.BinTableHDU) and (
                        h.name == "PSF_DATA" or "PSF_MASK" in [str(h.header.get(f"TTYPE{i}", "")).strip().upper()
                                                               for i in range(1, int(h.header.get("TFIELDS", 0)) + 1)]):
                    return True
            return False
    except Exception:  # an identifier never raises: anything unreadable is not (recognizably) PSFEx
        return False


def _key(h, key, where, kind=float, required=True, default=None):
    if key not in h:
        if required:
            raise CorruptFileError(f"{where}: the PSFEx header lacks keyword {key}; every PSFEx model has it "
                                   "(is this a PSFEx file?)")
        return default
    value = h[key]
    try:
        if kind is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            v = float(value)
            if not math.isfinite(v):
                raise ValueError
            return v
        return str(value).strip()
    except (TypeError, ValueError):
        raise CorruptFileError(f"{where}: PSFEx keyword {key} = {value!r} is not a valid "
                               f"{'integer' if kind is int else 'number'}") from None


def read_psfex(source, *, ext=None, origin=1, stamp_size=None) -> PsfexPsf:
    """Read a PSFEx ``.psf`` model.

    Parameters
    ----------
    source : str, path-like, `~astropy.io.fits.HDUList` or `~astropy.io.fits.BinTableHDU`
        The file, or an already opened file or table.
    ext : int or str, optional
        The HDU holding the model; default: the ``PSF_DATA`` table.
    origin : {1, 0}
        Coordinate of the first pixel's centre in the file's contexts: 1 for
        SExtractor/PSFEx (default), 0 for files made by LSST's
        ``meas_extensions_psfex``.
    stamp_size : int or (int, int), optional
        Odd size of the kernel images (default ``odd(ceil(PSFAXIS * PSF_SAMP))``).

    Returns
    -------
    PsfexPsf

    Raises
    ------
    MissingFileError
        If the path does not exist (a `FileNotFoundError`).
    UnsupportedFormatError
        If there is no PSF_DATA table, or the model depends on contexts other
        than the image position (``POLNGRP > 1``, ``MAG_AUTO``, header keys...).
    CorruptFileError
        If a keyword is missing or invalid, or the header contradicts itself or
        the data (for example ``PSFAXIS3`` not matching ``POLDEG1``).

    Notes
    -----
    Checked: ``POLNAXIS`` in {0, 2}; ``POLNGRP == 1``, ``POLGRP1 == POLGRP2 == 1``;
    context names ``X*_IMAGE``/``Y*_IMAGE`` (in either order); ``POLSCAL`` non-zero;
    ``PSFNAXIS`` in {2, 3}; ``PSFAXIS3 == (d + 1)(d + 2) / 2`` for ``d = POLDEG1``;
    ``PSF_SAMP > 0``; the ``PSF_MASK`` cell holds ``PSFAXIS1 * PSFAXIS2 * PSFAXIS3``
    finite values.  The data (float32 as PSFEx writes them, or float64) are converted to float64.
    """
    if origin not in (0, 1):
        raise InvalidInputError(f"origin must be 0 or 1 (the coordinate of the first pixel's centre); got {origin!r}")
    with _open(source) as (hdul, name, guard):
        hdu = _find_table(hdul, ext, name)
        guard.hdu = hdu.name or ext
        where = f"{name}[{hdu.name or ext}]"
        h = hdu.header
        polnaxis = _key(h, "POLNAXIS", where, int)
        if polnaxis not in (0, 2):
            raise UnsupportedFormatError(
                f"{where}: POLNAXIS = {polnaxis}: unsupported PSFEx context; psfmatch reads models that depend "
                "on the image position only (POLNAXIS = 2, X_IMAGE/Y_IMAGE) or constant models (POLNAXIS = 0)")
        psfnaxis = _key(h, "PSFNAXIS", where, int)
        if psfnaxis not in (2, 3):
            raise CorruptFileError(f"{where}: PSFNAXIS = {psfnaxis}; a PSFEx model has 2 or 3 axes")
        nx = _key(h, "PSFAXIS1", where, int)
        ny = _key(h, "PSFAXIS2", where, int)
        nb = _key(h, "PSFAXIS3", where, int) if psfnaxis == 3 else 1
        for key, v in (("PSFAXIS1", nx), ("PSFAXIS2", ny), ("PSFAXIS3", nb)):
            if v < 1:
                raise CorruptFileError(f"{where}: {key} = {v}; PSFEx axes must be positive")
        psf_samp = _key(h, "PSF_SAMP", where, float)
        if not psf_samp > 0:
            raise CorruptFileError(f"{where}: PSF_SAMP = {psf_samp}; the sampling step must be positive")
        polzero, polscal, degree, names = (0.0, 0.0), (1.0, 1.0), 0, ("X_IMAGE", "Y_IMAGE")
        if polnaxis == 2:
            ngrp = _key(h, "POLNGRP", where, int)
            grp = (_key(h, "POLGRP1", where, int), _key(h, "POLGRP2", where, int))
            if ngrp != 1 or grp != (1, 1):
                raise UnsupportedFormatError(
                    f"{where}: POLNGRP = {ngrp}, POLGRP1/2 = {grp}: unsupported PSFEx context; psfmatch reads "
                    "one polynomial group in the two image coordinates (POLNGRP = 1, POLGRP1 = POLGRP2 = 1)")
            raw_names = [_key(h, f"POLNAME{i}", where, str).upper() for i in (1, 2)]
            axis = []
            for i, nm in enumerate(raw_names):
                if not nm.endswith("_IMAGE") or nm[0] not in "XY":
                    raise UnsupportedFormatError(
                        f"{where}: POLNAME{i + 1} = {nm!r}: unsupported PSFEx context; psfmatch reads models "
                        "in image positions only (X_IMAGE/Y_IMAGE or XWIN_IMAGE/YWIN_IMAGE)")
                axis.append(nm[0])
            if sorted(axis) != ["X", "Y"]:
                raise UnsupportedFormatError(
                    f"{where}: POLNAME1/2 = {raw_names}: need one X and one Y image coordinate")
            zero = [_key(h, f"POLZERO{i}", where, float) for i in (1, 2)]
            scal = [_key(h, f"POLSCAL{i}", where, float) for i in (1, 2)]
            for i, s in enumerate(scal):
                if s == 0:
                    raise CorruptFileError(f"{where}: POLSCAL{i + 1} = 0; the context scale must be non-zero")
            degree = _key(h, "POLDEG1", where, int)
            if degree < 0:
                raise CorruptFileError(f"{where}: POLDEG1 = {degree}; the degree must be >= 0")
            swap = axis[0] == "Y"
        expected = (degree + 1) * (degree + 2) // 2
        if nb != expected:
            raise CorruptFileError(
                f"{where}: PSFAXIS3 = {nb} contradicts POLDEG1 = {degree}, which needs (d+1)(d+2)/2 = {expected} "
                "basis images; the file is inconsistent (re-run PSFEx or fix the header)")
        names_up = [c.name.upper() for c in hdu.columns]
        if "PSF_MASK" not in names_up:
            raise CorruptFileError(f"{where}: no PSF_MASK column (columns: {names_up})")
        if len(hdu.data) < 1:
            raise CorruptFileError(f"{where}: the PSF_DATA table has no rows")
        raw = np.asarray(hdu.data.field(names_up.index("PSF_MASK"))[0])
        if raw.size != nx * ny * nb:
            raise CorruptFileError(
                f"{where}: PSF_MASK holds {raw.size} values but PSFAXIS1 x PSFAXIS2 x PSFAXIS3 = "
                f"{nx} x {ny} x {nb} = {nx * ny * nb}")
        basis = raw.astype(np.float64).reshape(nb, ny, nx)
        if not np.all(np.isfinite(basis)):
            raise CorruptFileError(f"{where}: PSF_MASK contains NaN or inf values: {_first_non_finite(basis)} (a "
                                   "damaged model: rerun PSFEx)")
        header = {k: h[k] for k in ("LOADED", "ACCEPTED", "CHI2", "PSF_FWHM") if k in h}
        if polnaxis == 2:
            if swap:
                # the model is a polynomial in (v1, v2) = (Y, X): transpose the term order to (x, y)
                order = [i + j * (degree + 1) - j * (j - 1) // 2 for (i, j) in
                         [(ii, jj) for ii in range(degree + 1) for jj in range(degree + 1 - ii)]]
                basis = basis[order]
                zero, scal, raw_names = zero[::-1], scal[::-1], raw_names[::-1]
            polzero, polscal, names = tuple(zero), tuple(scal), tuple(raw_names)
            header["POLNAME_X"], header["POLNAME_Y"] = names
        if stamp_size is None:
            w, h = _odd_cover(nx * psf_samp), _odd_cover(ny * psf_samp)
            if max(w, h) > MAX_STAMP_SIZE:
                raise CorruptFileError(
                    f"{where}: PSF_SAMP = {psf_samp:.6g} with PSFAXIS1 x PSFAXIS2 = {nx} x {ny} gives {w}x{h}-pixel "
                    f"kernel images, more than MAX_STAMP_SIZE = {MAX_STAMP_SIZE} per side; the header is probably "
                    "damaged (pass stamp_size= to choose the stamp size)")
        return PsfexPsf(basis, degree=degree, polzero=polzero, polscal=polscal, psf_samp=psf_samp, origin=origin,
                        stamp_size=stamp_size, header=header, source=name)
