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
from FITS keep them, and a ``HISTORY`` card records the change.  A calibration
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
import numbers

__all__ = ["ZERO_POINT_CARDS", "FLUX_ZERO_POINT_CARDS", "INVERSE_SENSITIVITY_CARDS", "rescale_calibration"]

#: FITS cards holding a magnitude zero point: m = ZP - 2.5 log10(counts).
ZERO_POINT_CARDS = ("MAGZERO", "MAGZP", "MAGZPT", "PHOTZP")
#: FITS cards holding the counts of a zeroth-magnitude source.
FLUX_ZERO_POINT_CARDS = ("FLUXMAG0",)
#: FITS cards holding a flux density per count (rate).
INVERSE_SENSITIVITY_CARDS = ("PHOTFLAM", "PHOTFNU")
#: The entries of a ``photoCalib`` mapping that are fluxes per count.
PHOTO_CALIB_KEYS = ("calibrationMean", "calibrationErr")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


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
        if _is_number(value):
            calib[key] = float(value) / factor
            changed.append(f"photoCalib {key} {value:.6g} -> {calib[key]:.6g}")
        else:
            left.append(f"metadata['photoCalib'][{key!r}] ({value!r}: not a finite number)")


def _rescale_header(header, factor, changed, left) -> None:
    """Rescale the calibration cards of ``header`` (an astropy Header or a mapping of cards)."""
    keys = {str(k).upper(): k for k in header.keys()}  # FITS keywords are blind to case
    before = len(changed)
    rules = ([(name, lambda v: v + 2.5 * math.log10(factor)) for name in ZERO_POINT_CARDS]
             + [(name, lambda v: v * factor) for name in FLUX_ZERO_POINT_CARDS]
             + [(name, lambda v: v / factor) for name in INVERSE_SENSITIVITY_CARDS])
    for name, rule in rules:
        if name not in keys:
            continue
        key = keys[name]
        raw = header[key]
        value, comment = (raw if isinstance(raw, tuple) and len(raw) == 2 else (raw, None))
        if not _is_number(value):
            left.append(f"the card {name} ({value!r}: not a finite number)")
            continue
        new = float(rule(float(value)))
        header[key] = new if comment is None else (new, comment)
        changed.append(f"{name} {value:.6g} -> {new:.6g}")
    if len(changed) > before and hasattr(header, "add_history"):
        header.add_history(f"psfmatch: pixel values x {factor:.6g} (kernelSum); calibration rescaled")
