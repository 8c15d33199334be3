"""Adversarial tests of matching onto a common zero point (``zeroPoint``, ``--zero-point``; commit 132fdbf).

What the feature promises: an exposure's zero point is read the same way from its headers before a
batch starts (the early check) as from the exposure the worker reads; a zero point that cannot be
used is refused with a typed error naming it; exposures brought to one zero point coadd, with that
zero point; and the coadd refuses inputs on different flux scales.  Each test of a defect found by
the review failed on the code of that commit.
"""

import copy
import math
import os

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig
from psfmatch.calib import kernel_sum_for_zero_point
from psfmatch.errors import InvalidInputError
from psfmatch.io import read_exposure
from psfmatch.psf import GaussianPsf

REFERENCE = GaussianPsf(31, 31, 2.6)


def _star(n=64):
    y, x = np.mgrid[:n, :n]
    return (1000.0 * np.exp(-((x - 31.3) ** 2 + (y - 32.6) ** 2) / (2 * 1.8 ** 2)) / (2 * np.pi * 1.8 ** 2)).astype(
        np.float32)


def _exposure(metadata, scale=1.0):
    img = _star() * np.float32(scale)
    return Exposure(img, variance=np.ones_like(img), psf=GaussianPsf(21, 21, 1.8), metadata=metadata)


def _write(path, metadata, scale=1.0):
    _exposure(metadata, scale).writeFits(str(path))
    return str(path)


def _config():
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    return config


def _match(path, out, zero_point):
    from psfmatch.batch import match_one

    report = match_one(path, REFERENCE, str(out), _config(), zeroPoint=zero_point)
    assert report.status == "matched", report.error_message
    return report


# -- the early check reads what the worker reads -------------------------------------------------------------------


def _plain_sci(path, primary_cards, sci_cards):
    fits.HDUList([fits.PrimaryHDU(header=fits.Header(primary_cards)),
                  fits.ImageHDU(_star(), fits.Header(sci_cards), name="SCI")]).writeto(path)
    return str(path)


def _plain_fz(path, cards):
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(_star(), fits.Header(cards))]).writeto(path)
    return str(path)


def _plain_gz(path, cards):
    fits.PrimaryHDU(_star(), fits.Header(cards)).writeto(path)
    return str(path)


@pytest.mark.parametrize("make, z", [
    # a plain image whose zero point is in its SCI extension's header only
    (lambda d: _plain_sci(d / "sci.fits", [], [("MAGZERO", 25.0)]), 25.0),
    # primary and SCI state different values: the reader keeps the primary's card, so must the early check
    (lambda d: _plain_sci(d / "both.fits", [("MAGZERO", 25.0)], [("MAGZERO", 25.5)]), 25.0),
    (lambda d: _plain_gz(d / "plain.fits.gz", [("MAGZP", 24.0)]), 24.0),
    (lambda d: _plain_fz(d / "plain.fits.fz", [("MAGZERO", 24.5)]), 24.5),
    # a drizzled HST-like image: PHOTFNU, read because its SCI extension's BUNIT is a rate
    (lambda d: _plain_sci(d / "drz.fits", [], [("BUNIT", "ELECTRONS/S"), ("PHOTFNU", 3631.0 * 10 ** (-0.4 * 25.5))]),
     25.5),
    # a psfmatch file in a rate unit whose zero point is MAGZPT
    (lambda d: _write(d / "rate.fits", {"unit": "DN/s", "fitsHeader": fits.Header([("MAGZPT", 23.0)])}), 23.0),
    # a psfmatch file whose zero point is its stored photoCalib (METADATA), compressed as fpack
    (lambda d: _write(d / "pm.fits.fz", {"photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * 26.0)}}), 26.0),
])
def test_the_early_check_reads_the_zero_point_the_worker_reads(make, z, tmp_path):
    """The headers-only reading (_input_grid, which match_many's and --coadd's early checks use) gives each layout's
    zero point as read_exposure (the worker) does.  (Checked against mutations of _input_grid: reading the primary
    header only, or not asking read_exposure_info for the stored metadata, fails it.)"""
    from psfmatch.batch import _input_grid

    path = make(tmp_path)
    grid = _input_grid(path)
    assert grid is not None
    early = kernel_sum_for_zero_point(grid.calibration_metadata(), 27.0, path)
    worker = kernel_sum_for_zero_point(read_exposure(path).metadata, 27.0, path)
    assert early[1] == pytest.approx(z, abs=1e-9) and worker[1] == pytest.approx(z, abs=1e-9)
    assert early[0] == pytest.approx(worker[0], rel=1e-12)


def test_the_early_check_leaves_the_inputs_it_is_given_unchanged(tmp_path):
    """_check_batch_calibration takes the grids read for the grid check (--coadd): rescaling them for the comparison
    must not change them (checked against a calibration_metadata without its deep copy)."""
    from psfmatch.batch import _check_batch_calibration, _input_grid

    cal = {"calibrationMean": 40.0, "calibrationErr": 0.4}
    a = _write(tmp_path / "a.fits", {"photoCalib": dict(cal), "fitsHeader": fits.Header([("OBSERVER", "x")])})
    grid = _input_grid(a)
    before = copy.deepcopy((grid.calibration, grid.metadata))
    _check_batch_calibration([grid], "t", zero_point=27.0, require_same=True)
    _check_batch_calibration([grid], "t", kernel_sum=3.0, require_same=True)
    assert (grid.calibration, grid.metadata) == before and grid.metadata["photoCalib"] == cal


def test_the_early_check_refuses_a_header_whose_repeated_cards_disagree(tmp_path):
    from psfmatch.batch import _check_batch_calibration, match_one

    bad = str(tmp_path / "rep.fits")
    fits.PrimaryHDU(_star(), fits.Header([("MAGZP", 25.0), ("MAGZP", 26.0)])).writeto(bad)
    good = _write(tmp_path / "good.fits", {"fitsHeader": fits.Header([("MAGZERO", 25.0)])})
    # the worker refuses it ...
    report = match_one(bad, REFERENCE, str(tmp_path / "m.fits"), _config(), zeroPoint=27.0, psf="gaussian:sigma=1.8")
    assert report.status == "failed" and "disagree by 1.0000 mag" in report.error_message
    # ... so must the check made before any match
    with pytest.raises(InvalidInputError, match=r"rep\.fits: its zero points disagree by 1\.0000 mag"):
        _check_batch_calibration([good, bad], "match_many(zeroPoint=27.0)", zero_point=27.0)


# -- zero points that give no usable kernelSum ----------------------------------------------------------------------


@pytest.mark.parametrize("target", [1000.0, -1000.0])
def test_a_target_too_far_from_the_zero_point_is_refused_naming_both(target):
    with pytest.raises(InvalidInputError, match=rf"{target:g}.*25"):
        kernel_sum_for_zero_point({"fitsHeader": {"MAGZERO": 25.0}}, target, "e.fits")


# -- coadding what was brought to one zero point --------------------------------------------------------------------


def test_exposures_with_a_photocalib_brought_to_one_zero_point_coadd(tmp_path):
    """Two LSST-style exposures (photoCalib nJy per count, each with its own uncertainty) of one star, on zero points
    26 and 25.5, matched onto 27: same flux scale, so the coadd must accept them and state 27."""
    from psfmatch.batch import coadd

    def calib(z, err):
        return {"photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * z), "calibrationErr": err}}

    a = _write(tmp_path / "a.fits", calib(26.0, 1.0))
    b = _write(tmp_path / "b.fits", calib(25.5, 1.0), scale=10 ** (-0.4 * 0.5))
    outs = [_match(p, tmp_path / ("m" + os.path.basename(p)), 27.0).output for p in (a, b)]
    co = Exposure.readFits(coadd(outs, str(tmp_path / "co.fits")).output)
    assert co.metadata["photoCalib"]["calibrationMean"] == pytest.approx(3631e9 * 10 ** (-0.4 * 27.0), rel=1e-12)


def test_a_coadd_of_exposures_brought_to_one_zero_point_states_it(tmp_path):
    from psfmatch.batch import coadd
    from psfmatch.calib import zero_point

    a = _write(tmp_path / "a.fits", {"fitsHeader": fits.Header([("MAGZERO", 25.0)])})
    b = _write(tmp_path / "b.fits", {"fitsHeader": fits.Header([("FLUXMAG0", 10 ** (0.4 * 26.0))])}, scale=10 ** 0.4)
    outs = [_match(p, tmp_path / ("m" + os.path.basename(p)), 27.0).output for p in (a, b)]
    co = Exposure.readFits(coadd(outs, str(tmp_path / "co.fits")).output)
    assert zero_point(co.metadata, "the coadd")[0] == pytest.approx(27.0, abs=1e-12)


# -- the coadd's calibration comparison -----------------------------------------------------------------------------


def test_the_coadd_refuses_inputs_whose_photflam_differs(tmp_path):
    from psfmatch.batch import coadd

    a = _write(tmp_path / "a.fits", {"fitsHeader": fits.Header([("PHOTFLAM", 1.0e-19)])})
    b = _write(tmp_path / "b.fits", {"fitsHeader": fits.Header([("PHOTFLAM", 5.0e-19)])})
    with pytest.raises(InvalidInputError, match=r"PHOTFLAM"):
        coadd([a, b], str(tmp_path / "co.fits"))
    assert not (tmp_path / "co.fits").exists()


def test_the_coadd_refuses_inputs_whose_own_metadata_zero_points_differ(tmp_path):
    from psfmatch.batch import coadd

    a = _write(tmp_path / "a.fits", {"MAGZERO": 25.0})
    b = _write(tmp_path / "b.fits", {"MAGZERO": 26.0})
    with pytest.raises(InvalidInputError, match=r"MAGZERO"):
        coadd([a, b], str(tmp_path / "co.fits"))


def test_kernel_sum_for_zero_point_keeps_a_magnitude_for_distant_zero_points():
    """Zero points 10 and 35 (s = 1e10) and back: the scale is the flux ratio to double precision."""
    s, zp, _ = kernel_sum_for_zero_point({"fitsHeader": {"FLUXMAG0": 10 ** (0.4 * 10.0)}}, 35.0)
    assert zp == pytest.approx(10.0, abs=1e-12) and s == pytest.approx(1e10, rel=1e-12)
    m = 5.0
    counts = 10 ** (0.4 * (10.0 - m))
    assert 35.0 - 2.5 * math.log10(s * counts) == pytest.approx(m, abs=1e-12)
