"""Converters between :class:`~psfmatch.Exposure` and astropy's `~astropy.nddata.NDData` / `~astropy.nddata.CCDData`.

==========================  =================================================================
NDData                      Exposure
==========================  =================================================================
``data``                    ``image`` (float32/float64 kept, other types become float32)
``mask`` (bool, True=bad)   the ``mask_plane`` bit (``BAD`` by default); an integer mask is
                            taken as bit planes as they are (psfmatch's names unless
                            ``mask_planes=``; a warning when it sets DETECTED,
                            DETECTED_NEGATIVE or NO_DATA, which psfmatch treats specially)
``uncertainty``             ``variance``: `VarianceUncertainty` as is, `StdDevUncertainty`
                            squared, `InverseVariance` inverted (0 -> inf); converted to
                            the data unit squared when both units are known; negative
                            values are refused.  Without an uncertainty a constant
                            variance is estimated from the pixels' robust scatter, with a
                            logged warning (as ``read_exposure`` does for a plain image)
``unit``                    ``metadata["unit"]`` (a string; ``""`` for dimensionless);
                            without ``unit``, a FITS ``meta``'s ``BUNIT`` card
``wcs``                     ``wcs`` (an astropy WCS of the array; a copy); the sliced WCS of a
                            cut-out (``nd[50:150, 60:160]``) becomes the underlying WCS sliced
                            alike; any other WCS type is refused
``meta``                    ``metadata`` (a FITS ``Header`` goes to ``metadata["fitsHeader"]``,
                            less its structural cards)
``meta["LTV1"]``, ``LTV2``  the origin ``xy0 = (-LTV1, -LTV2)`` (IRAF's convention, as in FITS
                            files), unless ``xy0=`` is given; ``(0, 0)`` without them; for a
                            cut-out ``nd[y0:y1, x0:x1]`` whose sliced WCS records the slice, plus
                            ``(x0, y0)``
``psf`` (an array)          ``ImagePsf(psf)`` unless ``psf=`` is given
==========================  =================================================================

Going back, ``to_nddata`` sets ``mask`` True where any of ``bad_planes`` is set
(default: any bit but those of DETECTED and DETECTED_NEGATIVE, bits without a
plane name included), the uncertainty
as a `VarianceUncertainty`, ``psf`` to the kernel image at the PSF's average
position, and ``meta`` to the inverse of the above: the ``metadata`` entries,
or, for an exposure with ``metadata["fitsHeader"]`` (read from a FITS file or
made from a ``CCDData``), a FITS ``Header`` of those cards and the scalar
entries as ``HIERARCH PMMETA <key>`` cards (which ``CCDData.write`` can
store, and which ``from_nddata`` lifts back to ``metadata[key]``; a header
card of the same name stays as it was; keys that differ only in case are cards
of their own); ``LTV1``/``LTV2`` record a non-zero
origin (they describe the array as given: slicing an NDData leaves ``meta``
as it was; ``from_nddata`` adds the slice's start where the cut-out's sliced WCS
records it, as ``NDDataRef`` slicing does, and otherwise (a ``CCDData``, no WCS)
give ``xy0=`` for a cut-out).  Units are parsed as FITS ``BUNIT`` strings (``"adu"``,
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
from ..image import Exposure, Mask, metadata_copy, plane_names
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


def _refuse_negative(arr, unc):
    """:class:`InvalidInputError` naming the first negative value of the uncertainty array ``arr``, if any.

    A negative standard deviation or inverse variance is as meaningless as a
    negative variance: squaring or inverting it would hide the error.
    """
    negative = arr < 0
    if np.any(negative):
        y, x = (int(i) for i in np.argwhere(negative)[0])
        raise InvalidInputError(
            f"the uncertainty gives negative variances: its {type(unc).__name__} holds {int(negative.sum())} negative "
            f"value(s), the first {arr[y, x]:g} at pixel (x={x}, y={y}); give values >= 0 (mask pixels without a "
            "valid uncertainty, or give them an InverseVariance of 0)")


def _variance_from_uncertainty(unc, data_unit, shape):
    from astropy import units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    arr = np.asarray(unc.array, dtype=np.float64)
    if arr.shape != shape:
        arr = _broadcast(arr, shape, "uncertainty").astype(np.float64)
    if isinstance(unc, (VarianceUncertainty, StdDevUncertainty, InverseVariance)):
        _refuse_negative(arr, unc)
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


def _unsliced_wcs(low, shape):
    """A FITS WCS (`astropy.wcs.WCS`) of a cut-out from its `SlicedLowLevelWCS` ``low``, or None.

    ``nd[y0:y1, x0:x1]`` gives the cut-out a ``SlicedLowLevelWCS`` of the
    NDData's WCS (in a ``HighLevelWCSWrapper``), which cannot be written to
    FITS.  The underlying WCS sliced alike (``WCS.slice``; an integer index, a
    plane of a cube, becomes a one-pixel slice whose axis is then dropped) is
    the cut-out's FITS WCS.  It is returned only when it maps the cut-out's
    corners and centre to the same world coordinates as ``low`` does.
    """
    from astropy.wcs import WCS

    base, slices = getattr(low, "_wcs", None), getattr(low, "_slices_array", None)  # astropy's own record
    if not isinstance(base, WCS) or slices is None or len(slices) != base.naxis:
        return None
    try:
        with catch_warnings("ignore"):
            view = [slice(s, s + 1) if isinstance(s, (int, np.integer)) else s for s in slices]
            out = base.slice(view)
            for axis in sorted((base.naxis - 1 - i for i, s in enumerate(slices)
                                if isinstance(s, (int, np.integer))), reverse=True):
                out = out.dropaxis(axis)  # FITS axis order is the reverse of the array's
            if out.naxis != 2 or low.pixel_n_dim != 2 or low.world_n_dim != 2:
                return None
            ny, nx = shape
            x = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2.0])
            y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2.0])
            want = np.array(low.pixel_to_world_values(x, y), dtype=float)
            got = np.array(out.pixel_to_world_values(x, y), dtype=float)
    except Exception:  # astropy cannot slice this WCS (a distortion table, an unusual axis): not rebuilt
        return None
    if not np.allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True):
        return None
    out.pixel_shape = (shape[1], shape[0])
    return out


def _slice_start(wcs):
    """``(x, y)`` where a cut-out's array starts in its parent's, from the sliced WCS astropy gives it
    (``nd[y0:y1, x0:x1]``: a ``SlicedLowLevelWCS`` records the slices), or None (no slice recorded, a step, an
    integer index)."""
    from astropy.wcs.wcsapi import SlicedLowLevelWCS

    low = getattr(wcs, "low_level_wcs", wcs)
    slices = getattr(low, "_slices_array", None) if isinstance(low, SlicedLowLevelWCS) else None
    if slices is None or len(slices) != 2 or not all(isinstance(sl, slice) and sl.step in (None, 1)
                                                     and (sl.start is None or sl.start >= 0) for sl in slices):
        return None
    y, x = (int(sl.start or 0) for sl in slices)
    return x, y


def _exposure_wcs(wcs, shape):
    """The NDData's ``wcs`` as the exposure's `astropy.wcs.WCS` (a copy), or InvalidInputError.

    An astropy WCS is copied; astropy's wrapper of one (``HighLevelWCSWrapper``)
    gives the WCS it wraps, and the sliced WCS of a cut-out (``nd[50:150,
    60:160]``) the underlying WCS sliced alike (:func:`_unsliced_wcs`).  Any
    other WCS object (gwcs, a sliced gwcs, ...) cannot be written to a FITS file
    and is refused here rather than when the matched exposure is written.
    """
    from astropy.wcs import WCS

    if wcs is None:
        return None
    low = getattr(wcs, "low_level_wcs", wcs)
    for candidate in (wcs, low):
        if isinstance(candidate, WCS):
            return copy.deepcopy(candidate)
    from astropy.wcs.wcsapi import SlicedLowLevelWCS

    if isinstance(low, SlicedLowLevelWCS):
        rebuilt = _unsliced_wcs(low, shape)
        if rebuilt is not None:
            return rebuilt
        inner = type(getattr(low, "_wcs", None))
        inner = f"{inner.__module__}.{inner.__name__}"
        raise InvalidInputError(
            f"the NDData's WCS is a slice (SlicedLowLevelWCS) of a WCS ({inner}) that psfmatch cannot turn into a FITS "
            "WCS (astropy.wcs.WCS) of the cut-out; slice the data and give the cut-out's WCS yourself "
            "(e.g. NDData(nd.data[y0:y1, x0:x1], wcs=wcs.slice((slice(y0, y1), slice(x0, x1))), ...)), or set "
            "nd.wcs = None")
    raise InvalidInputError(
        f"the NDData's WCS is a {type(low).__module__}.{type(low).__name__}, not an astropy.wcs.WCS, which psfmatch "
        "needs to carry and write it to FITS; convert it (a gwcs: astropy.wcs.WCS(gwcs.to_fits_sip())) or set "
        "nd.wcs = None")


#: psfmatch's planes whose bits an integer NDData mask may set meaning something else (an HST ``DQ`` array's 32,
#: 64 and 256), and what psfmatch does with them.
SPECIAL_PLANES = {"DETECTED": "not a bad pixel (to_nddata leaves it unmasked)",
                  "DETECTED_NEGATIVE": "not a bad pixel (to_nddata leaves it unmasked)",
                  "NO_DATA": "no data: left out of the convolution, its footprint NaN in the matched image"}


def _warn_special_bits(m, planes):
    """Log a warning when the integer mask ``m``, taken with psfmatch's planes, sets the bits of
    :data:`SPECIAL_PLANES`: an HST ``DQ`` flag 64 (a warm pixel) would become DETECTED_NEGATIVE."""
    used = int(np.bitwise_or.reduce(m.astype(np.int64).ravel())) if m.size else 0
    hits = [f"{1 << bit} ({name}: {SPECIAL_PLANES[name]})" for name, bit in sorted(planes.items(), key=lambda kv: kv[1])
            if name in SPECIAL_PLANES and used >> int(bit) & 1]
    if hits:
        log.warning("NDData mask: an integer mask is taken as psfmatch's bit planes, and it sets %s; if its bits mean "
                    "something else (an HST DQ array), pass mask_planes= naming them (e.g. {'WARM': 6, ...}), or give "
                    "a boolean mask (True where bad)", "; ".join(hits))


def exposure_from_nddata(nd, *, psf=None, mask_plane="BAD", mask_planes=None, xy0=None) -> Exposure:
    """An :class:`~psfmatch.Exposure` from an `~astropy.nddata.NDData` (or `CCDData`).

    Parameters
    ----------
    nd : NDData
        The data; nothing in it is modified (arrays are copied).  Without an
        uncertainty the variance is a constant estimated from the robust
        scatter (1.4826 MAD) of the finite pixels, and a warning is logged
        (as :func:`~psfmatch.io.read_exposure` does for a plain image): give
        ``nd`` an uncertainty for a real one.  Without a unit, the ``BUNIT``
        card of a FITS ``Header`` ``meta`` gives ``metadata["unit"]``; a
        dimensionless unit is kept as ``""``.
    psf : PSF model, optional
        The exposure's PSF; default ``ImagePsf(nd.psf)`` when ``nd.psf`` is set.
    mask_plane : str
        The plane a boolean mask sets.  Its pixels' values are convolved like
        any others (their mask bit spreads over every non-zero kernel pixel,
        as for every plane but ``maskDilationPlanes``, so no pixel without it
        receives anything from them); ``"NO_DATA"`` leaves them out instead
        (each then makes its footprint NaN in the matched image), for masks
        over values that are garbage (astropy's meaning of ``True``).
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
        variance or holds a negative value, its uncertainty or mask does not
        have (or broadcast to) the data's shape, it has no uncertainty and no
        finite pixel to estimate a variance from, ``meta`` records an origin
        that is not a pair of integers, an entry of a ``meta`` mapping
        cannot be copied (a lock, an open file), or its WCS is not an
        `astropy.wcs.WCS` (nor astropy's wrapper or slice of one: a gwcs,
        say), which psfmatch could not write to FITS.

    Notes
    -----
    ``HIERARCH PMMETA <key>`` cards of a FITS ``Header`` ``meta`` (written by
    :func:`exposure_to_nddata`) become ``metadata[key]``, with the case of
    ``key`` as the card has it; of cards repeating one key the first is
    taken and a warning is logged.
    """
    from astropy.io import fits

    from ..errors import CorruptFileError
    from ..psf.image_psf import ImagePsf
    from .fits import _alternate_is_origin, _estimate_variance, _is_origin_key, _primary_cards, _xy0_from_header

    if not hasattr(nd, "data") or not hasattr(nd, "uncertainty"):
        raise InvalidInputError(f"from_nddata needs an astropy NDData or CCDData; got {type(nd).__name__}")
    data = np.asarray(nd.data)
    if data.ndim != 2:
        raise InvalidInputError(f"from_nddata needs 2-d data; got shape {data.shape}")
    unit = getattr(nd, "unit", None)
    variance = None
    if nd.uncertainty is not None and getattr(nd.uncertainty, "array", None) is not None:  # (an empty one: none)
        variance = _variance_from_uncertainty(nd.uncertainty, unit, data.shape)
    mask = None
    if nd.mask is not None:
        m = _broadcast(np.asarray(nd.mask), data.shape, "mask")
        if m.dtype == bool:
            mask = Mask.from_bool(m, mask_plane, planes=mask_planes)
        elif np.issubdtype(m.dtype, np.integer):
            mask = Mask(m, planes=mask_planes)
            if mask_planes is None:
                _warn_special_bits(m, mask.getMaskPlaneDict())
        else:
            raise InvalidInputError(f"NDData mask must be boolean or integer bits; got dtype {m.dtype}")
    metadata = {}
    meta = getattr(nd, "meta", None)
    start = None if xy0 is not None else _slice_start(getattr(nd, "wcs", None))
    if meta:
        if xy0 is None:
            cards = meta if isinstance(meta, fits.Header) else {k.upper(): v for k, v in meta.items()
                                                                 if isinstance(k, str) and _is_origin_key(k)}
            xy0 = _xy0_from_header(cards, "NDData meta", error=InvalidInputError)
        if isinstance(meta, fits.Header):
            header = _primary_cards(meta, origin=True)  # a copy, less structure and origin
            entries = [i for i, card in enumerate(header.cards) if card.keyword.startswith(_META_PREFIX)]
            for i in entries:  # entries to_nddata stored as cards; by position: keys may differ only in case
                key, value = header.cards[i].keyword[len(_META_PREFIX):], header.cards[i].value
                if key in metadata:
                    log.warning("NDData meta: the card 'HIERARCH %s%s' is repeated; keeping its first value %r, not "
                                "%r", _META_PREFIX, key, metadata[key], value)
                else:
                    metadata[key] = value
            for i in reversed(entries):
                del header[i]
            metadata["fitsHeader"] = header
            if unit is None and str(meta.get("BUNIT", "")).strip():  # _primary_cards left it out: the unit's card
                metadata["unit"] = str(meta["BUNIT"]).strip()
        else:
            # copied with the task's check: an entry that cannot be copied is named in an InvalidInputError
            alternate = _alternate_is_origin(meta)  # (a sky alternate WCS A is kept)
            metadata.update(metadata_copy({key: value for key, value in meta.items()
                                            if not (isinstance(key, str) and _is_origin_key(key, alternate))},
                                           "the NDData's meta", "the exposure's metadata"))
    if start is not None and start != (0, 0):
        # a cut-out (nd[y0:y1, x0:x1]): its meta is the parent's, its WCS records where it was cut
        x0, y0 = (0, 0) if xy0 is None else (int(xy0[0]), int(xy0[1]))
        xy0 = (x0 + start[0], y0 + start[1])
        log.info("NDData: a cut-out starting at array pixel (x=%d, y=%d) of its parent (its sliced WCS says so): "
                 "xy0 = %s", start[0], start[1], xy0)
    if unit is not None:
        metadata["unit"] = unit.to_string()  # "" for dimensionless, which to_nddata takes back as such
    if psf is None and getattr(nd, "psf", None) is not None:
        psf = ImagePsf(np.asarray(nd.psf))
    exposure = Exposure(data, mask, variance, psf=psf,  # planes converted by Exposure (see plane_dtype)
                        wcs=_exposure_wcs(getattr(nd, "wcs", None), data.shape), xy0=(0, 0) if xy0 is None else xy0,
                        metadata=metadata, mask_planes=mask_planes)
    if variance is None:
        # as read_exposure does for a plain image; the place named in its warning says the NDData's remedy
        try:
            exposure.variance = _estimate_variance(
                exposure.image, "from_nddata: the NDData has no uncertainty",
                "Give it one (a VarianceUncertainty, StdDevUncertainty or InverseVariance)")
        except CorruptFileError as exc:
            raise InvalidInputError(str(exc)) from None
    return exposure


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
    :func:`exposure_from_nddata` lifts the entries back out.  Entries whose
    keys differ only in case (``"exptime"`` and ``"EXPTIME"``) are two cards,
    which FITS files keep and :func:`exposure_from_nddata` tells apart (a
    ``header["PMMETA EXPTIME"]`` look-up, blind to case, finds the first).
    """
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyError

    from .fits import _alternate_is_origin, _is_origin_key, _primary_cards

    if not isinstance(header, fits.Header):
        try:
            header = fits.Header(header)
        except Exception:
            raise InvalidInputError("metadata['fitsHeader'] must be an astropy Header or a mapping of FITS cards; got "
                                    f"{type(header).__name__}") from None
    out = _primary_cards(header, origin=True)  # new cards; the origin is the exposure's (set by the caller)
    dropped = []
    alternate = _alternate_is_origin(metadata)
    for key, value in metadata.items():
        if key in ("fitsHeader", "unit") or (isinstance(key, str) and _is_origin_key(key, alternate)):
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
        Planes that make the boolean mask True; each must be a plane of the
        exposure's mask.  By default a pixel is True when any bit is set but
        those of DETECTED and DETECTED_NEGATIVE (:data:`NON_BAD_PLANES`): bits
        without a plane name (an HST ``DQ`` flag such as 512 taken as an
        integer mask) count as bad.
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
        such a unit; else a `VarianceUncertainty`); ``metadata["unit"] == ""``
        is dimensionless, and no ``"unit"`` entry (or None) no unit.

    Raises
    ------
    InvalidInputError
        If ``exposure`` is not an Exposure, ``bad_planes`` is not a name or a
        sequence of names, a name in it is not a plane of its mask (named
        with the planes it has), ``ccd=True`` and the exposure has no unit,
        or (without ``metadata["fitsHeader"]``) an entry of ``metadata``
        cannot be copied (a lock, an open file).
    """
    from astropy import units as u
    from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty

    from .fits import _alternate_is_origin, _is_origin_key

    if not isinstance(exposure, Exposure):
        raise InvalidInputError(f"to_nddata needs an Exposure; got {type(exposure).__name__}")
    mask = exposure.getMask()
    if bad_planes is None:
        # every bit but the non-bad planes' (those of them this mask has): unnamed bits are flags too
        keep = mask.getPlaneBitMask([p for p in NON_BAD_PLANES if p in mask.getMaskPlaneDict()])
        bad = (mask.array & ~np.int32(keep)) != 0
    else:
        names = list(plane_names(bad_planes, "bad_planes", "['BAD', 'SAT']"))
        # an unknown name raises (a misspelt plane would mask nothing)
        bad = mask.planes_set(names)
    header = exposure.metadata.get("fitsHeader")
    if header is not None:
        meta = _meta_header(exposure.metadata, header)
    else:
        alternate = _alternate_is_origin(exposure.metadata)
        meta = metadata_copy({k: v for k, v in exposure.metadata.items()
                               if k != "unit" and not (isinstance(k, str) and _is_origin_key(k, alternate))},
                              "the exposure's metadata", "the NDData's meta")
    x0, y0 = exposure.getXY0()
    if (x0, y0) != (0, 0):
        meta["LTV1"] = -int(x0)
        meta["LTV2"] = -int(y0)
    unit_text = exposure.metadata.get("unit")
    unit = None if unit_text is None else _parse_unit(str(unit_text))  # "" is dimensionless (astropy's spelling)
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
