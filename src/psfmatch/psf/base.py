"""The PSF protocol and the base class that derives everything from kernel images.

A PSF model in psfmatch needs only one method, ``computeKernelImage(position)``,
returning the effective PSF (pixel response included) on an odd-sized stamp,
centred on its centre pixel ``(n // 2)``, with unit sum.  Everything else of
the protocol is derived here from those images:

``computeKernelImage(position)``
    centred stamp, odd width and height, unit sum, float64.
``computeImage(position)``
    the same PSF placed at the sub-pixel ``position`` on a stamp centred on the
    nearest pixel; :meth:`Psf.computeImageBBox` gives its parent bounding box.
``computeBBox(position)``
    the kernel image's box in the PSF's local frame, centred on (0, 0).
``computeShape(position)``
    adaptive second moments (:class:`psfmatch.moments.Quadrupole`).
``getAveragePosition()``
    a representative position (the centre of a spatially varying model's domain).
``resized(width, height)``
    the same model on a stamp of another (odd) size.

:func:`as_psf` wraps any user object that has ``computeKernelImage`` so that it
supports the whole protocol.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..errors import InvalidInputError, PsfComputeShapeError, PsfEvaluationError
from ..geom import Box2I, Point2D, as_point
from ..moments import Quadrupole, adaptive_moments

__all__ = ["Psf", "PsfAdapter", "as_psf", "validate_kernel_image", "pad_or_crop", "shift_image"]


def validate_kernel_image(image, who="PSF", position=None, normalize=True) -> np.ndarray:
    """Check a PSF kernel image against the protocol and return it as unit-sum float64.

    Raises
    ------
    PsfEvaluationError
        If the image is not 2-d, is empty, has an even side, holds non-finite
        values, or has a non-positive sum.  The message names ``who`` and the position.
    """
    where = "" if position is None else f" at ({position[0]:.6g}, {position[1]:.6g})"
    try:
        arr = np.array(image, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise PsfEvaluationError(f"{who} kernel image{where} is not a numeric array: {exc}") from None
    if arr.ndim != 2:
        raise PsfEvaluationError(f"{who} kernel image{where} must be 2-d; got shape {arr.shape}")
    if arr.size == 0:
        raise PsfEvaluationError(f"{who} kernel image{where} is empty (shape {arr.shape})")
    h, w = arr.shape
    if h % 2 == 0 or w % 2 == 0:
        raise PsfEvaluationError(
            f"{who} kernel image{where} has even size {w}x{h}; kernel images must be odd-sized and centred "
            "on their centre pixel (wrap an even image in ImagePsf, which re-centres it)")
    if not np.all(np.isfinite(arr)):
        raise PsfEvaluationError(f"{who} kernel image{where} contains NaN or inf values")
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if not np.isfinite(total):
        raise PsfEvaluationError(f"{who} kernel image{where} has a sum that overflows (values up to "
                                 f"{np.abs(arr).max():.3g}); a PSF stamp should hold modest values")
    if not total > 0:
        raise PsfEvaluationError(f"{who} kernel image{where} has non-positive sum {total:.6g}; a PSF needs positive flux")
    if normalize:
        arr /= total
    return arr


def pad_or_crop(image, width, height) -> np.ndarray:
    """Centre ``image`` on a ``height x width`` canvas, zero-padding or cropping symmetrically.

    The centre pixel stays the centre pixel; sizes must be odd.
    """
    image = np.asarray(image)
    h, w = image.shape
    if width % 2 == 0 or height % 2 == 0:
        raise InvalidInputError(f"stamp sizes must be odd; got {width}x{height}")
    out = np.zeros((height, width), dtype=image.dtype)
    # offsets of the source in the destination (negative: crop)
    oy, ox = height // 2 - h // 2, width // 2 - w // 2
    sy0, sx0 = max(0, -oy), max(0, -ox)
    dy0, dx0 = max(0, oy), max(0, ox)
    ny, nx = min(h - sy0, height - dy0), min(w - sx0, width - dx0)
    out[dy0:dy0 + ny, dx0:dx0 + nx] = image[sy0:sy0 + ny, sx0:sx0 + nx]
    return out


def shift_image(image, dx, dy, pad=None) -> np.ndarray:
    """Shift ``image`` by ``(dx, dy)`` pixels with a Fourier phase ramp (flux conserving).

    The image is zero-padded by ``pad`` pixels (default: enough for the shift
    plus a margin) before the shift to keep wrap-around out of the stamp, then
    cropped back to its shape.
    """
    image = np.asarray(image, dtype=np.float64)
    if dx == 0 and dy == 0:
        return image.copy()
    h, w = image.shape
    if pad is None:
        pad = int(math.ceil(max(abs(dx), abs(dy)))) + 8
    big = np.pad(image, pad)
    shifted = ndimage.fourier_shift(np.fft.fft2(big), (dy, dx))
    out = np.fft.ifft2(shifted).real
    return out[pad:pad + h, pad:pad + w]


class Psf:
    """Base class of psfmatch's PSF models.

    Subclasses implement :meth:`_kernel_image` (and may override
    :meth:`_image_at`, :meth:`getAveragePosition` and :meth:`resized`); the
    base class validates the stamps and derives the rest of the protocol.
    """

    #: Name used in error messages.
    name = "PSF"

    # --- to implement ---------------------------------------------------
    def _kernel_image(self, x: float, y: float) -> np.ndarray:
        raise NotImplementedError

    def _image_at(self, x: float, y: float, dx: float, dy: float) -> np.ndarray:
        """The PSF at (x, y), shifted by the sub-pixel offset (dx, dy) from the stamp centre."""
        return shift_image(self._checked_kernel(x, y), dx, dy)

    # --- the protocol ---------------------------------------------------
    def _checked_kernel(self, x, y):
        try:
            img = self._kernel_image(x, y)
        except PsfEvaluationError:
            raise
        except Exception as exc:  # a model failing at a position is reported with that position
            raise PsfEvaluationError(
                f"{self.name} could not be evaluated at ({x:.6g}, {y:.6g}): {type(exc).__name__}: {exc}") from exc
        return validate_kernel_image(img, self.name, (x, y))

    def computeKernelImage(self, position=None) -> np.ndarray:
        """The PSF at ``position``, centred on the centre pixel of an odd stamp, unit sum, float64.

        Parameters
        ----------
        position : Point2D or (x, y), optional
            Parent pixel position; defaults to :meth:`getAveragePosition`.
        """
        x, y = self.getAveragePosition() if position is None else as_point(position)
        return self._checked_kernel(x, y)

    def computeImage(self, position=None) -> np.ndarray:
        """The PSF placed at the sub-pixel ``position``.

        The stamp has the kernel image's size and is centred on the pixel nearest
        ``position``; its parent bounding box is :meth:`computeImageBBox`.  Its sum is 1.
        """
        x, y = self.getAveragePosition() if position is None else as_point(position)
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        img = np.asarray(self._image_at(x, y, x - xi, y - yi), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            total = img.sum()
        if not (np.all(np.isfinite(img)) and np.isfinite(total) and total > 0):
            raise PsfEvaluationError(f"{self.name} image at ({x:.6g}, {y:.6g}) is not finite or has no flux")
        return img / total

    def computeImageBBox(self, position=None) -> Box2I:
        """Parent bounding box of :meth:`computeImage` at ``position``."""
        x, y = self.getAveragePosition() if position is None else as_point(position)
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        local = self.computeBBox((x, y))
        return local.shifted(xi, yi)

    def computeBBox(self, position=None) -> Box2I:
        """Bounding box of the kernel image in the local frame: centred on (0, 0)."""
        h, w = self.computeKernelImage(position).shape
        return Box2I((-(w // 2), -(h // 2)), (w, h))

    def computeShape(self, position=None) -> Quadrupole:
        """Adaptive second moments of the kernel image at ``position``.

        Raises
        ------
        PsfComputeShapeError
            If the PSF cannot be evaluated there or the moments do not converge.
        """
        pos = self.getAveragePosition() if position is None else as_point(position)
        try:
            img = self.computeKernelImage(pos)
        except PsfEvaluationError as exc:
            raise PsfComputeShapeError(pos, str(exc)) from exc
        ixx, iyy, ixy, xc, yc, ok = adaptive_moments(img)
        if not ok:
            raise PsfComputeShapeError(pos, "adaptive moments did not converge")
        return Quadrupole(float(ixx), float(iyy), float(ixy), float(xc), float(yc))

    def getAveragePosition(self) -> Point2D:
        """A representative position: (0, 0) for a constant model."""
        return Point2D(0.0, 0.0)

    def isSpatiallyVarying(self) -> bool:
        return False

    def resized(self, width: int, height: int) -> "Psf":
        """This model on a ``width x height`` stamp (odd sizes), zero-padded or cropped about the centre."""
        _check_odd_size(width, height)
        return _ResizedPsf(self, int(width), int(height))

    def __repr__(self):
        return f"{type(self).__name__}()"


def _check_odd_size(width, height):
    for name, v in (("width", width), ("height", height)):
        if int(v) != v or v < 1 or int(v) % 2 == 0:
            raise InvalidInputError(f"PSF stamp {name} must be a positive odd integer; got {v!r}")


class _ResizedPsf(Psf):
    """Another model's kernel images padded or cropped to a fixed size."""

    def __init__(self, psf, width, height):
        self._psf = psf
        self._w, self._h = width, height
        self.name = getattr(psf, "name", type(psf).__name__)

    def _kernel_image(self, x, y):
        return pad_or_crop(self._psf.computeKernelImage(Point2D(x, y)), self._w, self._h)

    def getAveragePosition(self):
        return self._psf.getAveragePosition()

    def isSpatiallyVarying(self):
        return self._psf.isSpatiallyVarying()

    def resized(self, width, height):
        _check_odd_size(width, height)
        return _ResizedPsf(self._psf, int(width), int(height))

    def __repr__(self):
        return f"{self._psf!r}.resized({self._w}, {self._h})"


class PsfAdapter(Psf):
    """Wrap a user object that has only ``computeKernelImage(position)``.

    Everything the object lacks is derived from its kernel images.  The object
    receives a :class:`~psfmatch.geom.Point2D`, which also unpacks as ``x, y``.
    """

    def __init__(self, obj):
        if not callable(getattr(obj, "computeKernelImage", None)):
            raise InvalidInputError(
                f"a PSF model needs a computeKernelImage(position) method; {type(obj).__name__} has none")
        self.obj = obj
        self.name = type(obj).__name__

    def _kernel_image(self, x, y):
        return self.obj.computeKernelImage(Point2D(x, y))

    def getAveragePosition(self):
        fn = getattr(self.obj, "getAveragePosition", None)
        if callable(fn):
            try:
                return as_point(fn())
            except Exception:  # a partial implementation: fall back to the origin
                pass
        return Point2D(0.0, 0.0)

    def isSpatiallyVarying(self):
        fn = getattr(self.obj, "isSpatiallyVarying", None)
        return bool(fn()) if callable(fn) else True

    def __repr__(self):
        return f"PsfAdapter({self.obj!r})"


def as_psf(obj) -> Psf:
    """Return ``obj`` if it is a :class:`Psf`, else wrap it in a :class:`PsfAdapter`."""
    if isinstance(obj, Psf):
        return obj
    return PsfAdapter(obj)
