"""Converters between :class:`~psfmatch.Exposure` and astropy's `~astropy.nddata.NDData` / `~astropy.nddata.CCDData`.

==========================  =================================================================
NDData                      Exposure
==========================  =================================================================
``data``                    ``image`` (float32/float64 kept, other types become float32)
``mask`` (bool, True=bad)   the ``mask_plane`` bit (``BAD`` by default); an integer mask is
                            taken as bit planes as they are
``uncertainty``             ``variance``: `VarianceUncertainty` as is, `StdDevUncertainty`
                            squared, `InverseVariance` inverted (0 -> inf); converted to
                            the data unit squared when both units are known
``unit``                    ``metadata["unit"]`` (a string)
``wcs``                     ``wcs`` (an astropy WCS of the array, unchanged)
``meta``                    ``metadata`` (a FITS ``Header`` goes to ``metadata["fitsHeader"]``)
``psf`` (an array)          ``ImagePsf(psf)`` unless ``psf=`` is given
==========================  =================================================================

Going back, ``to_nddata`` sets ``mask`` True where any of ``bad_planes`` is set
(default: every plane except DETECTED and DETECTED_NEGATIVE), the uncertainty
as a `VarianceUncertainty`, and ``psf`` to the kernel image at the PSF's
average position.
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import InvalidInputError
from ..image import Exposure, Mask

__all__ = ["exposure_from_nddata", "exposure_to_nddata", "NON_BAD_PLANES"]

#: Planes that do not make a pixel bad in the boolean NDData mask.
NON_BAD_PLANES = ("DETECTED", "DETECTED_NEGATIVE")


def _variance_from_uncertainty(unc, data_unit, shape):
    from astropy import units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    arr = np.asarray(unc.array, dtype=np.float64)
    if arr.shape != shape:
        arr = np.broadcast_to(arr, shape).astype(np.float64)
    unc_unit = getattr(unc, "unit", None)
    if isinstance(unc, VarianceUncertainty):
        var, power = arr.copy(), 2
    elif isinstance(unc, StdDevUncertainty):
        var, power = arr ** 2, 1
    elif isinstance(unc, InverseVariance):
        with np.errstate(divide="ignore"):
            var = np.where(arr > 0, 1.0 / np.where(arr > 0, arr, 1.0), np.inf)
        power = -2
    else:
        raise InvalidInputError(
            f"uncertainty of type {type(unc).__name__} cannot be converted to a variance; use "
            "VarianceUncertainty, StdDevUncertainty or InverseVariance")
    if unc_unit is not None and data_unit is not None:
        # the uncertainty's unit expressed as data_unit**power gives the conversion factor
        try:
            factor = (1.0 * u.Unit(unc_unit)).to_value(u.Unit(data_unit) ** power)
        except u.UnitConversionError:
            raise InvalidInputError(
                f"the uncertainty's unit {unc_unit} does not match the data unit {data_unit} "
                f"({type(unc).__name__} should be in {u.Unit(data_unit) ** power})") from None
        if power == 2:
            var = var * factor
        elif power == 1:
            var = var * factor ** 2
        else:
            var = var / factor
    if np.any(var < 0):
        raise InvalidInputError("the uncertainty gives negative variances")
    return var


def exposure_from_nddata(nd, *, psf=None, mask_plane="BAD", mask_planes=None, xy0=(0, 0)) -> Exposure:
    """An :class:`~psfmatch.Exposure` from an `~astropy.nddata.NDData` (or `CCDData`).

    Parameters
    ----------
    nd : NDData
        The data; nothing in it is modified (arrays are copied).
    psf : PSF model, optional
        The exposure's PSF; default ``ImagePsf(nd.psf)`` when ``nd.psf`` is set.
    mask_plane : str
        The plane a boolean mask sets.
    mask_planes : mapping, optional
        Plane registry of the new mask (default: psfmatch's).
    xy0 : (int, int)
        The image origin.

    Raises
    ------
    InvalidInputError
        If ``nd`` is not NDData-like or its uncertainty cannot be turned into a variance.
    """
    from astropy.io import fits

    from ..psf.image_psf import ImagePsf

    if not hasattr(nd, "data") or not hasattr(nd, "uncertainty"):
        raise InvalidInputError(f"from_nddata needs an astropy NDData or CCDData; got {type(nd).__name__}")
    data = np.asarray(nd.data)
    if data.ndim != 2:
        raise InvalidInputError(f"from_nddata needs 2-d data; got shape {data.shape}")
    unit = getattr(nd, "unit", None)
    variance = None
    if nd.uncertainty is not None:
        variance = _variance_from_uncertainty(nd.uncertainty, unit, data.shape)
    mask = None
    if nd.mask is not None:
        m = np.asarray(nd.mask)
        if m.shape != data.shape:
            m = np.broadcast_to(m, data.shape)
        if m.dtype == bool:
            mask = Mask.from_bool(m, mask_plane, planes=mask_planes)
        elif np.issubdtype(m.dtype, np.integer):
            mask = Mask(m, planes=mask_planes)
        else:
            raise InvalidInputError(f"NDData mask must be boolean or integer bits; got dtype {m.dtype}")
    metadata = {}
    meta = getattr(nd, "meta", None)
    if meta:
        if isinstance(meta, fits.Header):
            metadata["fitsHeader"] = meta.copy()
        else:
            for key, value in meta.items():
                metadata[key] = copy.deepcopy(value)
    if unit is not None:
        metadata["unit"] = unit.to_string()
    if psf is None and getattr(nd, "psf", None) is not None:
        psf = ImagePsf(np.asarray(nd.psf))
    return Exposure(data, mask, variance, psf=psf,  # planes converted by Exposure (see plane_dtype)
                    wcs=getattr(nd, "wcs", None), xy0=xy0, metadata=metadata, mask_planes=mask_planes)


def exposure_to_nddata(exposure, *, ccd=False, bad_planes=None, psf_position=None):
    """An `~astropy.nddata.NDData` (or `~astropy.nddata.CCDData` with ``ccd=True``) from an exposure.

    Parameters
    ----------
    exposure : Exposure
    ccd : bool
        Return a `CCDData`; it needs a unit (``metadata["unit"]``), else
        :class:`~psfmatch.errors.InvalidInputError` is raised.
    bad_planes : sequence of str, optional
        Planes that make the boolean mask True; default every plane but
        DETECTED and DETECTED_NEGATIVE.
    psf_position : (x, y), optional
        Where ``nd.psf`` is evaluated; default the PSF's average position.

    Returns
    -------
    NDData or CCDData
        Copies of the arrays; ``meta`` is a deep copy of ``metadata`` (without
        ``"unit"``, which becomes ``unit``).
    """
    from astropy import units as u
    from astropy.nddata import CCDData, NDData, VarianceUncertainty

    if not isinstance(exposure, Exposure):
        raise InvalidInputError(f"to_nddata needs an Exposure; got {type(exposure).__name__}")
    planes = exposure.getMask().getMaskPlaneDict()
    if bad_planes is None:
        bad_planes = [p for p in planes if p not in NON_BAD_PLANES]
    bad = exposure.getMask().planes_set(list(bad_planes)) if bad_planes else np.zeros(exposure.image.shape, bool)
    meta = copy.deepcopy({k: v for k, v in exposure.metadata.items() if k != "unit"})
    unit_text = exposure.metadata.get("unit")
    unit = u.Unit(unit_text) if unit_text else None
    psf_img = None
    if exposure.getPsf() is not None:
        psf_img = np.asarray(exposure.getPsf().computeKernelImage(psf_position), dtype=np.float64)
    unc = VarianceUncertainty(exposure.variance.copy(), unit=None if unit is None else unit ** 2)
    if ccd:
        if unit is None:
            raise InvalidInputError("CCDData needs a unit and the exposure has none; set "
                                    "exposure.metadata['unit'] (e.g. 'adu' or 'electron') or use ccd=False")
        return CCDData(exposure.image.copy(), unit=unit, uncertainty=unc, mask=bad, wcs=exposure.getWcs(),
                       meta=meta, psf=psf_img)
    return NDData(exposure.image.copy(), uncertainty=unc, mask=bad, wcs=exposure.getWcs(), meta=meta, unit=unit,
                  psf=psf_img)
