"""Adapters for PSF models of optional packages: GalSim objects and Piff files.

Neither GalSim nor Piff is imported when this module is; each adapter imports
its package when it is built and raises
:class:`~psfmatch.errors.MissingDependencyError` (an `ImportError`) with the
install command when it is missing (``pip install 'psfmatch[galsim]'`` or
``pip install 'psfmatch[piff]'``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, MissingFileError
from ..geom import as_point
from .base import Psf, _overrides_model, _stamp_size

__all__ = ["GalSimPsf", "PiffPsf", "has_galsim", "has_piff"]


def _import(name, extra):
    try:
        return __import__(name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this PSF adapter needs the optional package {name!r}, which is not installed: "
            f"pip install 'psfmatch[{extra}]' (or pip install {name})") from exc


def has_galsim() -> bool:
    """Whether GalSim can be imported."""
    try:
        import galsim  # noqa: F401
    except ImportError:
        return False
    return True


def has_piff() -> bool:
    """Whether Piff can be imported."""
    try:
        import piff  # noqa: F401
    except ImportError:
        return False
    return True


def _odd_size(stamp_size, name="stamp_size"):
    return _stamp_size(stamp_size, name)


class GalSimPsf(Psf):
    """A GalSim surface-brightness profile (or a position-dependent factory of them) as a psfmatch PSF.

    Parameters
    ----------
    gsobject : galsim.GSObject or callable
        The PSF profile in arcsec (world units), or a callable ``f(x, y)``
        returning one for the 0-based parent position ``(x, y)`` (a spatially
        varying model).
    pixel_scale : float
        The exposure's pixel scale in arcsec per pixel.
    stamp_size : int or (int, int), optional
        Odd kernel image size; default GalSim's ``getGoodImageSize`` of the
        profile (at ``getAveragePosition``), made odd.
    method : {"auto", "no_pixel"}
        GalSim's drawing method.  ``"auto"`` (default) convolves the profile
        with the pixel, giving the *effective* PSF psfmatch works with; use
        ``"no_pixel"`` for a profile that already includes the pixel (e.g. an
        ``InterpolatedImage`` of an effective PSF, or ``galsim.des.DES_PSFEx``).
    average_position : (float, float)
        Representative position of a spatially varying model (default (0, 0)).

    Raises
    ------
    MissingDependencyError
        If GalSim is not installed.
    InvalidInputError
        If the arguments are invalid, or, without ``stamp_size``, the factory
        fails at ``average_position`` (where the stamp is sized).

    Examples
    --------
    >>> import galsim                                     # doctest: +SKIP
    >>> psf = GalSimPsf(galsim.Moffat(beta=3, fwhm=0.8), pixel_scale=0.2)  # doctest: +SKIP
    """

    name = "GalSimPsf"

    def __init__(self, gsobject, pixel_scale, *, stamp_size=None, method="auto", average_position=(0.0, 0.0)):
        galsim = _import("galsim", "galsim")  # (not kept on the instance: a module cannot be pickled)
        try:
            scale = float(pixel_scale)
        except (TypeError, ValueError):
            raise InvalidInputError(f"pixel_scale must be a positive number (arcsec/pixel); got {pixel_scale!r}") \
                from None
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidInputError(f"pixel_scale must be a positive number (arcsec/pixel); got {pixel_scale!r}")
        if method not in ("auto", "no_pixel"):
            raise InvalidInputError(f"method must be 'auto' (adds the pixel) or 'no_pixel'; got {method!r}")
        self._varying = not isinstance(gsobject, galsim.GSObject)
        if self._varying and not callable(gsobject):
            raise InvalidInputError(
                f"gsobject must be a galsim.GSObject or a callable (x, y) -> GSObject; got {type(gsobject).__name__}")
        self._obj = gsobject
        self.pixel_scale = scale
        self.method = method
        self._average = as_point(average_position, "average_position")
        if stamp_size is None:
            x, y = self._average
            try:
                n = int(self._profile(x, y).getGoodImageSize(scale))
            except InvalidInputError:
                raise
            except Exception as exc:  # a factory failing at the average position (outside its domain)
                raise InvalidInputError(
                    f"GalSimPsf sizes its stamp from the profile at average_position ({x:.6g}, {y:.6g}), where the "
                    f"factory failed: {type(exc).__name__}: {exc}; pass average_position= a position inside the "
                    "model's domain, or stamp_size=") from exc
            stamp_size = n + 1 if n % 2 == 0 else n
        self._w, self._h = _odd_size(stamp_size)

    def _profile(self, x, y):
        if not self._varying:
            return self._obj
        obj = self._obj(x, y)
        if not isinstance(obj, _import("galsim", "galsim").GSObject):
            raise InvalidInputError(f"the GalSim factory returned {type(obj).__name__} at ({x}, {y}); "
                                    "expected a galsim.GSObject")
        return obj

    def _draw(self, x, y, dx, dy):
        img = self._profile(x, y).drawImage(nx=self._w, ny=self._h, scale=self.pixel_scale, method=self.method,
                                            offset=(dx, dy))
        return np.array(img.array, dtype=np.float64)

    def _kernel_image(self, x, y):
        return self._draw(x, y, 0.0, 0.0)

    def _image_at(self, x, y, dx, dy):
        return self._draw(x, y, dx, dy)

    def getDimensions(self):
        return (self._w, self._h)

    def getAveragePosition(self):
        return self._average

    def isSpatiallyVarying(self):
        """Whether a factory gives the profile (True too for a subclass that redefines the model's methods)."""
        return self._varying or _overrides_model(type(self))

    def resized(self, width, height):
        w, h = _odd_size((width, height))
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(w, h)
        return GalSimPsf(self._obj, self.pixel_scale, stamp_size=(w, h), method=self.method,
                         average_position=self._average)

    def _eq_key(self):
        return self._obj, self.pixel_scale, self.method, self._average, self._w, self._h

    def __repr__(self):
        obj = "<callable>" if self._varying else repr(self._obj)
        return f"GalSimPsf({obj}, pixel_scale={self.pixel_scale!r}, stamp_size={self._w}x{self._h})"


class PiffPsf(Psf):
    """A Piff PSF model as a psfmatch PSF.

    Parameters
    ----------
    path_or_object : str, path-like or piff.PSF
        A Piff file (read with ``piff.read``) or a Piff PSF object.
    chipnum : int, optional
        The chip to draw (needed when the model covers several chips).
    stamp_size : int
        Odd kernel image size (default 25).
    origin : {1, 0}
        Coordinate of the first pixel's centre in Piff's image coordinates: 1
        (GalSim/FITS, the default for files made from FITS images), or 0.
        psfmatch's 0-based position ``x`` is passed to Piff as ``x + origin``.
    average_position : (float, float), optional
        Representative 0-based position; default the mean position of the
        model's stars when it has them, else (0, 0).
    **properties
        Extra interpolation properties Piff needs (e.g. a colour).

    Warnings
    --------
    ``piff.read`` unpickles the WCS stored in the file: read Piff files from
    trusted sources only.

    Raises
    ------
    MissingDependencyError
        If Piff (or GalSim) is not installed.
    InvalidInputError
        If the object has no ``draw`` method or the arguments are invalid.
    """

    name = "PiffPsf"

    def __init__(self, path_or_object, *, chipnum=None, stamp_size=25, origin=1, average_position=None,
                 **properties):
        if isinstance(path_or_object, (str, os.PathLike)):
            path = os.fspath(path_or_object)
            try:
                piff = _import("piff", "piff")
            except MissingDependencyError as exc:  # (which of several PSF files needs it)
                raise MissingDependencyError(f"{path} is a Piff PSF model: {exc}") from exc.__cause__
            if not os.path.exists(path):
                raise MissingFileError(f"Piff file {path!r} does not exist")
            self._psf = piff.read(path)
            self.source = path
        else:
            if not callable(getattr(path_or_object, "draw", None)):
                raise InvalidInputError(
                    f"PiffPsf needs a path or a piff.PSF (with a draw method); got {type(path_or_object).__name__}")
            self._psf = path_or_object
            self.source = None
        if origin not in (0, 1):
            raise InvalidInputError(f"origin must be 0 or 1; got {origin!r}")
        w, h = _odd_size(stamp_size)
        if w != h:
            raise InvalidInputError(f"Piff draws square stamps; got stamp_size {w}x{h}")
        self._n = w
        self.chipnum = chipnum
        self.origin = int(origin)
        self.properties = dict(properties)
        if average_position is None:
            stars = getattr(self._psf, "stars", None) or []
            try:
                xs = [s.image_pos.x for s in stars]
                ys = [s.image_pos.y for s in stars]
                average_position = (np.mean(xs) - self.origin, np.mean(ys) - self.origin) if xs else (0.0, 0.0)
            except AttributeError:
                average_position = (0.0, 0.0)
        self._average = as_point(average_position, "average_position")

    @property
    def piff_psf(self):
        """The wrapped Piff PSF object."""
        return self._psf

    def _draw(self, x, y, dx, dy):
        kwargs = dict(self.properties)
        if self.chipnum is not None:
            kwargs["chipnum"] = self.chipnum
        img = self._psf.draw(x + self.origin, y + self.origin, stamp_size=self._n, center=True,
                             offset=(dx, dy) if (dx or dy) else None, **kwargs)
        return np.array(img.array, dtype=np.float64)

    def _kernel_image(self, x, y):
        return self._draw(x, y, 0.0, 0.0)

    def _image_at(self, x, y, dx, dy):
        return self._draw(x, y, dx, dy)

    def getAveragePosition(self):
        return self._average

    def isSpatiallyVarying(self):
        return True

    def resized(self, width, height):
        w, h = _odd_size((width, height))
        if w != h or _overrides_model(type(self)):  # padded or cropped: Piff draws square stamps of its own model
            return super().resized(w, h)
        out = PiffPsf(self._psf, chipnum=self.chipnum, stamp_size=w, origin=self.origin,
                      average_position=self._average, **self.properties)
        out.source = self.source
        return out

    def _eq_key(self):
        """The Piff model (compared as Piff compares it), the chip, the stamp, the origin and the properties."""
        return (self._psf, self.chipnum, self._n, self.origin, tuple(sorted(self.properties.items())),
                self._average)

    def __repr__(self):
        src = self.source or type(self._psf).__name__
        return f"PiffPsf({src!r}, stamp_size={self._n})"

