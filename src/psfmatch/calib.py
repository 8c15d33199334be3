"""The photometric calibration a matched exposure inherits, rescaled with its flux.

``ModelPsfMatchTask.run(exposure, reference, kernelSum=s)`` returns pixel values
``s`` times the input's (SPEC; in LSST a normalized convolution cancels ``s``
instead).  The matched exposure inherits the input's metadata, and with it the
calibration that turns its pixel values into fluxes.  Left as it was, that
calibration would be off by the factor ``s``, and every magnitude measured on the
output by :math:`2.5 \\log_{10} s`.  :func:`rescale_calibration` therefore updates what has
an unambiguous meaning:

- ``metadata["photoCalib"]``, a mapping as LSST's PhotoCalib holds it:
  ``calibrationMean`` (nJy per count) and ``calibrationErr`` are divided by ``s``;
- magnitude zero points, the FITS cards ``MAGZERO``, ``MAGZP``, ``MAGZPT`` and
  ``PHOTZP`` (the magnitude of one count, or one count per second): plus
  :math:`2.5 \\log_{10} s`;
- ``FLUXMAG0`` (the counts of a zeroth-magnitude source): times ``s``;
- ``PHOTFLAM`` and ``PHOTFNU`` (HST: flux density per count rate): divided by ``s``.

:func:`zero_point` reads an exposure's zero point (the magnitude of one count)
from the same places, and :func:`kernel_sum_for_zero_point` gives the
``kernelSum`` that brings it to a common one: a batch of exposures on different
zero points is matched onto one flux scale, ready to be coadded.

The cards are looked up in ``metadata["fitsHeader"]``, where exposures read
from FITS keep them (every card of a keyword that repeats; a ``HISTORY`` card
records the change), and among the metadata's own entries, blind to case (an
NDData's dict ``meta`` puts them there).  A calibration
it cannot interpret, a ``photoCalib`` of another type or a
card that is not a number, is left as it was and reported, so that the caller can
correct it.  Cards whose meaning depends on the instrument (a bare ``ZP``,
``GAIN``, ``SATURATE``, HST's ``PHOTZPT``, which is a constant of the magnitude
system) are not touched.

References
----------
SExtractor and SWarp's ``MAGZERO``; LSST ``lsst.afw.image.PhotoCalib``
(``calibrationMean``: nJy per instrumental count); the HST data handbooks'
``PHOTFLAM``/``PHOTFNU``; Oke & Gunn (1983), ApJ 266, 713 (the AB system:
:math:`m_{AB} = -2.5 \\log_{10}(f_\\nu / 3631\\,\\mathrm{Jy})`).
"""

from __future__ import annotations

import math
import re

from .errors import InvalidInputError
from .geom import _finite_real

__all__ = ["ZERO_POINT_CARDS", "FLUX_ZERO_POINT_CARDS", "INVERSE_SENSITIVITY_CARDS", "CALIBRATION_CARDS",
           "rescale_calibration", "calibration_cards", "zero_point", "kernel_sum_for_zero_point",
           "set_zero_point", "calibration_header", "is_rate_unit", "is_count_unit", "COUNT_UNITS",
           "ZERO_POINT_TOLERANCE", "MAX_ZERO_POINT_SHIFT",
           "RATE_ZERO_POINT_CARDS"]

#: FITS cards holding a magnitude zero point: m = ZP - 2.5 log10(counts).
ZERO_POINT_CARDS = ("MAGZERO", "MAGZP", "MAGZPT", "PHOTZP")
#: FITS cards holding the counts of a zeroth-magnitude source.
FLUX_ZERO_POINT_CARDS = ("FLUXMAG0",)
#: FITS cards holding a flux density per count (rate).
INVERSE_SENSITIVITY_CARDS = ("PHOTFLAM", "PHOTFNU")
#: Zero points of a count rate in their usual conventions (CASU's ``MAGZPT``, HST's ``PHOTFNU``):
#: :func:`zero_point` reads them only for pixel values per second.
RATE_ZERO_POINT_CARDS = ("MAGZPT", "PHOTFNU")
#: Every card :func:`rescale_calibration` rescales.
CALIBRATION_CARDS = ZERO_POINT_CARDS + FLUX_ZERO_POINT_CARDS + INVERSE_SENSITIVITY_CARDS
#: The entries of a ``photoCalib`` mapping that are fluxes per count.
PHOTO_CALIB_KEYS = ("calibrationMean", "calibrationErr")
#: AB magnitude of 1 nJy, ``2.5 log10(3631e9)``: the zero point of a ``photoCalib`` of 1 nJy per count.
AB_NJY_ZERO_POINT = 2.5 * math.log10(3631e9)
#: AB magnitude of 1 Jy, ``2.5 log10(3631)`` (``PHOTFNU`` is in Jy per count rate).
AB_JY_ZERO_POINT = 2.5 * math.log10(3631.0)
#: Largest difference (magnitudes) between two statements of one exposure's zero point that
#: :func:`zero_point` takes for one value (cards rounded to 3 decimals differ by up to 5e-4).
ZERO_POINT_TOLERANCE = 1e-3
#: Largest difference (magnitudes) between a target zero point and an exposure's that
#: :func:`kernel_sum_for_zero_point` turns into a kernelSum (a factor of 1e16 either way): zero points of
#: real instruments differ by far less, and a scale beyond about 1e-19 underflows the float32 variance
#: (``s**2 V`` below float32's smallest normal number, 1.2e-38).
MAX_ZERO_POINT_SHIFT = 40.0
#: The remedy for an exposure whose zero point cannot be read.
_OWN_KERNEL_SUM = "give the kernelSum yourself (run(..., kernelSum=S), psfmatch run --kernel-sum S)"


def rescale_calibration(metadata: dict, factor: float) -> tuple[list[str], list[str]]:
    """Update, in place, the calibration in ``metadata`` for pixel values ``factor`` times larger.

    Parameters
    ----------
    metadata : dict
        The matched exposure's metadata (a copy of the input's: it is changed).
    factor : float
        The scale of the pixel values, ``kernelSum``; positive and finite.

    Returns
    -------
    changed, left : list of str
        What was rescaled (``"MAGZERO 25 -> 25.753"``) and what holds a
        calibration this function cannot interpret (left as it was).

    Notes
    -----
    With pixel values :math:`c' = s\\,c`, a source of flux :math:`F` keeps
    :math:`F = C\\,c = (C/s)\\,c'`, so a calibration :math:`C` (flux per count)
    becomes :math:`C/s`; a magnitude zero point :math:`m = Z - 2.5\\log_{10} c`
    becomes :math:`Z + 2.5\\log_{10} s`; the counts of a zeroth-magnitude source
    :math:`c_0` become :math:`s\\,c_0`.  ``factor == 1`` changes nothing.
    """
    changed: list[str] = []
    left: list[str] = []
    if factor == 1.0:
        return changed, left
    _rescale_photo_calib(metadata, factor, changed, left)
    header = metadata.get("fitsHeader")
    if header is not None:
        _rescale_header(header, factor, changed, left)
    unit = metadata.get("unit")
    if unit is not None and not is_count_unit(unit):  # nJy, MJy/sr: a calibration in the unit itself
        left.append(f"the image unit {str(unit)!r} (a physical unit: the matched pixel values are {factor:.6g} times "
                    "the input's, in it)")
    # entries of the metadata itself named as the cards (an NDData's dict meta, a caller's own)
    _rescale_mapping(metadata, factor, changed, left, "metadata[{key!r}]", skip=("fitsHeader", "photoCalib"))
    return changed, left


def _rescale_photo_calib(metadata, factor, changed, left) -> None:
    calib = metadata.get("photoCalib")
    if calib is None:
        return
    if not isinstance(calib, dict) or "calibrationMean" not in calib:
        left.append(f"metadata['photoCalib'] ({type(calib).__name__}; psfmatch rescales a mapping with "
                    "'calibrationMean', nJy per count)")
        return
    for key in PHOTO_CALIB_KEYS:
        if key not in calib:
            continue
        new = _rescaled(calib[key], lambda v: v / factor, f"photoCalib {key}", changed, left)
        if new is not None:
            calib[key] = new


def _rules(factor) -> dict:
    """The new value of each calibration card, as a function of its old one."""
    shift = 2.5 * math.log10(factor)
    rules = {name: (lambda v: v + shift) for name in ZERO_POINT_CARDS}
    rules.update({name: (lambda v: v * factor) for name in FLUX_ZERO_POINT_CARDS})
    rules.update({name: (lambda v: v / factor) for name in INVERSE_SENSITIVITY_CARDS})
    return rules


def _rescale_header(header, factor, changed, left) -> None:
    """Rescale the calibration cards of ``header``: an astropy Header (every card, a repeated keyword too)
    or a mapping of cards (values, or ``(value, comment)`` pairs); anything else is reported in ``left``."""
    from astropy.io import fits

    rules = _rules(factor)
    before = len(changed)
    if not _update_cards(header, rules, lambda name, value, what: _rescaled(value, rules[name], what, changed, left)):
        left.append(f"metadata['fitsHeader'] ({type(header).__name__}: neither a FITS Header nor a mapping of "
                    "cards, so its zero points, if any, could not be read)")
    elif isinstance(header, fits.Header) and len(changed) > before:
        header.add_history(f"psfmatch: pixel values x {factor:.6g} (kernelSum); calibration rescaled")


def _rescale_mapping(cards, factor, changed, left, label, skip=()) -> None:
    """Rescale the entries of the mapping ``cards`` named as calibration cards (blind to case: every one of
    ``"MAGZP"`` and ``"magzp"``); ``label`` formats an entry's name for the report."""
    rules = _rules(factor)
    _update_mapping(cards, rules, lambda name, value, what: _rescaled(value, rules[name], what, changed, left),
                    label, skip)


def _update_cards(header, names, update) -> bool:
    """:func:`_update_mapping` on a ``fitsHeader``: an astropy Header (every card of a repeated keyword, its
    comment kept) or a mapping of cards; False, with nothing changed, for anything else."""
    from astropy.io import fits

    if isinstance(header, fits.Header):
        for i, card in enumerate(header.cards):
            name = str(card.keyword).upper()
            if name in names:
                new = update(name, card.value, name)
                if new is not None:
                    header[i] = new
        return True
    if isinstance(header, dict) or (hasattr(header, "keys") and hasattr(header, "__setitem__")):
        _update_mapping(header, names, update, "{name}")
        return True
    return False


def _update_mapping(cards, names, update, label, skip=()) -> None:
    """Replace each entry of the mapping ``cards`` named (blind to case) as one of ``names`` by
    ``update(NAME, value, what)`` (``what``: ``label`` formatted with ``name`` and ``key``), unless that is
    None; a ``(value, comment)`` pair keeps its comment."""
    for key in list(cards.keys()):
        name = str(key).upper()
        if key in skip or name not in names:
            continue
        raw = cards[key]
        value, comment = (raw if isinstance(raw, tuple) and len(raw) == 2 else (raw, None))
        new = update(name, value, label.format(name=name, key=key))
        if new is not None:
            cards[key] = new if comment is None else (new, comment)


def _named(what):
    """How the report names ``what``: ``metadata['photoCalib'][KEY]``, or a card."""
    if what.startswith("photoCalib "):
        return f"metadata['photoCalib'][{what.split(' ', 1)[1]!r}]"
    return f"the card {what}"


def _rescaled(value, rule, what, changed, left):
    """``rule(value)`` as a float, recorded in ``changed``; None (recorded in ``left``) for a value that is not a
    finite number, or whose rescaled value would not be (beyond the float range: a FITS card cannot hold inf) or
    would round to 0 from a value that is not."""
    if not _finite_real(value):
        left.append(f"{_named(what)} ({value!r}: not a finite number)")
        return None
    new = float(rule(float(value)))  # (Python floats: an overflow is inf, an underflow 0, not an error)
    if not math.isfinite(new) or (new == 0.0 and float(value) != 0.0):
        left.append(f"{_named(what)} ({value!r}: rescaled, it would be {new!r}, beyond the range of a float)")
        return None
    changed.append(f"{what} {value:.6g} -> {new:.6g}")
    return new


def calibration_header(*headers):
    """Every calibration card (:data:`CALIBRATION_CARDS`) of FITS ``headers`` as an exposure read from them keeps it.

    The cards of the first header (every one of a repeated keyword), then those of each later header
    whose keyword no earlier header has (:func:`psfmatch.io.read_exposure` keeps the primary header's
    cards and the image header's that the primary lacks).

    Returns
    -------
    astropy.io.fits.Header
    """
    from astropy.io import fits

    out, seen = fits.Header(), set()
    for header in headers:
        if header is None:
            continue
        mine = set()
        for card in header.cards:
            name = str(card.keyword).upper()
            if name in CALIBRATION_CARDS and name not in seen:
                out.append((name, card.value, card.comment), end=True)
                mine.add(name)
        seen |= mine
    return out


def calibration_cards(*headers) -> dict:
    """The calibration cards (:data:`CALIBRATION_CARDS`) of FITS ``headers``, the first's value of each.

    Returns
    -------
    dict
        Card name to value, for the cards present (``{"MAGZERO": 27.0}``); a card
        found in several headers takes the first header's value.
    """
    found = {}
    for card in calibration_header(*headers).cards:
        found.setdefault(card.keyword, card.value)
    return found


def _zero_point_rules(rate) -> dict:
    """Each card that states a zero point of the pixel values (the magnitude of one unit), as a function of its
    value (None for a value it cannot hold: not positive where a logarithm is taken); with ``rate`` (pixel values
    per second) also the zero points of a count rate, :data:`RATE_ZERO_POINT_CARDS`."""
    rules = {name: (lambda v: v) for name in ZERO_POINT_CARDS if name not in RATE_ZERO_POINT_CARDS}
    rules["FLUXMAG0"] = lambda v: 2.5 * math.log10(v) if v > 0 else None
    if rate:
        rules["MAGZPT"] = lambda v: v
        rules["PHOTFNU"] = lambda v: AB_JY_ZERO_POINT - 2.5 * math.log10(v) if v > 0 else None
    return rules


_RATE = re.compile(r"(/|\bper)\s*(s|sec|second)\b|\bs(\^|\*\*)?-1\b", re.IGNORECASE)


def is_rate_unit(unit) -> bool:
    """Whether the image unit ``unit`` (a ``BUNIT`` text or an astropy unit) is per second: ``ELECTRONS/S``,
    ``DN/s``, ``ct s-1``, ``counts per second`` (not ``MJy/sr``); False for None.

    >>> is_rate_unit("ELECTRONS/S"), is_rate_unit("MJy/sr"), is_rate_unit("adu"), is_rate_unit(None)
    (True, False, False, False)
    """
    return unit is not None and bool(_RATE.search(str(unit)))


#: Image units (``BUNIT``, blind to case, a plural and a rate aside) that count detections, whose pixel values a
#: separate calibration (a zero point) puts on a flux scale: rescaling the values leaves them right.
COUNT_UNITS = frozenset({"", "1", "adu", "count", "ct", "cts", "dn", "electron", "e", "e-", "photon", "ph",
                         "data number", "dimensionless"})

#: A per-pixel suffix (``count/pixel``, ``adu/pix``, ``DN pix-1``): counts in a pixel are still counts.
_PER_PIXEL = re.compile(r"(/|\bper)\s*(pixel|pix|px)\b|\b(pixel|pix|px)(\^|\*\*)?-1\b", re.IGNORECASE)


def is_count_unit(unit) -> bool:
    """Whether the image unit ``unit`` counts detections (:data:`COUNT_UNITS`: ``adu``, ``ELECTRONS/S``,
    ``counts``, ``DN``, dimensionless) rather than stating a physical flux (``nJy``, ``MJy/sr``, ``nanomaggy``),
    which a kernelSum other than 1 makes wrong; True for None (no unit stated).

    >>> is_count_unit("ELECTRONS/S"), is_count_unit("adu"), is_count_unit("MJy/sr"), is_count_unit(None)
    (True, True, False, True)
    >>> is_count_unit("count/pixel"), is_count_unit("DN/s/pixel"), is_count_unit("1"), is_count_unit("nJy/pix")
    (True, True, True, False)
    """
    if unit is None:
        return True
    text = _PER_PIXEL.sub("", _RATE.sub("", str(unit))).strip().lower()
    return text in COUNT_UNITS or (text.endswith("s") and text[:-1] in COUNT_UNITS)


def _header_entries(header, label):
    """``(label, name, value)`` of every card of ``header`` (an astropy Header: each card of a repeated keyword;
    a mapping: its entries, blind to case, ``(value, comment)`` pairs unpacked)."""
    from astropy.io import fits

    if isinstance(header, fits.Header):
        return [(str(card.keyword).upper(), str(card.keyword).upper(), card.value) for card in header.cards]
    if isinstance(header, dict) or (hasattr(header, "keys") and hasattr(header, "__getitem__")):
        out = []
        for key in header.keys():
            raw = header[key]
            value = raw[0] if isinstance(raw, tuple) and len(raw) == 2 else raw
            out.append((label.format(key=key, name=str(key).upper()), str(key).upper(), value))
        return out
    return None


def zero_point(metadata: dict, where: str = "the exposure") -> tuple[float, str]:
    """The photometric zero point of an exposure: the magnitude of one count (or count per second).

    Read from what :func:`rescale_calibration` rescales, in ``metadata`` (an
    exposure's, ``exposure.getMetadata()``):

    - ``MAGZERO``, ``MAGZP``, ``PHOTZP``: :math:`Z`, as written;
    - ``FLUXMAG0`` (counts of a zeroth-magnitude source): :math:`Z = 2.5 \\log_{10} c_0`;
    - ``photoCalib``'s ``calibrationMean`` (nJy per count): :math:`Z = 2.5 \\log_{10}(3631 \\times 10^9 / C)`, AB;
    - only for pixel values per second (``metadata["unit"]``, the image's ``BUNIT``,
      a rate such as ``ELECTRONS/S``): ``MAGZPT`` (CASU's VISTA/UKIDSS zero point, of
      one count per second) and ``PHOTFNU`` (HST: Jy per count rate),
      :math:`Z = 2.5 \\log_{10}(3631 / f)`, AB;

    in ``metadata["fitsHeader"]`` (every card of a repeated keyword) and among the
    metadata's own entries (blind to case).  A zero point of a count rate does not
    describe pixel values in counts (it differs from theirs by :math:`2.5 \\log_{10}`
    of the exposure time), so ``MAGZPT`` and ``PHOTFNU`` are not read for them, nor
    for an image of unknown unit.  ``PHOTFLAM`` is not used: it gives an ST
    magnitude, which another card of the same file (``PHOTFNU``, AB) would contradict.

    Parameters
    ----------
    metadata : dict
        The exposure's metadata.
    where : str
        The exposure, for the messages (its file name).

    Returns
    -------
    zp : float
        The zero point (the first statement found, in the order above).
    source : str
        Where it was read (``"MAGZERO = 25.3"``; every statement, when there are several).

    Raises
    ------
    InvalidInputError
        If ``metadata`` states no zero point, states one that is not a number
        (or not positive where a logarithm is taken), or states several that
        differ by more than :data:`ZERO_POINT_TOLERANCE` magnitudes (which one
        the pixels are on is then unknown); the message names them and the remedy.

    Examples
    --------
    >>> zero_point({"fitsHeader": {"MAGZERO": 25.0}})
    (25.0, 'MAGZERO = 25')
    >>> zp, source = zero_point({"photoCalib": {"calibrationMean": 57.544}})  # nJy per count
    >>> round(zp, 3), source
    (27.0, 'photoCalib calibrationMean = 57.544')
    """
    if not isinstance(metadata, dict):
        raise InvalidInputError(f"{where}: its metadata must be a dict to read a zero point from; got "
                                f"{type(metadata).__name__}")
    rules = _zero_point_rules(is_rate_unit(metadata.get("unit")))
    entries = []
    header = metadata.get("fitsHeader")
    if header is not None:
        found = _header_entries(header, "{name}")
        if found is None:
            raise InvalidInputError(f"{where}: metadata['fitsHeader'] is a {type(header).__name__}, neither a FITS "
                                    "Header nor a mapping of cards, so its zero point cannot be read; "
                                    + _OWN_KERNEL_SUM)
        entries += found
    entries += _header_entries({k: v for k, v in metadata.items() if k not in ("fitsHeader", "photoCalib")},
                               "metadata[{key!r}]")
    statements, bad, per_second = [], [], []
    for label, name, value in entries:
        if name not in rules:
            if name in RATE_ZERO_POINT_CARDS:
                per_second.append(f"{label} = {value!r}")
            continue
        zp = rules[name](float(value)) if _finite_real(value) else None
        if zp is None:
            bad.append(f"{label} = {value!r}")
        else:
            statements.append((zp, f"{label} = {value:.10g}"))
    calib = metadata.get("photoCalib")
    if isinstance(calib, dict) and "calibrationMean" in calib:
        value = calib["calibrationMean"]
        if _finite_real(value) and float(value) > 0:
            statements.append((AB_NJY_ZERO_POINT - 2.5 * math.log10(float(value)),
                               f"photoCalib calibrationMean = {value:.10g}"))
        else:
            bad.append(f"photoCalib calibrationMean = {value!r}")
    if bad:
        raise InvalidInputError(
            f"{where}: its zero point cannot be read from {', '.join(bad)} (a finite number is needed, positive for "
            "FLUXMAG0, PHOTFNU and calibrationMean); correct the card, or " + _OWN_KERNEL_SUM)
    if not statements and per_second:
        unit = metadata.get("unit")
        raise InvalidInputError(
            f"{where}: its only zero points, {', '.join(per_second)}, are of a count rate (per second), and its "
            f"pixel values are {'in ' + repr(str(unit)) if unit is not None else 'of unknown unit (no BUNIT)'}, "
            "not per second: they differ from the zero point of its pixel values by 2.5 log10 of the exposure "
            "time; set MAGZERO to that (MAGZPT + 2.5 * log10(EXPTIME) for counts), or BUNIT to the rate the pixels "
            "are in, or " + _OWN_KERNEL_SUM)
    if not statements:
        raise InvalidInputError(
            f"{where}: no photometric zero point to scale from (none of MAGZERO, MAGZP, PHOTZP or FLUXMAG0 in its "
            "header, nor a photoCalib with calibrationMean; MAGZPT or PHOTFNU for pixel values per second); add "
            "its zero point to the header (MAGZERO), or " + _OWN_KERNEL_SUM)
    values = [zp for zp, _ in statements]
    if max(values) - min(values) > ZERO_POINT_TOLERANCE:
        said = "; ".join(f"{text} (zero point {zp:.4f})" for zp, text in statements)
        raise InvalidInputError(
            f"{where}: its zero points disagree by {max(values) - min(values):.4f} mag ({said}), so the flux scale "
            "of its pixels is unknown (cards in different magnitude systems?); correct or remove the ones that "
            "are wrong, or " + _OWN_KERNEL_SUM)
    return values[0], "; ".join(text for _, text in statements)


def kernel_sum_for_zero_point(metadata: dict, target: float, where: str = "the exposure") -> tuple[float, float, str]:
    """The ``kernelSum`` that puts an exposure on the zero point ``target``.

    With the exposure's zero point :math:`Z` (:func:`zero_point`), a source of
    magnitude :math:`m` has :math:`10^{0.4 (Z - m)}` counts; on the zero point
    :math:`Z_t` it needs :math:`10^{0.4 (Z_t - m)}`, so the pixel values are scaled by

    .. math:: s = 10^{0.4\\,(Z_t - Z)},

    and :func:`rescale_calibration` then makes ``MAGZERO`` :math:`Z_t`.

    Parameters
    ----------
    metadata : dict
        The exposure's metadata.
    target : float
        The zero point wanted (magnitudes), finite.
    where : str
        The exposure, for the messages.

    Returns
    -------
    kernel_sum, zp, source
        ``s``, the exposure's zero point and where it was read.

    Raises
    ------
    InvalidInputError
        If ``target`` is not a finite number, or more than :data:`MAX_ZERO_POINT_SHIFT`
        magnitudes from the exposure's zero point, or as :func:`zero_point`.

    Examples
    --------
    >>> s, zp, _ = kernel_sum_for_zero_point({"fitsHeader": {"MAGZERO": 25.0}}, 27.5)
    >>> round(s, 6), zp
    (10.0, 25.0)
    """
    if not _finite_real(target):
        raise InvalidInputError(f"the zero point to scale to must be a finite number of magnitudes (27.0); got "
                                f"{target!r}")
    zp, source = zero_point(metadata, where)
    shift = float(target) - zp
    if not abs(shift) <= MAX_ZERO_POINT_SHIFT:
        raise InvalidInputError(
            f"{where}: the zero point to scale to, {float(target):g}, is {shift:+.4g} mag from its own, {zp:.4f} "
            f"({source}): a kernelSum of 10**(0.4 * {shift:.4g}), beyond the {MAX_ZERO_POINT_SHIFT:g} mag (a factor "
            f"{10 ** (0.4 * MAX_ZERO_POINT_SHIFT):.0e}) psfmatch applies; give the zero point in magnitudes, as the exposure's")
    return 10.0 ** (0.4 * shift), zp, source


def set_zero_point(metadata: dict, target: float) -> list[str]:
    """State the zero point ``target`` exactly in every place of ``metadata`` that states one, in place.

    After :func:`rescale_calibration` by :func:`kernel_sum_for_zero_point`'s
    factor, the statements :func:`zero_point` read are on ``target``, but each to
    within its own disagreement with the first (up to :data:`ZERO_POINT_TOLERANCE`:
    a ``MAGZERO`` rounded to 3 decimals beside an exact ``FLUXMAG0``).  Exposures
    brought to one zero point must carry identical cards to be coadded, so each
    statement is set from ``target``: the zero-point cards to ``target``,
    ``FLUXMAG0`` to :math:`10^{0.4 Z_t}`, ``photoCalib``'s ``calibrationMean`` to
    :math:`3631 \\times 10^{9 - 0.4 Z_t}` nJy and, for pixel values per second
    (:func:`is_rate_unit`), ``PHOTFNU`` to :math:`3631 \\times 10^{-0.4 Z_t}` Jy.
    ``calibrationErr``, ``PHOTFLAM`` and, for other pixel values, the zero points
    of a count rate (``MAGZPT``, ``PHOTFNU``) are left to :func:`rescale_calibration`.
    A header without ``MAGZERO`` gains ``MAGZERO = target`` (a ``fitsHeader`` is made
    when there is none; not where the metadata's own entries hold a ``MAGZERO``, as
    an NDData ``meta`` does), so that exposures that stated their zero points in different cards (one ``MAGZERO``,
    another ``FLUXMAG0``, another a ``photoCalib``) share one card once on ``target``.

    Returns
    -------
    list of str
        What changed by more than rounding (``"FLUXMAG0 1.0005e+11 -> 1e+11"``,
        ``"MAGZERO added: 27"``).
    """
    from astropy.io import fits

    t = float(target)
    exact = {name: t for name in _zero_point_rules(is_rate_unit(metadata.get("unit")))}  # (what zero_point reads)
    exact["FLUXMAG0"] = 10.0 ** (0.4 * t)
    if "PHOTFNU" in exact:
        exact["PHOTFNU"] = 10.0 ** (0.4 * (AB_JY_ZERO_POINT - t))
    changed = []

    def put(value, new, what):
        if _finite_real(value) and abs(float(value) - new) > 1e-12 * abs(new):
            changed.append(f"{what} {value:.10g} -> {new:.10g}")
        return new

    def update(name, value, what):
        return put(value, exact[name], what)

    header = metadata.get("fitsHeader")
    if header is not None:
        _update_cards(header, exact, update)
    _update_mapping(metadata, exact, update, "metadata[{key!r}]", skip=("fitsHeader", "photoCalib"))
    calib = metadata.get("photoCalib")
    if isinstance(calib, dict) and "calibrationMean" in calib:
        calib["calibrationMean"] = put(calib["calibrationMean"], 10.0 ** (0.4 * (AB_NJY_ZERO_POINT - t)),
                                       "photoCalib calibrationMean")
    if any(str(key).upper() == "MAGZERO" for key in metadata.keys() if key not in ("fitsHeader", "photoCalib")):
        return changed  # (the metadata's own MAGZERO states it: an NDData meta gets no second one)
    if header is None:
        header = metadata["fitsHeader"] = fits.Header()
    if isinstance(header, fits.Header):
        if "MAGZERO" not in header:
            header["MAGZERO"] = (t, "psfmatch: zero point of the matched pixels")
            changed.append(f"MAGZERO added: {t:.10g}")
    elif not any(str(key).upper() == "MAGZERO" for key in header.keys()):
        header["MAGZERO"] = t
        changed.append(f"MAGZERO added: {t:.10g}")
    return changed

