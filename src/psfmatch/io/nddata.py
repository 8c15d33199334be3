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
``wcs``                     ``wcs`` (an astropy WCS of the array; a copy)
``meta``                    ``metadata`` (a FITS ``Header`` goes to ``metadata["fitsHeader"]``,
                            less its structural cards)
``meta["LTV1"]``, ``LTV2``  the origin ``xy0 = (-LTV1, -LTV2)`` (IRAF's convention, as in FITS
                            files), unless ``xy0=`` is given; ``(0, 0)`` without them
``psf`` (an array)          ``ImagePsf(psf)`` unless ``psf=`` is given
==========================  =================================================================

Going back, ``to_nddata`` sets ``mask`` True where any of ``bad_planes`` is set
(default: every plane except DETECTED and DETECTED_NEGATIVE), the uncertainty
as a `VarianceUncertainty`, ``psf`` to the kernel image at the PSF's average
position, and ``meta`` to the inverse of the above: the ``metadata`` entries,
or, for an exposure with ``metadata["fitsHeader"]`` (read from a FITS file or
made from a ``CCDData``), a FITS ``Header`` of those cards and the scalar
entries as ``HIERARCH PMMETA <key>`` cards (which ``CCDData.write`` can
store, and which ``from_nddata`` lifts back to ``metadata[key]``; a header
card of the same name stays as it was); ``LTV1``/``LTV2`` record a non-zero
origin (they describe the array as given: slicing an NDData leaves ``meta``
as it was, so give ``xy0=`` for a cut-out).  Units are parsed as FITS ``BUNIT`` strings (``"adu"``,
``"electron/s"``), else as astropy's, else as common spellings of counts
(``"ELECTRONS/S"``, ``"COUNTS"``, ``"ADU"``, ``"e-/s"``); any other becomes an
`~astropy.units.UnrecognizedUnit` that keeps the text, and since astropy
cannot square such a unit the uncertainty is then a `StdDevUncertainty`.
"""

from __future__ import annotations

import copy
import logging
import re

import numpy as np

from ..errors import InvalidInputError
from ..image import Exposure, Mask
from ..parallel import catch_warnings

log = logging.getLogger(__name__)

__all__ = ["exposure_from_nddata", "exposure_to_nddata", "NON_BAD_PLANES"]

#: Planes that do not make a pixel bad in the boolean NDData mask.
NON_BAD_PLANES = ("DETECTED", "DETECTED_NEGATIVE")


#: Common ``BUNIT`` spellings astropy does not parse (HST's ``ELECTRONS/S``, ``ADU``, ``e-/s``...).
_BUNIT_COUNTS = re.compile(r"^\s*(?P<what>ELECTRONS?|E-|COUNTS?|CTS|ADUS?|DN)\s*(?P<rate>/\s*(S|SEC|SECONDS?))?\s*$",
                           re.IGNORECASE)
_BUNIT_NAMES = {"ELECTRON": "electron", "ELECTRONS": "electron", "E-": "electron", "COUNT": "count",
                "COUNTS": "count", "CTS": "count", "ADU": "adu", "ADUS": "adu", "DN": "DN"}


def _parse_unit(text):
    """``text`` as an astropy unit, never an error.

    A FITS ``BUNIT`` string, else astropy's generic format, else one of the
    common spellings of counts (``ELECTRONS/S``, ``COUNTS``, ``ADU``,
    ``e-/s``...), else an `~astropy.units.UnrecognizedUnit` keeping the text.
    """
    from astropy import units as u

    match = _BUNIT_COUNTS.match(text)
    candidates = [(text, "fits"), (text, None)]
    if match:
        candidates.append((_BUNIT_NAMES[match["what"].upper()] + ("/s" if match["rate"] else ""), None))
    for candidate, fmt in candidates:
        try:
            with catch_warnings("ignore"):
                return u.Unit(candidate, format=fmt)
        except (ValueError, TypeError):
            continue
    return u.Unit(text, parse_strict="silent")


def _broadcast(arr, shape, what):
    """``arr`` broadcast to the data's ``shape``, or :class:`InvalidInputError` naming both shapes."""
    if arr.shape == shape:
        return arr
    try:
        return np.broadcast_to(arr, shape)
    except ValueError:
        raise InvalidInputError(f"the NDData {what} has shape {arr.shape}, which does not match the data's shape "
                                f"{shape}; give a {what} of the data's shape") from None


def _variance_from_uncertainty(unc, data_unit, shape):
    from astropy import units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    arr = np.asarray(unc.array, dtype=np.float64)
    if arr.shape != shape:
        arr = _broadcast(arr, shape, "uncertainty").astype(np.float64)
    try:
        unc_unit = getattr(unc, "unit", None)
    except ValueError:  # derived from an unrecognized data unit (no arithmetic on it): the data's unit implied
        unc_unit = None
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
    unrecognized = isinstance(unc_unit, u.UnrecognizedUnit) or isinstance(data_unit, u.UnrecognizedUnit)
    if unc_unit is not None and data_unit is not None and unrecognized:
        # astropy cannot compute with these: only the data's own unit on a standard deviation is understood
        if not (power == 1 and u.Unit(unc_unit) == u.Unit(data_unit)):
            raise InvalidInputError(
                f"the uncertainty's unit {unc_unit} cannot be related to the data unit {data_unit} (astropy does not "
                f"recognize {data_unit if isinstance(data_unit, u.UnrecognizedUnit) else unc_unit}); give the "
                "uncertainty without a unit (taken as the data's) or use units astropy knows")
    elif unc_unit is not None and data_unit is not None:
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


def exposure_from_nddata(nd, *, psf=None, mask_plane="BAD", mask_planes=None, xy0=None) -> Exposure:
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
    xy0 : (int, int), optional
        The image origin; default ``(-LTV1, -LTV2)`` from ``nd.meta`` (as
        :func:`exposure_to_nddata` and FITS files record it), else ``(0, 0)``.
        The origin cards are not kept in ``metadata``.

    Raises
    ------
    InvalidInputError
        If ``nd`` is not NDData-like, its uncertainty cannot be turned into a
        variance, its uncertainty or mask does not have (or broadcast to) the
        data's shape, or ``meta`` records an origin that is not a pair of integers.
    """
    from astropy.io import fits

    from ..psf.image_psf import ImagePsf
    from .fits import _is_origin_key, _primary_cards, _xy0_from_header

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
        m = _broadcast(np.asarray(nd.mask), data.shape, "mask")
        if m.dtype == bool:
            mask = Mask.from_bool(m, mask_plane, planes=mask_planes)
        elif np.issubdtype(m.dtype, np.integer):
            mask = Mask(m, planes=mask_planes)
        else:
            raise InvalidInputError(f"NDData mask must be boolean or integer bits; got dtype {m.dtype}")
    metadata = {}
    meta = getattr(nd, "meta", None)
    if meta:
        if xy0 is None:
            cards = meta if isinstance(meta, fits.Header) else {k.upper(): v for k, v in meta.items()
                                                                 if isinstance(k, str) and _is_origin_key(k)}
            xy0 = _xy0_from_header(cards, "NDData meta", error=InvalidInputError)
        if isinstance(meta, fits.Header):
            header = _primary_cards(meta, origin=True)  # a copy, less structure and origin
            for key in [k for k in header.keys() if k.startswith(_META_PREFIX)]:
                metadata[key[len(_META_PREFIX):]] = header[key]  # an entry to_nddata stored as a card
                del header[key]
            metadata["fitsHeader"] = header
        else:
            for key, value in meta.items():
                if not (isinstance(key, str) and _is_origin_key(key)):
                    metadata[key] = copy.deepcopy(value)
    if unit is not None:
        metadata["unit"] = unit.to_string()
    if psf is None and getattr(nd, "psf", None) is not None:
        psf = ImagePsf(np.asarray(nd.psf))
    return Exposure(data, mask, variance, psf=psf,  # planes converted by Exposure (see plane_dtype)
                    wcs=copy.deepcopy(getattr(nd, "wcs", None)), xy0=(0, 0) if xy0 is None else xy0,
                    metadata=metadata, mask_planes=mask_planes)


def _is_card_value(value) -> bool:
    return isinstance(value, (str, bool, int, float, np.bool_, np.integer, np.floating))


#: Cards ``HIERARCH PMMETA <key>`` hold the exposure's own scalar metadata entries in an NDData's FITS
#: header (:func:`_meta_header`): beside the header's cards, never in place of one.
_META_PREFIX = "PMMETA "


def _meta_header(metadata, header):
    """``metadata["fitsHeader"]`` as a new FITS header, with the scalar entries of ``metadata`` as cards.

    Each entry ``key`` becomes ``HIERARCH PMMETA key`` (the case of ``key``
    kept): a header card of the same name (``FILTER`` beside an entry
    ``"filter"``) is neither replaced nor hides the entry, and
    :func:`exposure_from_nddata` lifts the entries back out.
    """
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyError

    from .fits import _is_origin_key, _primary_cards

    if not isinstance(header, fits.Header):
        try:
            header = fits.Header(header)
        except Exception:
            raise InvalidInputError("metadata['fitsHeader'] must be an astropy Header or a mapping of FITS cards; got "
                                    f"{type(header).__name__}") from None
    out = _primary_cards(header, origin=True)  # new cards; the origin is the exposure's (set by the caller)
    dropped = []
    for key, value in metadata.items():
        if key in ("fitsHeader", "unit") or (isinstance(key, str) and _is_origin_key(key)):
            continue
        if not (isinstance(key, str) and _is_card_value(value)):
            dropped.append(str(key))
            continue
        try:
            with catch_warnings("ignore"):
                card = fits.Card(f"HIERARCH {_META_PREFIX}{key}", value.item() if isinstance(value, np.generic)
                                 else value)
                card.verify("exception")
                str(card)
        except (ValueError, TypeError, VerifyError):
            dropped.append(str(key))
            continue
        out.append(card, end=True)
    if dropped:
        log.warning("metadata entries %s cannot be FITS header cards and are not in the NDData meta (a FITS Header, "
                    "as the exposure's metadata['fitsHeader'] is)", sorted(dropped))
    return out


def exposure_to_nddata(exposure, *, ccd=False, bad_planes=None, psf_position=None):
    """An `~astropy.nddata.NDData` (or `~astropy.nddata.CCDData` with ``ccd=True``) from an exposure.

    Parameters
    ----------
    exposure : Exposure
    ccd : bool
        Return a `CCDData`; it needs a unit (``metadata["unit"]``), else
        :class:`~psfmatch.errors.InvalidInputError` is raised.
    bad_planes : str or sequence of str, optional
        Planes that make the boolean mask True; default every plane of the
        exposure's mask but DETECTED and DETECTED_NEGATIVE.  Each must be a
        plane of the exposure's mask.
    psf_position : (x, y), optional
        Where ``nd.psf`` is evaluated; default the PSF's average position.

    Returns
    -------
    NDData or CCDData
        Copies of the arrays and the WCS; ``meta`` is a deep copy of
        ``metadata`` (without ``"unit"``, which becomes ``unit``), or, when
        ``metadata["fitsHeader"]`` is set, a FITS ``Header`` of its cards and
        the scalar entries of ``metadata`` (others are left out with a logged
        warning), as :func:`exposure_from_nddata` takes it back and
        ``CCDData.write`` writes it.  A non-zero origin ``xy0`` is recorded as
        ``meta["LTV1"] = -x0``, ``meta["LTV2"] = -y0``.  The unit is parsed as
        a FITS ``BUNIT`` (an unknown one becomes an `~astropy.units.UnrecognizedUnit`,
        and the uncertainty then a `StdDevUncertainty`: astropy cannot square
        such a unit; else a `VarianceUncertainty`).

    Raises
    ------
    InvalidInputError
        If ``exposure`` is not an Exposure, a name in ``bad_planes`` is not a
        plane of its mask (named with the planes it has), or ``ccd=True`` and
        the exposure has no unit.
    """
    from astropy import units as u
    from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty

    from .fits import _is_origin_key

    if not isinstance(exposure, Exposure):
        raise InvalidInputError(f"to_nddata needs an Exposure; got {type(exposure).__name__}")
    planes = exposure.getMask().getMaskPlaneDict()
    if bad_planes is None:
        bad_planes = [p for p in planes if p not in NON_BAD_PLANES]
    # an unknown name raises (a misspelt plane would mask nothing); the default holds only the mask's own planes
    bad = exposure.getMask().planes_set([bad_planes] if isinstance(bad_planes, str) else list(bad_planes))
    header = exposure.metadata.get("fitsHeader")
    if header is not None:
        meta = _meta_header(exposure.metadata, header)
    else:
        meta = copy.deepcopy({k: v for k, v in exposure.metadata.items()
                              if k != "unit" and not (isinstance(k, str) and _is_origin_key(k))})
    x0, y0 = exposure.getXY0()
    if (x0, y0) != (0, 0):
        meta["LTV1"] = -int(x0)
        meta["LTV2"] = -int(y0)
    unit_text = exposure.metadata.get("unit")
    unit = _parse_unit(str(unit_text)) if unit_text else None
    psf_img = None
    if exposure.getPsf() is not None:
        psf_img = np.asarray(exposure.getPsf().computeKernelImage(psf_position), dtype=np.float64)
    if isinstance(unit, u.UnrecognizedUnit):
        # astropy cannot square an unrecognized unit, so it cannot attach a variance to such data
        unc = StdDevUncertainty(np.sqrt(exposure.variance), unit=unit)
    else:
        unc = VarianceUncertainty(exposure.variance.copy(), unit=None if unit is None else unit ** 2)
    if ccd:
        if unit is None:
            raise InvalidInputError("CCDData needs a unit and the exposure has none; set "
                                    "exposure.metadata['unit'] (e.g. 'adu' or 'electron') or use ccd=False")
        return CCDData(exposure.image.copy(), unit=unit, uncertainty=unc, mask=bad,
                       wcs=copy.deepcopy(exposure.getWcs()), meta=meta, psf=psf_img)
    return NDData(exposure.image.copy(), uncertainty=unc, mask=bad, wcs=copy.deepcopy(exposure.getWcs()), meta=meta,
                  unit=unit, psf=psf_img)
