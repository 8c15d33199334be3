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
``PHOTFLAM``/``PHOTFNU``.
"""

from __future__ import annotations

import math

from .geom import _finite_real

__all__ = ["ZERO_POINT_CARDS", "FLUX_ZERO_POINT_CARDS", "INVERSE_SENSITIVITY_CARDS", "CALIBRATION_CARDS",
           "rescale_calibration", "calibration_cards"]

#: FITS cards holding a magnitude zero point: m = ZP - 2.5 log10(counts).
ZERO_POINT_CARDS = ("MAGZERO", "MAGZP", "MAGZPT", "PHOTZP")
#: FITS cards holding the counts of a zeroth-magnitude source.
FLUX_ZERO_POINT_CARDS = ("FLUXMAG0",)
#: FITS cards holding a flux density per count (rate).
INVERSE_SENSITIVITY_CARDS = ("PHOTFLAM", "PHOTFNU")
#: Every card :func:`rescale_calibration` rescales.
CALIBRATION_CARDS = ZERO_POINT_CARDS + FLUX_ZERO_POINT_CARDS + INVERSE_SENSITIVITY_CARDS
#: The entries of a ``photoCalib`` mapping that are fluxes per count.
PHOTO_CALIB_KEYS = ("calibrationMean", "calibrationErr")


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
        value = calib[key]
        if _finite_real(value):
            calib[key] = float(value) / factor
            changed.append(f"photoCalib {key} {value:.6g} -> {calib[key]:.6g}")
        else:
            left.append(f"metadata['photoCalib'][{key!r}] ({value!r}: not a finite number)")


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

    if isinstance(header, fits.Header):
        rules = _rules(factor)
        before = len(changed)
        for i, card in enumerate(header.cards):
            name = str(card.keyword).upper()
            if name not in rules:
                continue
            new = _rescaled(card.value, rules[name], name, changed, left)
            if new is not None:
                header[i] = new  # (the card's comment is kept)
        if len(changed) > before:
            header.add_history(f"psfmatch: pixel values x {factor:.6g} (kernelSum); calibration rescaled")
    elif isinstance(header, dict) or (hasattr(header, "keys") and hasattr(header, "__setitem__")):
        _rescale_mapping(header, factor, changed, left, "{name}")
    else:
        left.append(f"metadata['fitsHeader'] ({type(header).__name__}: neither a FITS Header nor a mapping of "
                    "cards, so its zero points, if any, could not be read)")


def _rescale_mapping(cards, factor, changed, left, label, skip=()) -> None:
    """Rescale the entries of the mapping ``cards`` named as calibration cards (blind to case: every one of
    ``"MAGZP"`` and ``"magzp"``); ``label`` formats an entry's name for the report."""
    rules = _rules(factor)
    for key in list(cards.keys()):
        name = str(key).upper()
        if key in skip or name not in rules:
            continue
        raw = cards[key]
        value, comment = (raw if isinstance(raw, tuple) and len(raw) == 2 else (raw, None))
        new = _rescaled(value, rules[name], label.format(name=name, key=key), changed, left)
        if new is not None:
            cards[key] = new if comment is None else (new, comment)


def _rescaled(value, rule, what, changed, left):
    """``rule(value)`` as a float, recorded in ``changed``; None (recorded in ``left``) for a value that is not a
    finite number."""
    if not _finite_real(value):
        left.append(f"the card {what} ({value!r}: not a finite number)")
        return None
    new = float(rule(float(value)))
    changed.append(f"{what} {value:.6g} -> {new:.6g}")
    return new


def calibration_cards(*headers) -> dict:
    """The calibration cards (:data:`CALIBRATION_CARDS`) of FITS ``headers``, the first's value of each.

    Returns
    -------
    dict
        Card name to value, for the cards present (``{"MAGZERO": 27.0}``); a card
        found in several headers takes the first header's value.
    """
    found = {}
    for header in headers:
        if header is None:
            continue
        for card in header.cards:
            name = str(card.keyword).upper()
            if name in CALIBRATION_CARDS and name not in found:
                found[name] = card.value
    return found
