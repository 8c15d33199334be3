"""PSF images from FITS files, their pixel scale, and resampling to another pixel scale.

Telescope PSF images (Spitzer IRAC, HST/TinyTim, webbpsf/stpsf, empirical
stacks, pypher inputs) come as plain FITS images whose pixel scale is given by
one of several header conventions.  :func:`read_image_psf` reads one, finds
its pixel scale (:func:`pixel_scale_from_header`), and resamples it onto the
exposure's pixel grid when the two scales differ (:func:`resample_psf`).

Conventions
-----------
Pixel scales are in arcsec per pixel.  The PSF centre of an array is its
geometric centre ``((nx - 1) / 2, (ny - 1) / 2)`` (the centre pixel of an odd
array; between two pixels along an even axis), or its adaptive-moment
centroid with ``recenter=True``.  After resampling the centre lies on the
centre pixel of an odd stamp and the stamp has unit sum.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import sys
import warnings

import numpy as np

from ..errors import CorruptFileError, InvalidInputError, PsfMatchWarning, UnsupportedFormatError
from ..moments import adaptive_moments
from ..parallel import catch_warnings
from .image_psf import ImagePsf
from .psfex import MAX_STAMP_SIZE, lanczos_weights

__all__ = ["read_image_psf", "pixel_scale_from_header", "pixel_axis_scales", "pixel_scale_from_wcs", "resample_psf",
           "PIXEL_SCALE_KEYS", "PSF_LIKE_MIN_SIZE", "PSF_LIKE_MIN_CENTRAL_FRACTION", "PEDESTAL_MIN_FRACTION",
           "PEDESTAL_MAX_SPREAD", "NON_SQUARE_TOLERANCE"]

log = logging.getLogger(__name__)

#: Header keywords giving the pixel scale directly in arcsec per pixel, in the order they are tried.
PIXEL_SCALE_KEYS = ("PIXELSCL", "PIXSCALE", "SECPIX", "PIXSCAL1", "PIXSCALX")

#: ``require_psf_like=True`` checks an image whose larger side has at least this many pixels; a smaller
#: one is taken as a PSF stamp (every real PSF image the tests read is at most 101 px; a tight stamp,
#: or one on a soft bias such as SDSS's, holds much of its light near its edges).
PSF_LIKE_MIN_SIZE = 128
#: ``require_psf_like=True`` wants at least this fraction of a checked image's flux in its central box
#: (the middle half along each axis, a quarter of the area): real PSF images hold 0.9-1.0 there, a
#: Gaussian PSF of sigma a quarter of the stamp about half; a sky-subtracted science frame about 0.25.
PSF_LIKE_MIN_CENTRAL_FRACTION = 0.5

#: :func:`read_image_psf` warns of a pedestal (an unsubtracted bias or sky) when the low level of the image's
#: border (its 10th percentile) is above this fraction of its peak and the border is flat (see
#: :data:`PEDESTAL_MAX_SPREAD`).  The SDSS PSF image read without ``background=1000`` has its whole border at
#: 0.033 of its peak; the real PSF images of the project's test data (IRAC, HST/ACS, shera) at most 0.002 there.
PEDESTAL_MIN_FRACTION = 0.01
#: A border is flat, as a pedestal's is and a PSF wing's is not, when its 90th percentile is at most
#: ``1 + PEDESTAL_MAX_SPREAD`` times its 10th (a Gaussian cut at 2 sigma: about 4.5 times).
PEDESTAL_MAX_SPREAD = 1.0

#: Largest relative difference of a PSF image's two pixel scales (:func:`pixel_axis_scales`) that
#: :func:`read_image_psf` resamples by one ratio (their geometric mean); beyond it, resampling is refused.
NON_SQUARE_TOLERANCE = 0.01

#: Arcsec per unit of the WCS angle units (``CUNIT1``) that the CD and CDELT cards may be in.
_ARCSEC_PER_UNIT = {"deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0, "mas": 1e-3}


def _positive_scale(value, what):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a positive number (arcsec per pixel); got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise InvalidInputError(f"{what} must be a positive number (arcsec per pixel); got {value!r}")
    return v


def _sky_axis(ctype):
    """``("lon" or "lat", pairing key, projection code)`` of a celestial ``CTYPE``, or None.

    The FITS WCS naming rule (Calabretta & Greisen 2002), read from the names alone: the first four
    characters (``-`` padded) are ``RA--``/``DEC-``, ``xLON``/``xLAT`` or ``xyLN``/``xyLT``, then an
    optional ``-`` and projection code.  No projection parameters are needed, unlike wcslib's
    ``wcsset``, which refuses ZPN, the conics and BON without their ``PV`` cards.
    """
    ctype = ctype.upper()
    if len(ctype) > 4 and ctype[4] != "-":
        return None  # e.g. RADIUS, DECLINATION: not a coordinate type and a projection code
    name, proj = ctype[:4].rstrip("-"), ctype[5:8]
    if name in ("RA", "DEC"):
        return ("lon" if name == "RA" else "lat"), "RA/DEC", proj
    if len(name) == 4 and name[1:] in ("LON", "LAT"):
        return ("lon" if name[1:] == "LON" else "lat"), name[0], proj
    if len(name) == 4 and name[2:] in ("LN", "LT"):
        return ("lon" if name[2:] == "LN" else "lat"), name[:2], proj
    return None


def _celestial_axes(header):
    """Whether ``CTYPE1``/``CTYPE2`` make axes 1 and 2 a celestial pair, judged by their names.

    ``RA---TAN``/``DEC--TAN``, ``GLON-CAR``/``GLAT-CAR``, ``HPLN-TAN``/``HPLT-TAN``, ``RA---ZPN``/
    ``DEC--ZPN`` (with or without its ``PV`` cards), ``RA``/``DEC``, ... are: one longitude and one
    latitude of the same system with the same projection code.  ``LINEAR`` (IRAF's physical/logical
    pixel systems), ``PIXEL``, absent CTYPEs (linear by the FITS standard) and an unmatched pair
    (``RA---TAN``/``GLAT-TAN``, ``RA---TAN``/``DEC--SIN``, ``RA---TAN``/``LINEAR``) are not.
    """
    axes = [_sky_axis(str(header.get(f"CTYPE{i}", "")).strip()) for i in (1, 2)]
    if None in axes:
        return False
    (kind1, system1, proj1), (kind2, system2, proj2) = axes
    return {kind1, kind2} == {"lon", "lat"} and system1 == system2 and proj1 == proj2


def pixel_scale_from_header(header, where="header"):
    """The pixel scale (arcsec per pixel) that a FITS header states, or None.

    Tried in order: the arcsec keywords ``PIXELSCL`` (webbpsf/stpsf/poppy,
    after oversampling), ``PIXSCALE``, ``SECPIX``, ``PIXSCAL1``/``PIXSCAL2``,
    ``PIXSCALX``/``PIXSCALY`` (their geometric mean when both are given); then
    a celestial WCS: ``CD1_1..CD2_2`` (``sqrt(|det CD|)``), or ``CDELT1/2``
    (``sqrt(|CDELT1 CDELT2|)``, times the PC matrix determinant), each axis
    ``i`` in the unit ``CUNITi`` gives (``deg`` by default, ``CUNIT1``'s for
    an absent ``CUNIT2``; ``arcmin``,
    ``arcsec``, ``mas``; None for another unit).  CD and CDELT count only when
    ``CTYPE1``/``CTYPE2`` are a celestial pair (``RA---TAN``/``DEC--TAN``,
    ``GLON-CAR``/``GLAT-CAR``, ``RA---ZPN``/``DEC--ZPN``, ...; judged by their
    names, so projections with parameters need no ``PV`` cards): a pixel WCS
    (IRAF's ``LINEAR``, no CTYPE) states no sky scale, and gives None.
    The geometric mean of :func:`pixel_axis_scales`.

    Raises
    ------
    CorruptFileError
        If a pixel-scale keyword is present but not a non-zero number (its
        sign is dropped: a CDELT1 of RA is negative), or the WCS matrix is
        singular or not made of numbers.
    """
    axes = pixel_axis_scales(header, where)
    return None if axes is None else math.sqrt(axes[0] * axes[1])


def pixel_axis_scales(header, where="header"):
    """``(x scale, y scale)`` in arcsec per pixel that a FITS header states, or None.

    The keywords of :func:`pixel_scale_from_header`, in its order: one scale
    (``PIXELSCL``, ``PIXSCALE``, ``SECPIX``) for both axes; ``PIXSCAL1`` and
    ``PIXSCAL2`` (or ``...X``/``...Y``; one alone for both); else the lengths
    of the columns of the celestial WCS's pixel matrix (``CD``, or ``CDELT``
    times ``PC``), each row ``i`` in ``CUNITi`` (``CUNIT1`` also for the
    second axis when ``CUNIT2`` is absent): the sky length of a step of one
    pixel along x and along y.
    """
    def num(key):
        value = header[key]
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (math.isfinite(v) and v != 0):
            raise CorruptFileError(f"{where}: pixel-scale keyword {key} = {value!r} is not a non-zero number; "
                                   "pass pixel_scale= to override it")
        return v

    def matrix(keys, default):
        try:
            return np.array([[header.get(k, d) for k, d in zip(row, drow)] for row, drow in zip(keys, default)],
                            dtype=float)
        except (TypeError, ValueError):
            raise CorruptFileError(f"{where}: the WCS matrix cards {keys} are not all numbers; pass pixel_scale=")

    for key in ("PIXELSCL", "PIXSCALE", "SECPIX"):
        if key in header:
            v = abs(num(key))
            return v, v
    for kx, ky in (("PIXSCAL1", "PIXSCAL2"), ("PIXSCALX", "PIXSCALY")):
        if kx in header:
            sx = abs(num(kx))
            return sx, (abs(num(ky)) if ky in header else sx)
    if not _celestial_axes(header):
        return None  # CD / CDELT of a pixel (e.g. LINEAR) WCS are no angles
    # None: an angle unit psfmatch does not know (or not an angle).  CUNIT2 absent, CUNIT1 is taken for it (the
    # standard's default is deg, but a header giving one axis in arcsec and the other in degrees is sloppy, not meant)
    unit1 = str(header.get("CUNIT1", "deg")).strip().lower() or "deg"
    unit2 = str(header.get("CUNIT2", unit1)).strip().lower() or unit1
    factors = [_ARCSEC_PER_UNIT.get(unit1), _ARCSEC_PER_UNIT.get(unit2)]
    if any(k in header for k in ("CD1_1", "CD2_2", "CD1_2", "CD2_1")):
        if None in factors:
            return None
        m = matrix((("CD1_1", "CD1_2"), ("CD2_1", "CD2_2")), ((0.0, 0.0), (0.0, 0.0)))
        what = f"the CD matrix {m.tolist()} is singular"
    elif "CDELT1" in header and "CDELT2" in header:
        if None in factors:
            return None
        pc = matrix((("PC1_1", "PC1_2"), ("PC2_1", "PC2_2")), ((1.0, 0.0), (0.0, 1.0)))
        m = np.diag([num("CDELT1"), num("CDELT2")]) @ pc
        what = "CDELT/PC give a singular pixel matrix"
    else:
        return None
    m = np.diag(factors) @ m  # row i (sky axis i) in arcsec
    det = abs(float(np.linalg.det(m)))
    if not (math.isfinite(det) and det > 0):
        raise CorruptFileError(f"{where}: {what}; pass pixel_scale=")
    sx, sy = np.hypot(m[0], m[1])  # the columns' lengths: a pixel step along x, along y
    return float(sx), float(sy)


def pixel_scale_from_wcs(wcs):
    """Pixel scale (arcsec per pixel, geometric mean of the two axes) of an astropy celestial WCS, or None."""
    if wcs is None:
        return None
    try:
        from astropy.wcs.utils import proj_plane_pixel_scales

        if not wcs.has_celestial:
            return None
        scales = proj_plane_pixel_scales(wcs.celestial)  # degrees
        units = [str(u) for u in wcs.celestial.wcs.cunit]
    except Exception:  # not an astropy WCS, or no celestial part
        return None
    factor = 3600.0 if all(u in ("deg", "") for u in units) else None
    if factor is None:
        return None
    return float(math.sqrt(abs(scales[0] * scales[1])) * factor)


def _target_scale(target):
    if target is None:
        return None
    if hasattr(target, "getWcs"):
        scale = pixel_scale_from_wcs(target.getWcs())
        if scale is None:
            raise InvalidInputError("the exposure given as target_pixel_scale has no celestial WCS; pass the "
                                    "pixel scale in arcsec per pixel instead")
        return scale
    if hasattr(target, "has_celestial"):
        scale = pixel_scale_from_wcs(target)
        if scale is None:
            raise InvalidInputError("the WCS given as target_pixel_scale has no celestial part; pass the pixel "
                                    "scale in arcsec per pixel instead")
        return scale
    return _positive_scale(target, "target_pixel_scale")


#: Knots of constant value added beyond each end of the cumulative before the spline is fitted
#: (:func:`_rebin_axis`), so that the spline is flat beyond the image.
_CUMULATIVE_PAD = 8


def _rebin_axis(a, axis, n_out, ratio, c_in):
    """Rebin ``a`` along ``axis`` onto ``n_out`` pixels ``ratio >= 1`` times larger (:func:`resample_psf`).

    Output pixel ``i`` spans input coordinates ``[lo_i, hi_i] = c_in + (i - n_out // 2 -/+ 0.5) * ratio`` and
    is ``F(hi_i) - F(lo_i)``, with ``F`` the cumulative of the input along the axis: at the input pixels'
    edges ``F(k - 1/2) = sum_{j < k} a_j``, which is exactly the integral of the optical PSF up to that edge (an
    effective PSF's pixel is the PSF's integral over it); between the edges, the interpolating cubic spline
    through those values (constant beyond the array).
    """
    from scipy.interpolate import make_interp_spline

    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    n_in, pad = a.shape[-1], _CUMULATIVE_PAD
    F = np.cumsum(a, axis=-1)
    F = np.concatenate([np.zeros(a.shape[:-1] + (pad + 1,)), F, np.repeat(F[..., -1:], pad, axis=-1)], axis=-1)
    knots = np.arange(-pad, n_in + 1 + pad) - 0.5
    spline = make_interp_spline(knots, F, k=3, axis=-1)
    lo = c_in + (np.arange(n_out) - n_out // 2 - 0.5) * ratio
    hi = lo + ratio
    # an exact block sum wherever an output edge falls on an input edge (the spline passes through its knots)
    out = spline(np.clip(hi, knots[0], knots[-1])) - spline(np.clip(lo, knots[0], knots[-1]))
    return np.moveaxis(out, -1, axis)


def _rebin_matrix(n_out, n_in, ratio, c_in):
    """``W[i, j]``: the weight of input pixel ``j`` in output pixel ``i`` of :func:`_rebin_axis` (it is linear)."""
    return _rebin_axis(np.eye(n_in), 0, n_out, ratio, c_in)


def _resampled_size(nx, ny, ratio, size):
    """Odd output ``(width, height)`` of :func:`resample_psf`: ``size``, or the odd size covering the input."""
    if size is None:
        def odd_cover(n):
            v = n / ratio  # inf for a subnormal ratio: reported as such, never allocated
            if not v < 2.0 ** 53:
                return v
            m = int(math.ceil(v - 1e-9))
            return m + (m % 2 == 0)

        return odd_cover(nx), odd_cover(ny)
    return _odd_size(size, "resample_psf")


def _odd_size(size, who):
    """``size`` (an int, or a ``(width, height)`` pair) as odd positive integers, else InvalidInputError."""
    try:
        w, h = (size, size) if np.ndim(size) == 0 else size
        ok = all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
                 and int(v) == v and v >= 1 and int(v) % 2 == 1 for v in (w, h))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError(f"{who} size must be an odd positive integer or a (width, height) pair of them; "
                                f"got {size!r}")
    return int(w), int(h)


def resample_psf(array, ratio, *, center=None, size=None) -> np.ndarray:
    """Resample a PSF image onto pixels ``ratio`` times larger, flux-conserving and centre-preserving.

    Parameters
    ----------
    array : array_like, 2-d
        The PSF image (an effective PSF at its own pixel scale).
    ratio : float
        Output pixel size in input pixels: ``output_scale / input_scale``.
    center : (float, float), optional
        The PSF centre ``(x, y)`` in input array coordinates; default the
        geometric centre ``((nx - 1) / 2, (ny - 1) / 2)``.
    size : int or (int, int), optional
        Odd output ``(width, height)``; default the odd size covering the input,
        ``odd(ceil(n_in / ratio))``.

    Returns
    -------
    ndarray
        Odd stamp whose centre pixel is the PSF centre, unit sum, float64.

    Raises
    ------
    InvalidInputError
        If the array is not 2-d, ``ratio`` is not a positive finite number,
        ``size`` is not odd, or the output stamp would be larger than
        :data:`~psfmatch.psf.psfex.MAX_STAMP_SIZE` pixels (checked before
        anything is allocated).

    Notes
    -----
    Coarser output pixels (``ratio >= 1``): an effective PSF's pixel is the
    integral of the optical PSF over it, so the running sum of the input
    along an axis is the optical PSF's cumulative integral at the pixels'
    edges; each output pixel is the difference of that cumulative at its two
    edges, interpolated between the input's edges by a cubic spline
    (:func:`_rebin_axis`; separable).  Where the output's edges fall on the
    input's (an odd integer ratio) each output pixel is the exact sum of a
    block of input pixels; elsewhere it is the optical PSF integrated over
    the larger pixel, the effective PSF at the coarser scale, to the
    spline's accuracy.  For a Gaussian of sigma 1.5 input px the pixels
    come out within 3.7e-3 of the peak at every ratio from 1.05 to 3.5
    (3.6e-3 at 2) and the adaptive width within 0.2 % up to a ratio of
    1.65, 0.46 % at 2 and 1.5 % at 2.1, where the output (sigma 0.71 px) is
    undersampled; for 3 px, within 2.3e-4 (2.1e-4 at 2) and 0.01 %.  Taking
    the input pixels as uniform boxes
    instead (area-weighted rebinning) adds their width again wherever an
    output edge cuts one: 3-5 % too wide at sigma 1.5 px.  The spline rings
    beside a core narrower than the input pixels: values down to -7e-5 of the
    peak at sigma 1 input px, -2e-2 at 0.5 px and -9e-2 for a single bright
    pixel (an undersampled PSF, whose coarser version is more so); at sigma
    1.5 px and above, below 1e-9.  A monotone interpolant (PCHIP) gives no
    negative pixel there, but pixels 5-10 times less accurate at every width.

    Finer output pixels (``ratio < 1``): the input is interpolated with a
    separable Lanczos-3 kernel at the output pixel centres.  The input
    pixel's response stays in the result (it cannot be removed); the result
    is then scaled to unit sum.
    """
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidInputError(f"resample_psf needs a 2-d array; got shape {arr.shape}")
    try:
        ratio_value = float(ratio)
    except (TypeError, ValueError):
        ratio_value = float("nan")
    if not (math.isfinite(ratio_value) and ratio_value > 0):
        raise InvalidInputError(f"resample_psf ratio must be positive and finite (output pixel scale / input pixel "
                                f"scale, e.g. 2.0 for pixels twice as large); got {ratio!r}")
    ratio = ratio_value
    ny, nx = arr.shape
    cx, cy = ((nx - 1) / 2.0, (ny - 1) / 2.0) if center is None else (float(center[0]), float(center[1]))
    w, h = _resampled_size(nx, ny, ratio, size)
    if max(w, h) > MAX_STAMP_SIZE:
        raise InvalidInputError(
            f"resample_psf: a {nx}x{ny} PSF image resampled with ratio {ratio:.6g} (output pixel size in input "
            f"pixels) needs a {w:.0f}x{h:.0f} stamp, more than the {MAX_STAMP_SIZE} px limit of a PSF stamp; check the "
            "ratio (output scale / input scale) or pass a smaller odd size=")
    if ratio >= 1.0:
        out = _rebin_axis(_rebin_axis(arr, 1, w, ratio, cx), 0, h, ratio, cy)
    else:
        wx = lanczos_weights(cx + (np.arange(w) - w // 2) * ratio, nx)
        wy = lanczos_weights(cy + (np.arange(h) - h // 2) * ratio, ny)
        out = wy @ arr @ wx.T
    total = out.sum()
    if not total > 0:
        raise InvalidInputError(f"the resampled PSF ({w}x{h}) has non-positive sum {total:.4g}")
    return out / total


def _open_image_hdu(source, hdu, where):
    from astropy.io import fits

    from ..io.fits import open_fits, read_guard

    if isinstance(source, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        with read_guard("<HDU>", "PSF image"):
            return np.array(source.data, dtype=np.float64), source.header.copy(), "<HDU>"
    if isinstance(source, fits.HDUList):
        with read_guard(where, "PSF image") as guard:
            return _image_from_hdul(source, hdu, where, guard)
    if isinstance(source, (str, os.PathLike)):
        with open_fits(source, "PSF image") as (hdul, guard):
            return _image_from_hdul(hdul, hdu, where, guard)
    raise InvalidInputError(f"a PSF image source must be a path, an HDUList or an image HDU; "
                            f"got {type(source).__name__}")


def _image_from_hdul(hdul, hdu, where, guard):
    from astropy.io import fits

    if hdu is None:
        chosen = next((h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
                       and h.data is not None and h.data.ndim >= 2), None)
        if chosen is None:
            from ..io.fits import no_image_remedy

            raise UnsupportedFormatError(f"{where}: no image HDU with data (HDUs: {[h.name for h in hdul]}); "
                                         + no_image_remedy(hdul))
    else:
        if isinstance(hdu, (bool, np.bool_)):  # (astropy takes True for index 1)
            raise InvalidInputError(f"{where}: hdu must be an HDU's index (an integer) or name; got {hdu!r}")
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError):
            raise UnsupportedFormatError(
                f"{where}: no HDU {hdu!r}; the file has {len(hdul)} HDUs {[h.name for h in hdul]}") from None
        if not isinstance(chosen, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) or chosen.data is None:
            raise UnsupportedFormatError(f"{where}[{hdu}]: not an image HDU with data")
    guard.hdu = chosen.name or hdul.index_of(chosen)
    data = np.array(chosen.data, dtype=np.float64)
    header = chosen.header.copy()
    return data, header, where


def _light_width(data):
    """Adaptive-moment sigma (pixels) of ``data``, measured on a copy binned to at most about 512 px a
    side (cheap on a large frame); None when the moments do not converge."""
    ny, nx = data.shape
    b = max(1, -(-max(nx, ny) // 512))
    if b > 1:
        data = data[:ny - ny % b, :nx - nx % b].reshape(ny // b, b, nx // b, b).sum(axis=(1, 3))
    ixx, iyy, _, _, _, ok = adaptive_moments(data)
    if not bool(ok):
        return None
    return b * math.sqrt(max(float(ixx + iyy) / 2.0, 0.0))


def _refuse_unlike_psf(data, header, label) -> None:
    """Raise UnsupportedFormatError when ``data`` (background subtracted, positive sum) is no PSF image.

    An image at least :data:`PSF_LIKE_MIN_SIZE` px along its larger side must hold at least
    :data:`PSF_LIKE_MIN_CENTRAL_FRACTION` of its flux in its central box (the middle half along each
    axis); a science frame, whose light is spread over the frame, holds about a quarter there.
    """
    ny, nx = data.shape
    if max(nx, ny) < PSF_LIKE_MIN_SIZE:
        return
    y0, x0 = ny // 4, nx // 4
    with np.errstate(over="ignore", invalid="ignore"):
        fraction = float(data[y0:ny - y0, x0:nx - x0].sum() / data.sum())
    if fraction >= PSF_LIKE_MIN_CENTRAL_FRACTION:
        return
    extname = str(header.get("EXTNAME", "") or "").strip()
    what = f"a {nx}x{ny} image" + (f" (EXTNAME {extname!r})" if extname else "")
    width = _light_width(data)
    spread = f" and an adaptive-moment sigma of about {width:.0f} px" if width is not None else ""
    raise UnsupportedFormatError(
        f"{label}: read as a PSF image (no other PSF format matched), but it does not look like one: {what} with "
        f"{fraction:.0%} of its flux in its central {nx - 2 * x0}x{ny - 2 * y0} box (a PSF image holds at least "
        f"{PSF_LIKE_MIN_CENTRAL_FRACTION:.0%} there; light spread over the frame, about 25%){spread}: is it a "
        "science exposure? Give the exposure's PSF model (a PSFEx or Piff file, an image of the PSF, or an "
        "analytic SPEC such as gaussian:fwhm=F; --psf on the command line); if it really is an image of a PSF, "
        "force the format: image:FILE on the command line, read_psf(path, format=\"image\") in Python")


def _border_pedestal(data):
    """``(level, peak)`` when the image's border looks like a pedestal (see :data:`PEDESTAL_MIN_FRACTION`), else None.

    ``level`` is the median of the border (the outermost rows and columns), ``peak`` the image's maximum.
    Images smaller than 9 px along a side are not judged: their border is most of the PSF.
    """
    ny, nx = data.shape
    if min(nx, ny) < 9:
        return None
    peak = float(data.max())
    if not peak > 0:
        return None
    border = np.concatenate([data[0], data[-1], data[1:-1, 0], data[1:-1, -1]])
    lo, level, hi = np.percentile(border, [10.0, 50.0, 90.0])
    if lo > PEDESTAL_MIN_FRACTION * peak and hi <= (1.0 + PEDESTAL_MAX_SPREAD) * lo:
        return float(level), peak
    return None


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning issued by the calling function at the first frame outside psfmatch.

    :func:`read_image_psf` is called by the user or through :func:`~psfmatch.psf.read_psf` and the task's
    readers; the warning should name the user's line either way.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _warn_pedestal(data, background, label) -> None:
    """Warn (:class:`~psfmatch.errors.PsfMatchWarning`) when ``data`` (background subtracted) sits on a pedestal."""
    found = _border_pedestal(data)
    if found is None:
        return
    level, peak = found
    with np.errstate(over="ignore", invalid="ignore"):
        share = float(level * data.size / data.sum())
    after = f" after background={background:g} was subtracted" if background else ""
    remedy = f"background={background + level:.6g}"
    msg = (f"{label}: the PSF image's border sits at {level:.6g} ({level / peak:.1%} of its peak){after}, flat all "
           f"around: almost surely an unsubtracted bias or sky level (SDSS PSF images carry a 1000-count soft bias). "
           f"That level holds {share:.0%} of the image's flux and would be matched as part of the PSF (a broader "
           f"PSF, a wrong kernel). Subtract it: read_image_psf(..., {remedy}) or read_psf(path, {remedy}) (on the "
           f"command line, image:FILE,{remedy}), or subtract it from the file")
    log.warning(msg)
    warnings.warn(msg, PsfMatchWarning, stacklevel=_caller_stacklevel())


def read_image_psf(source, *, hdu=None, pixel_scale=None, target_pixel_scale=None, recenter=False,
                   background=0.0, size=None, rtol=1e-6, require_psf_like=False) -> ImagePsf:
    """Read a PSF image from a FITS file as an :class:`~psfmatch.psf.ImagePsf`.

    Parameters
    ----------
    source : str, path-like, `~astropy.io.fits.HDUList` or image HDU
        The file.
    hdu : int or str, optional
        The HDU to read; default the first image HDU with data.
    pixel_scale : float, optional
        The image's pixel scale in arcsec per pixel; overrides the header
        (see :func:`pixel_scale_from_header` for the keywords read).
    target_pixel_scale : float, `~psfmatch.Exposure` or `~astropy.wcs.WCS`, optional
        The pixel scale to resample to (arcsec per pixel), or an exposure /
        WCS to take it from.  Default: no resampling.
    recenter : bool
        Take the adaptive-moment centroid, not the geometric centre, as the PSF
        centre.
    background : float
        Subtracted from the image first (e.g. 1000 for SDSS PSF images, which
        carry a soft bias); a finite number.
    size : int or (int, int), optional
        Odd output stamp size (width, height): the resampled stamp's, or,
        without resampling, the image padded or cropped about its centre
        pixel (then renormalized to unit sum), as :meth:`ImagePsf.resized`.
    rtol : float
        Scales whose relative difference is below ``rtol`` count as equal (no resampling).
    require_psf_like : bool
        Refuse an image that does not look like a PSF (see Notes).
        :func:`~psfmatch.psf.read_psf` sets it when it identified the file
        as an image itself (no ``format=``), so that a science exposure given
        as a PSF is refused instead of read as one.

    Returns
    -------
    ImagePsf
        Unit sum, odd, centred; ``pixel_scale`` set to the output scale when known.

    Raises
    ------
    MissingFileError
        If the file does not exist (a `FileNotFoundError`).
    UnsupportedFormatError
        If the HDU is missing or holds no image, or the path is a directory;
        with ``require_psf_like``, if the image does not look like a PSF.
    CorruptFileError
        If the data are not a 2-d finite image with positive flux, or a
        pixel-scale keyword is invalid.
    InvalidInputError
        If ``background`` is not a finite number, ``rtol`` not a number in
        [0, 1), or resampling is asked for and the image's pixel scale is
        unknown, or its pixels are not square (their two scales differ by more
        than :data:`NON_SQUARE_TOLERANCE`; ``pixel_scale=`` overrides the
        header), or the ratio of the two scales
        under- or overflows, or the resampled stamp would
        be larger than :data:`~psfmatch.psf.psfex.MAX_STAMP_SIZE` pixels.

    Warns
    -----
    PsfMatchWarning
        If the image, after ``background`` is subtracted, sits on a pedestal:
        its border flat and above :data:`PEDESTAL_MIN_FRACTION` (1 %) of its
        peak, the mark of an unsubtracted bias or sky (see Notes).  The
        message names the file, the level and the ``background=`` to pass.

    Notes
    -----
    Even-sized and off-centre images: the geometric centre of the array is
    the PSF centre (``recenter=False``), so an image whose PSF sits off that
    centre is a PSF displaced by that offset: matched to it as the reference,
    every star of the matched exposure moves by it (about (0.3, 0.8) px for
    Spitzer IRAC ch1 matched to ch4; ``recenter=True`` on both PSFs avoids it).
    Without resampling :class:`~psfmatch.psf.ImagePsf` moves it onto the centre
    pixel of a stamp one pixel larger along each even axis (half-pixel Fourier
    shift); with resampling the centre is mapped onto the output centre pixel
    directly.  With ``recenter=True`` and resampling, the image's adaptive
    centroid is shifted onto its centre pixel before the image is resampled
    (a Fourier shift, which widens nothing), and the result's onto its own
    centre pixel after (an asymmetric PSF's adaptive centroid depends on the
    pixel size).
    A 3-d image (a cube of one plane, e.g. webbpsf) is accepted when its
    leading axes have length 1.

    With ``require_psf_like=True`` an image at least :data:`PSF_LIKE_MIN_SIZE`
    (128) px along its larger side must hold at least
    :data:`PSF_LIKE_MIN_CENTRAL_FRACTION` (half) of its flux, after
    ``background`` is subtracted, in its central box (the middle half along
    each axis, a quarter of the area).  The Spitzer IRAC and HST PSF images of
    the project's test data hold 0.9 to 1.0 there; a science frame, whose
    light (stars, sky) is spread over the frame, about 0.25.

    The pedestal check: a PSF image's border is its faint wing, and falls
    from the middle of each side to the corners: in the IRAC, HST/ACS and
    shera images of the test data its 10th percentile is at most 0.2 % of
    the peak and its 90th percentile 2.5 times that or more.  A border whose 10th
    percentile is above 1 % of the peak and whose 90th percentile is at
    most twice its 10th (:data:`PEDESTAL_MAX_SPREAD`) is a level added to the
    whole image: the SDSS PSF image read without ``background=1000`` has its
    border at 3.3 % of its peak, all of it equal, and would be read as a PSF
    of sigma about 15 px instead of 1.3 px.  Images under 9 px along a side
    are not checked.
    """
    if isinstance(background, (bool, np.bool_)) or not isinstance(background, numbers.Real) \
            or not math.isfinite(background):
        raise InvalidInputError(f"background must be a finite number (the level subtracted from the PSF image, "
                                f"e.g. 1000 for SDSS); got {background!r}")
    for name, flag in (("recenter", recenter), ("require_psf_like", require_psf_like)):
        if not isinstance(flag, (bool, np.bool_)):  # ("no", a word from a file, would count as true)
            raise InvalidInputError(f"{name} must be True or False (on the command line true or false); got {flag!r}")
    if isinstance(rtol, (bool, np.bool_)) or not isinstance(rtol, numbers.Real) or not (0 <= rtol < 1):
        raise InvalidInputError(f"rtol must be a number in [0, 1) (the relative difference of two pixel scales "
                                f"taken as equal, e.g. 1e-6); got {rtol!r}")
    if size is not None:
        size = _odd_size(size, "read_image_psf")
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"
    data, header, where = _open_image_hdu(source, hdu, where)
    label = where if hdu is None else f"{where}[{hdu}]"
    if data.ndim > 2:
        if all(s == 1 for s in data.shape[:-2]):
            data = data.reshape(data.shape[-2:])
        else:
            raise CorruptFileError(f"{label}: the image has shape {data.shape}; a PSF image is 2-d (choose a "
                                   "plane and pass it as an array to ImagePsf)")
    if max(data.shape) > MAX_STAMP_SIZE:
        raise UnsupportedFormatError(
            f"{label}: a {data.shape[1]}x{data.shape[0]} image is larger than the {MAX_STAMP_SIZE} px limit of a PSF "
            "stamp: is it an exposure rather than an image of its PSF? Give the exposure's PSF (a PSFEx or Piff "
            "model, an image of the PSF, or an analytic SPEC; --psf on the command line)")
    if not np.all(np.isfinite(data)):
        raise CorruptFileError(f"{label}: the PSF image holds {int(np.sum(~np.isfinite(data)))} NaN or inf pixels")
    data = data - float(background)
    with np.errstate(over="ignore", invalid="ignore"):
        total = data.sum()
    if not np.isfinite(total):
        raise CorruptFileError(f"{label}: the PSF image's sum overflows (values up to {np.abs(data).max():.3g}); "
                               "the pixels are damaged or need rescaling")
    if not total > 0:
        raise CorruptFileError(f"{label}: the PSF image has non-positive sum {total:.4g} after subtracting "
                               f"background={background}; check background=")
    if require_psf_like:
        _refuse_unlike_psf(data, header, label)
    _warn_pedestal(data, float(background), label)
    axes = None
    if pixel_scale is not None:
        scale = _positive_scale(pixel_scale, "pixel_scale")
    else:
        from ..io.fits import read_guard

        with catch_warnings("ignore"), read_guard(label, "PSF image's pixel scale"):
            axes = pixel_axis_scales(header, label)
        scale = None if axes is None else math.sqrt(axes[0] * axes[1])
    target = _target_scale(target_pixel_scale)
    if target is None or (scale is not None and abs(target - scale) <= rtol * target):
        psf = ImagePsf(data, recenter=recenter, pixel_scale=scale)
        return psf if size is None or size == psf.array.shape[::-1] else psf.resized(*size)
    if scale is None:
        raise InvalidInputError(
            f"{label}: cannot resample to {target} arcsec/pixel: the file states no pixel scale (none of "
            f"{', '.join(PIXEL_SCALE_KEYS)}, nor CD / CDELT of a celestial WCS); pass pixel_scale=")
    if axes is not None and abs(axes[0] / axes[1] - 1.0) > NON_SQUARE_TOLERANCE:
        raise InvalidInputError(
            f"{label}: its pixels are not square ({axes[0]:.6g} x {axes[1]:.6g} arcsec along x and y): resampled "
            f"to {target:.6g} arcsec by one ratio, the PSF would come out stretched by {axes[0] / axes[1]:.4g} along "
            "x; resample it per axis onto square pixels first, or pass pixel_scale= to resample by that one scale")
    ratio = target / scale
    if not (math.isfinite(ratio) and ratio > 0):  # both valid, but their ratio under- or overflows
        raise InvalidInputError(
            f"{label}: cannot resample the PSF image from {scale:.6g} to {target:.6g} arcsec/pixel: their ratio "
            f"({ratio!r}) is not a positive finite number; check the image's pixel scale (pass pixel_scale= if its "
            "header is wrong) and target_pixel_scale, both in arcsec per pixel")
    w, h = _resampled_size(data.shape[1], data.shape[0], ratio, size)
    if max(w, h) > MAX_STAMP_SIZE:
        raise InvalidInputError(
            f"{label}: resampling the {data.shape[1]}x{data.shape[0]} PSF image from {scale:.6g} to {target:.6g} "
            f"arcsec/pixel needs a {w:.0f}x{h:.0f} stamp, more than the {MAX_STAMP_SIZE} px limit of a PSF stamp; "
            "check the image's pixel scale (pass pixel_scale= if its header is wrong) and target_pixel_scale, or "
            "pass a smaller odd size=")
    if recenter:
        # first onto the centre pixel at the input's scale (a Fourier shift, which widens nothing): rebinned about
        # a pixel centre, a ratio near 1 keeps the output's edges on the input's, where the rebinning is exact
        try:
            data = ImagePsf(data, recenter=True).array
        except InvalidInputError as exc:  # (the data were checked above: only the centroid can fail here)
            raise InvalidInputError(f"{label}: recenter=True but the image's centroid could not be measured "
                                    f"({exc})") from None
    log.info("resampling PSF image %s from %.6g to %.6g arcsec/pixel (%s)", label, scale, target,
             "integrating the cumulative" if ratio >= 1 else "Lanczos-3 interpolation")
    out = resample_psf(data, ratio, size=size)
    # and again at the output's scale: an asymmetric PSF's adaptive centroid depends on the pixel size
    try:
        return ImagePsf(out, recenter=recenter, pixel_scale=target)
    except InvalidInputError:
        if not recenter:
            raise
        # (too few pixels across for adaptive moments, a space PSF on ground pixels: it was centred before)
        log.info("%s: the resampled PSF's centroid could not be measured (undersampled at %.6g arcsec/pixel); it is "
                 "kept as resampled from the centred image", label, target)
        return ImagePsf(out, recenter=False, pixel_scale=target)
