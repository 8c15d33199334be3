"""A PSF given as a fixed image."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..geom import Box2I
from ..moments import adaptive_moments
from .base import Psf, pad_or_crop, shift_image, _array_key, _check_odd_size, _overrides_model

__all__ = ["ImagePsf"]


class ImagePsf(Psf):
    """A spatially constant PSF given as an image.

    Parameters
    ----------
    array : array_like, 2-d
        The PSF image (any positive-sum real array; it is normalized to unit sum).
    recenter : bool
        If True, shift the image (Fourier phase ramp, flux conserving) so that its
        adaptive-moment centroid lies on the centre pixel.  Default False: the
        centre pixel of an odd array is taken as the PSF centre.
    pixel_scale : float, optional
        Pixel scale of the array (arcsec per pixel), recorded for readers and resampling.

    Notes
    -----
    Even-sized axes have no centre pixel.  Such an array is shifted by half a
    pixel along each even axis (Fourier phase ramp) onto a stamp one pixel
    larger along that axis, so its geometric centre ``(n - 1) / 2`` lands on the
    new centre pixel ``n // 2``.  Flux and the geometric centre are preserved.

    Raises
    ------
    InvalidInputError
        If the array is not 2-d, is empty, holds NaN/inf, or has a non-positive sum, is
        a numpy masked array (fill its masked pixels first), or ``pixel_scale`` is not
        a positive number.
    """

    name = "ImagePsf"

    def __init__(self, array, *, recenter=False, pixel_scale=None):
        if not isinstance(recenter, (bool, np.bool_)):  # ("no", a word from a file, would count as true)
            raise InvalidInputError(f"ImagePsf: recenter must be True or False; got {recenter!r}")
        if isinstance(array, np.ma.MaskedArray):
            raise InvalidInputError(
                "ImagePsf got a numpy masked array, whose mask it would ignore (the masked pixels' values would "
                "enter the PSF); fill the masked pixels first, e.g. ImagePsf(arr.filled(0))")
        try:
            arr = np.array(array, dtype=np.float64, copy=True)
        except (TypeError, ValueError):
            raise InvalidInputError(f"ImagePsf needs a numeric 2-d array; got {type(array).__name__}") from None
        if arr.ndim != 2:
            raise InvalidInputError(f"ImagePsf needs a 2-d array; got {arr.ndim} dimension(s), shape {arr.shape}")
        if arr.size == 0:
            raise InvalidInputError(f"ImagePsf needs a non-empty array; got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"ImagePsf array holds {int(np.sum(~np.isfinite(arr)))} NaN or inf values")
        with np.errstate(over="ignore", invalid="ignore"):
            total = arr.sum()
        if not np.isfinite(total):
            raise InvalidInputError(f"ImagePsf array's sum overflows (values up to {np.abs(arr).max():.3g}); "
                                    "rescale the array")
        if not total > 0:
            raise InvalidInputError(f"ImagePsf array has non-positive sum {total:.6g}; a PSF needs positive flux")
        h, w = arr.shape
        arr /= total  # unit sum first, so that the Fourier shifts below work on modest numbers
        with np.errstate(over="ignore", invalid="ignore"):
            if h % 2 == 0 or w % 2 == 0:
                arr = np.pad(arr, ((0, h % 2 == 0), (0, w % 2 == 0)))
                arr = shift_image(arr, 0.5 if w % 2 == 0 else 0.0, 0.5 if h % 2 == 0 else 0.0)
            if recenter:
                _, _, _, xc, yc, ok = adaptive_moments(arr)
                if not ok:
                    raise InvalidInputError("ImagePsf(recenter=True): could not measure the image's centroid")
                arr = shift_image(arr, -float(xc), -float(yc))
            total = arr.sum()
        if not (np.all(np.isfinite(arr)) and np.isfinite(total) and total > 0):
            raise InvalidInputError("ImagePsf: re-centring the array overflowed or left no flux (its values are "
                                    "extreme: positive and negative ones cancel in the sum); rescale the array")
        arr /= total
        arr.setflags(write=False)
        self._array = arr
        if pixel_scale is not None:
            try:
                scale = float(pixel_scale)
            except (TypeError, ValueError):
                scale = float("nan")
            if isinstance(pixel_scale, (bool, np.bool_)) or not (np.isfinite(scale) and scale > 0):
                raise InvalidInputError(f"ImagePsf pixel_scale must be a positive number (arcsec per pixel); "
                                        f"got {pixel_scale!r}")
            pixel_scale = scale
        self.pixel_scale = pixel_scale

    @classmethod
    def _from_unit_sum(cls, array, *, pixel_scale=None) -> "ImagePsf":
        """An ImagePsf of an odd array of unit sum (one psfmatch stored), taken bit for bit.

        The constructor's checks apply (2-d, finite, positive sum, a valid
        ``pixel_scale``); an odd array whose sum is 1 to rounding is then kept
        as it is, rather than divided by that sum again (a sum of
        ``1 - 1e-16`` changes the values in their last bits).  Any other array
        is normalized (and an even one centred) as the constructor does.
        """
        psf = cls(array, pixel_scale=pixel_scale)
        arr = np.array(array, dtype=np.float64, copy=True)
        if arr.shape == psf._array.shape and abs(float(arr.sum()) - 1.0) <= 1e-10:
            arr.setflags(write=False)
            psf._array = arr
        return psf

    @classmethod
    def readFits(cls, path, **kwargs) -> "ImagePsf":
        """Read a PSF image from FITS, resampled to ``target_pixel_scale`` when given.

        See :func:`psfmatch.psf.image_io.read_image_psf` for the keywords
        (``hdu``, ``pixel_scale``, ``target_pixel_scale``, ``recenter``, ``background``, ``size``).
        """
        from .image_io import read_image_psf

        return read_image_psf(path, **kwargs)

    @property
    def array(self) -> np.ndarray:
        """The (odd, unit-sum, read-only) kernel image."""
        return self._array

    def _kernel_image(self, x, y):
        return self._array

    def computeBBox(self, position=None):
        h, w = self._array.shape
        return Box2I((-(w // 2), -(h // 2)), (w, h))

    def isSpatiallyVarying(self):
        """False: one image everywhere (True for a subclass that redefines the model's methods)."""
        return _overrides_model(type(self))

    def resized(self, width, height):
        _check_odd_size(width, height)
        if _overrides_model(type(self)):  # a subclass's own images, padded or cropped
            return super().resized(width, height)
        out = ImagePsf.__new__(ImagePsf)
        arr = pad_or_crop(self._array, int(width), int(height))
        if not arr.sum() > 0:
            raise InvalidInputError(f"resizing ImagePsf to {width}x{height} leaves no flux")
        arr = arr / arr.sum()
        arr.setflags(write=False)
        out._array = arr
        out.pixel_scale = self.pixel_scale
        return out

    def _eq_key(self):
        return _array_key(self._array), self.pixel_scale

    def __setstate__(self, state):
        """Restore a pickled (or copied) model with its array read-only again, as pickling drops the flag."""
        self.__dict__.update(state)
        self._array.setflags(write=False)

    def __repr__(self):
        h, w = self._array.shape
        return f"ImagePsf(<{w}x{h} array>)"
