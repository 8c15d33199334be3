"""Tests that pin down behaviour of the photometric-calibration code (psfmatch.calib, the zero-point parts of
psfmatch.batch and psfmatch.batch_cli, ExposureFileInfo's calibration) that the rest of the suite left open.

Each was written against a mutant of the code that the other tests did not kill (named in its docstring), and
checked to fail on that mutant and pass on the code as it is.  They call the functions directly: no fit, no
cluster, only a few small FITS files.
"""

import argparse
import math

import numpy as np
import pytest
from astropy.io import fits

from psfmatch.calib import (AB_JY_ZERO_POINT, AB_NJY_ZERO_POINT, CALIBRATION_CARDS, MAX_ZERO_POINT_SHIFT,
                            ZERO_POINT_TOLERANCE, calibration_cards, is_rate_unit, kernel_sum_for_zero_point,
                            rescale_calibration, set_zero_point, zero_point)
from psfmatch.errors import InvalidInputError


# -- rescale_calibration ------------------------------------------------------------------------------------------


def test_a_kernel_sum_below_one_rescales_the_calibration_too():
    """kernelSum 0.1 (a target zero point below the exposure's) makes the pixel values ten times smaller: the
    calibration must follow as it does for a factor above 1.  (Mutant: ``factor <= 1`` returned early.)"""
    h = fits.Header([("MAGZERO", 25.0), ("FLUXMAG0", 1.0e10), ("PHOTFLAM", 2.0e-19)])
    md = {"fitsHeader": h, "photoCalib": {"calibrationMean": 0.5, "calibrationErr": 0.01}}
    changed, left = rescale_calibration(md, 0.1)
    assert left == [] and len(changed) == 5
    c = 1234.0  # a source's counts on the input; 0.1 * c on the output: its magnitude and flux must not move
    assert h["MAGZERO"] - 2.5 * math.log10(0.1 * c) == pytest.approx(25.0 - 2.5 * math.log10(c), abs=1e-12)
    assert h["MAGZERO"] == pytest.approx(22.5, abs=1e-12) and h["FLUXMAG0"] == pytest.approx(1.0e9, rel=1e-12)
    assert h["PHOTFLAM"] == pytest.approx(2.0e-18, rel=1e-12)
    assert md["photoCalib"] == {"calibrationMean": pytest.approx(5.0), "calibrationErr": pytest.approx(0.1)}
    assert "HISTORY" in h


@pytest.mark.parametrize("cards", [[("OBSERVER", "x")], [("MAGZERO", "unknown")]], ids=["none", "unreadable"])
def test_no_history_card_where_no_calibration_card_was_rescaled(cards):
    """The HISTORY card says the calibration was rescaled: a header with no calibration card, or only one that
    could not be rescaled, must not claim it.  (Mutant: the card added whenever ``len(changed) >= before``.)"""
    h = fits.Header(cards)
    rescale_calibration({"fitsHeader": h}, 2.0)
    assert "HISTORY" not in h and len(h) == len(cards)


# -- is_rate_unit -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit, rate", [
    ("ELECTRONS/S", True), ("electrons/s", True), ("DN/sec", True), ("counts per second", True), ("ct s-1", True),
    ("ct s^-1", True), ("ct s**-1", True), ("e-/S", True),
    ("adu", False), ("MJy/sr", False), ("counts", False), ("", False), (None, False), ("ct/sr", False),
])
def test_is_rate_unit(unit, rate):
    """Every spelling of a count rate is one (the FITS standard's ``s-1`` too), blind to case; a surface brightness
    (``/sr``) is not.  (Mutant: the ``s-1`` alternative of the pattern dropped.)"""
    assert is_rate_unit(unit) is rate


# -- zero_point's tolerance and kernel_sum_for_zero_point's limit -------------------------------------------------


def test_statements_of_one_zero_point_agree_to_a_thousandth_of_a_magnitude():
    """Cards rounded to 3 decimals (5e-4 mag apart) are one zero point; 2e-3 mag is a contradiction, refused naming
    both.  (Mutant: ZERO_POINT_TOLERANCE of 1e-2.)"""
    assert ZERO_POINT_TOLERANCE == 1e-3
    near = fits.Header([("MAGZERO", 25.0), ("FLUXMAG0", 10 ** (0.4 * 25.0005))])
    assert zero_point({"fitsHeader": near})[0] == 25.0
    far = fits.Header([("MAGZERO", 25.0), ("FLUXMAG0", 10 ** (0.4 * 25.002))])
    with pytest.raises(InvalidInputError, match=r"^f\.fits: its zero points disagree by 0\.0020 mag \(MAGZERO = 25 "
                                                r"\(zero point 25\.0000\); FLUXMAG0 = .* \(zero point 25\.0020\)\)"):
        zero_point({"fitsHeader": far}, "f.fits")


def test_a_shift_of_exactly_forty_magnitudes_is_allowed_and_more_is_refused():
    """"More than MAX_ZERO_POINT_SHIFT (40) magnitudes" is refused: 40 itself gives kernelSum 1e16 (1e-16 the other
    way, whose square still holds in float32); 40.01 and 60 are refused, either way.  (Mutants: ``abs(shift) < 40``;
    a limit of 100.)"""
    assert MAX_ZERO_POINT_SHIFT == 40.0
    md = {"fitsHeader": {"MAGZERO": 25.0}}
    s, zp, _ = kernel_sum_for_zero_point(md, 65.0)
    assert zp == 25.0 and s == pytest.approx(1e16, rel=1e-12)
    low = kernel_sum_for_zero_point(md, -15.0)[0]
    assert low == pytest.approx(1e-16, rel=1e-12) and np.float32(low) ** 2 > np.finfo(np.float32).tiny
    for target, said in ((65.01, r"\+40\.01"), (85.0, r"\+60"), (-35.0, r"-60")):
        with pytest.raises(InvalidInputError, match=rf"^e\.fits: the zero point to scale to, {target:g}, is {said} "
                                                    r"mag from its own, 25\.0000 \(MAGZERO = 25\).*beyond the 40 mag "
                                                    r"\(a factor 1e\+16\)"):
            kernel_sum_for_zero_point(md, target, "e.fits")


# -- set_zero_point snaps every statement -------------------------------------------------------------------------


def _each_statement(md):
    """The zero point each statement of ``md`` gives on its own (a dict of label to value)."""
    out = {}
    header = md.get("fitsHeader")
    items = header.items() if header is not None else []
    for key, raw in items:
        if str(key).upper() not in CALIBRATION_CARDS or str(key).upper() == "PHOTFLAM":
            continue  # (HISTORY; PHOTFLAM states no zero point)
        out[f"card {key}"] = zero_point({"fitsHeader": {key: raw}, **({"unit": md["unit"]} if "unit" in md else {})})[0]
    for key, raw in md.items():
        if key not in ("fitsHeader", "photoCalib", "unit"):
            out[f"own {key}"] = zero_point({key: raw, **({"unit": md["unit"]} if "unit" in md else {})})[0]
    if "photoCalib" in md:
        out["photoCalib"] = zero_point({"photoCalib": md["photoCalib"]})[0]
    return out


@pytest.mark.parametrize("md", [
    # a stored photoCalib 4e-4 mag from MAGZERO (mutant: calibrationMean left to rescale_calibration)
    {"fitsHeader": fits.Header([("MAGZERO", 25.0)]),
     "photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * 25.0004)}},
    # a mapping of cards, keyed in lower case, with a comment (mutant: a dict fitsHeader not snapped)
    {"fitsHeader": {"MAGZERO": 25.0, "fluxmag0": (10 ** (0.4 * 25.0004), "c")}},
    # the metadata's own entries, as an NDData's meta holds them (mutant: those not snapped)
    {"MAGZERO": 25.0, "FluxMag0": 10 ** (0.4 * 25.0004)},
    # pixel values per second: MAGZPT and PHOTFNU are zero points (mutants: the rate cards not snapped; PHOTFNU not
    # snapped, or snapped with the sign of its magnitude flipped)
    {"unit": "ELECTRONS/S",
     "fitsHeader": fits.Header([("MAGZPT", 25.0003), ("PHOTFNU", 3631.0 * 10 ** (-0.4 * 25.0))])},
], ids=["photoCalib", "dict-header", "own-entries", "rate"])
def test_set_zero_point_puts_every_statement_exactly_on_the_target(md):
    """After rescaling to the target, statements that disagreed within the tolerance still do; set_zero_point must
    make each one state the target (to rounding), wherever it is, so that the outputs of a batch compare equal."""
    s = kernel_sum_for_zero_point(md, 27.0)[0]
    rescale_calibration(md, s)
    assert max(abs(z - 27.0) for z in _each_statement(md).values()) > 1e-4  # (the premise: off before the snap)
    set_zero_point(md, 27.0)
    each = _each_statement(md)
    assert each and all(z == pytest.approx(27.0, abs=1e-9) for z in each.values()), each
    if isinstance(md.get("fitsHeader"), dict):
        assert md["fitsHeader"]["fluxmag0"] == (10 ** (0.4 * 27.0), "c")  # the comment kept
    if "photoCalib" in md:
        assert md["photoCalib"]["calibrationMean"] == pytest.approx(10 ** (0.4 * (AB_NJY_ZERO_POINT - 27.0)),
                                                                    rel=1e-14)
    if "unit" in md:
        assert md["fitsHeader"]["MAGZPT"] == 27.0
        assert md["fitsHeader"]["PHOTFNU"] == pytest.approx(10 ** (0.4 * (AB_JY_ZERO_POINT - 27.0)), rel=1e-14)


# -- what the coadd and the early check compare -------------------------------------------------------------------


def test_coadd_inputs_a_ten_thousandth_of_a_magnitude_apart_are_on_different_flux_scales():
    """The comparison forgives float rounding (27.000000000000004), not a real difference: MAGZERO 27 against
    27.0001, or FLUXMAG0 a part in 1e4 apart, are refused.  (Mutant: a tolerance of 1e-3 of the value.)"""
    from psfmatch.batch import _common_calibration

    same = _common_calibration([("a", {"MAGZERO": 27.0, "FLUXMAG0": 1e10}),
                                ("b", {"MAGZERO": 27.000000000000004, "FLUXMAG0": 1e10 * (1 + 1e-12)})], True)
    assert same == {"MAGZERO": 27.0, "FLUXMAG0": 1e10}
    for name, a, b in (("MAGZERO", 27.0, 27.0001), ("FLUXMAG0", 1e10, 1.0001e10)):
        with pytest.raises(InvalidInputError, match=rf"coadd input b has {name} = {b!r} and a has {a!r}: their pixels "
                                                    r"are on different flux scales"):
            _common_calibration([("a", {name: a}), ("b", {name: b})], True)


def test_a_card_takes_precedence_over_a_metadata_entry_of_the_same_name():
    """_calibration_entries: the metadata's own entries count only where no card has the name (and pairs give their
    value).  (Mutant: the metadata's entry replaced the card's.)"""
    from psfmatch.batch import _calibration_entries

    got = _calibration_entries({"MAGZERO": 25.0}, {"magzero": 26.0, "FluxMag0": (1e10, "c"), "OTHER": 1.0,
                                                   "photoCalib": {"calibrationMean": 2.0, "x": 1}})
    assert got == {"MAGZERO": 25.0, "FLUXMAG0": 1e10, "photoCalib calibrationMean": 2.0}


def _grid(path, cards, metadata=None, unit=None):
    from psfmatch.batch import _InputGrid

    return _InputGrid(path, (8, 8), (0, 0), None, (), fits.Header(cards), metadata or {}, unit)


def test_the_early_check_compares_the_zero_points_as_snapped():
    """Brought to one zero point, exposures whose FLUXMAG0 and MAGZERO disagreed by rounding (4e-4 mag) get
    identical cards (set_zero_point), which the coadd accepts: the check made before any match must accept them too.
    (Mutant: the early check compared them before set_zero_point.)"""
    from psfmatch.batch import _check_batch_calibration

    a = _grid("a.fits", [("MAGZERO", 25.0), ("FLUXMAG0", 10 ** (0.4 * 25.0004))])
    b = _grid("b.fits", [("MAGZERO", 26.0), ("FLUXMAG0", 10 ** (0.4 * 26.0))])
    _check_batch_calibration([a, b], "--coadd c.fits", zero_point=27.0, require_same=True)
    # (and without a zero point, 25 against 26 is refused)
    with pytest.raises(InvalidInputError, match=r"--coadd c\.fits: input b\.fits would be matched with FLUXMAG0"):
        _check_batch_calibration([a, b], "--coadd c.fits", require_same=True)


# -- headers as the reader keeps them -----------------------------------------------------------------------------


def test_calibration_cards_keep_the_first_value_of_a_repeated_card():
    """As the reader keeps the primary header's card over the image's, and the coadd compares the first value.
    (Mutant: the last value won.)"""
    h1 = fits.Header([("MAGZERO", 25.0), ("MAGZERO", 26.0), ("PHOTFLAM", 1e-19)])
    h2 = fits.Header([("MAGZERO", 27.0), ("FLUXMAG0", 5.0)])
    assert calibration_cards(h1, None, h2) == {"MAGZERO": 25.0, "PHOTFLAM": 1e-19, "FLUXMAG0": 5.0}


def _lsst_file(path, primary, image):
    img = np.ones((16, 16), np.float32)
    fits.HDUList([fits.PrimaryHDU(header=fits.Header(primary)), fits.ImageHDU(img, fits.Header(image), name="IMAGE"),
                  fits.ImageHDU(np.zeros((16, 16), np.int32), name="MASK"),
                  fits.ImageHDU(img, name="VARIANCE")]).writeto(path)
    return str(path)


def test_an_lsst_style_files_calibration_is_read_as_the_reader_keeps_it(tmp_path):
    """An LSST-style file (IMAGE, MASK, VARIANCE; no psfmatch METADATA) whose primary and image headers both state a
    zero point: the primary's card is the exposure's, the image's other cards and its BUNIT count, and the check made
    before any match reads the zero point the worker reads.  (Mutants: ExposureFileInfo's calibration and
    calibration_header read from the image header first, or from the primary only; _input_grid dropping the unit of
    such a file.)"""
    from psfmatch.batch import _check_batch_calibration, _input_grid
    from psfmatch.io import read_exposure, read_exposure_info

    rate = _lsst_file(tmp_path / "rate.fits", [("MAGZPT", 25.0)],
                      [("BUNIT", "ELECTRONS/S"), ("MAGZPT", 25.5), ("PHOTFLAM", 1e-19)])
    info = read_exposure_info(rate)
    assert info.calibration == {"MAGZPT": 25.0, "PHOTFLAM": 1e-19}
    assert [(c.keyword, c.value) for c in info.calibration_header.cards] == [("MAGZPT", 25.0), ("PHOTFLAM", 1e-19)]
    worker = read_exposure(rate).metadata
    grid = _input_grid(rate)
    assert grid.unit == "ELECTRONS/S"
    early = kernel_sum_for_zero_point(grid.calibration_metadata(), 27.0, rate)
    assert early[:2] == kernel_sum_for_zero_point(worker, 27.0, rate)[:2] == (pytest.approx(10 ** 0.8), 25.0)
    _check_batch_calibration([rate], "t", zero_point=27.0)  # (it can be read: no refusal)


def test_a_blank_bunit_is_no_unit_in_the_early_check_as_in_the_worker(tmp_path):
    """A plain image whose BUNIT is blank and whose only zero point is of a count rate: the early check refuses it
    as the worker does, saying its unit is unknown.  (Mutant: the BUNIT reader giving '' for a blank BUNIT.)"""
    from psfmatch.batch import _check_batch_calibration
    from psfmatch.io.fits import header_unit as _header_unit
    from psfmatch.io import read_exposure

    path = str(tmp_path / "blank.fits")
    fits.PrimaryHDU(np.ones((16, 16), np.float32), fits.Header([("BUNIT", "   "), ("MAGZPT", 25.0)])).writeto(path)
    assert _header_unit(fits.getheader(path)) is None
    said = r"pixel values are of unknown unit \(no BUNIT\), not per second"
    with pytest.raises(InvalidInputError, match=said):
        kernel_sum_for_zero_point(read_exposure(path).metadata, 27.0, path)
    with pytest.raises(InvalidInputError, match=r"^t: the zero point of 1 of 1 input\(s\) cannot be read.*" + said):
        _check_batch_calibration([path], "t", zero_point=27.0)


# -- psfmatch batch --coadd's early check ------------------------------------------------------------------------


def _plain(path, magzero):
    fits.PrimaryHDU(np.ones((16, 16), np.float32), fits.Header([("MAGZERO", magzero)])).writeto(path)
    return str(path)


def _coadd_args(tmp_path, **options):
    args = dict(coadd=str(tmp_path / "co.fits"), zero_point=None, kernel_sum=1.0, coadd_mixed_calibration=False,
                coadd_exclude=None)
    args.update(options)
    return argparse.Namespace(**args)


def test_cli_coadd_check_honours_mixed_calibration_and_names_the_matched_values(tmp_path):
    """``--coadd`` with inputs on zero points 25 and 26.5: refused before any match, naming the values their matched
    files would carry (with ``--kernel-sum 4``: 26.505 and 28.005, not the inputs' own); allowed with
    ``--coadd-mixed-calibration``.  (Mutants: the check made with ``require_same=True`` whatever the option; with
    kernel_sum 1.)"""
    from psfmatch.batch_cli import _check_coadd_options

    paths = [_plain(tmp_path / "a.fits", 25.0), _plain(tmp_path / "b.fits", 26.5)]
    co = tmp_path / "co.fits"
    with pytest.raises(InvalidInputError, match=rf"^--coadd {co}: input {paths[1]} would be matched with MAGZERO = "
                                                rf"28\.005\d* and {paths[0]} with 26\.505\d*: their pixels would be on "
                                                r"different flux scales.*--coadd-mixed-calibration"):
        _check_coadd_options(_coadd_args(tmp_path, kernel_sum=4.0), paths)
    _check_coadd_options(_coadd_args(tmp_path, kernel_sum=4.0, coadd_mixed_calibration=True), paths)
    _check_coadd_options(_coadd_args(tmp_path, zero_point=27.0), paths)


def test_a_photo_calib_mapping_without_its_mean_is_reported_and_left():
    """A ``photoCalib`` dict without ``calibrationMean`` is no calibration psfmatch can interpret: left as it was and
    reported, as the module says.  (Mutant: its ``calibrationErr`` rescaled alone.)"""
    md = {"photoCalib": {"calibrationErr": 0.4}}
    changed, left = rescale_calibration(md, 2.0)
    assert changed == [] and md["photoCalib"] == {"calibrationErr": 0.4}
    assert len(left) == 1 and left[0].startswith("metadata['photoCalib'] (dict; psfmatch rescales a mapping with "
                                                 "'calibrationMean'")


def test_cards_that_are_not_numbers_are_compared_as_they_are():
    """Two coadd inputs whose MAGZERO is text ('x', 'y') do not share a calibration: refused; the same text is one.
    (Mutant: values that are not numbers compared as equal.)"""
    from psfmatch.batch import _common_calibration

    assert _common_calibration([("a", {"MAGZERO": "x"}), ("b", {"MAGZERO": "x"})], True) == {"MAGZERO": "x"}
    with pytest.raises(InvalidInputError, match=r"coadd input b has MAGZERO = 'y' and a has 'x'"):
        _common_calibration([("a", {"MAGZERO": "x"}), ("b", {"MAGZERO": "y"})], True)


def test_the_marker_hash_tells_zero_points_apart():
    """Outputs matched onto zero point 27.0 are stale for 27.4 (another kernelSum): the configuration hash must
    differ; without a zero point it is the hash of the kernelSum alone.  (Mutant: the zero point rounded to a whole
    magnitude in the hash.)"""
    from psfmatch import ModelPsfMatchConfig
    from psfmatch.batch import _config_hash

    config = ModelPsfMatchConfig()
    hashes = {_config_hash(config, 1.0, z) for z in (None, 27.0, 27.4, 27.0001)}
    assert len(hashes) == 4
    assert _config_hash(config, 1.0, 27.0) == _config_hash(config, 1.0, 27)
    assert _config_hash(config, 1.0) == _config_hash(config, 1.0, None)
