"""The calibration a matched exposure inherits follows its flux when kernelSum scales it (psfmatch.calib).

A source's calibrated flux, counts times the calibration, must be the same on
the input and on the matched output whatever ``kernelSum`` scales the pixel
values by; so must its magnitude from a header's zero point.
"""

import copy
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, PsfMatchWarning
from psfmatch.calib import rescale_calibration
from psfmatch.cli import main
from psfmatch.errors import InvalidInputError
from psfmatch.psf import GaussianPsf


def _header():
    h = fits.Header()
    h["MAGZERO"] = (25.0, "mag of 1 ADU/s")
    h["FLUXMAG0"] = 1.0e10
    h["PHOTFLAM"] = 1.5e-19
    h["PHOTFNU"] = 2.0e-7
    h["ZP"] = 30.0  # ambiguous: left alone
    h["GAIN"] = 4.0
    h["PHOTZPT"] = -21.1  # HST's STMAG constant, not a zero point of the counts
    return h


def test_rescale_follows_the_counts():
    s = 2.5
    md = {"photoCalib": {"calibrationMean": 0.8, "calibrationErr": 0.01, "note": "x"}, "fitsHeader": _header()}
    changed, left = rescale_calibration(md, s)
    assert left == []
    assert md["photoCalib"] == {"calibrationMean": pytest.approx(0.8 / s), "calibrationErr": pytest.approx(0.01 / s),
                                "note": "x"}
    h = md["fitsHeader"]
    # a source of c counts on the input has s*c on the output: its magnitude and flux must not move
    c = 1234.0
    assert h["MAGZERO"] - 2.5 * math.log10(s * c) == pytest.approx(25.0 - 2.5 * math.log10(c), abs=1e-12)
    assert h.comments["MAGZERO"] == "mag of 1 ADU/s"
    assert s * c / h["FLUXMAG0"] == pytest.approx(c / 1.0e10, rel=1e-12)
    assert s * c * h["PHOTFLAM"] == pytest.approx(c * 1.5e-19, rel=1e-12)
    assert s * c * h["PHOTFNU"] == pytest.approx(c * 2.0e-7, rel=1e-12)
    assert (h["ZP"], h["GAIN"], h["PHOTZPT"]) == (30.0, 4.0, -21.1)
    assert len(changed) == 6 and any(line.startswith("MAGZERO 25 -> 25.99") for line in changed)
    assert "kernelSum" in str(h["HISTORY"])


def test_rescale_by_one_changes_nothing():
    md = {"photoCalib": {"calibrationMean": 0.8}, "fitsHeader": _header()}
    before = copy.deepcopy(md)
    assert rescale_calibration(md, 1.0) == ([], [])
    assert md["photoCalib"] == before["photoCalib"] and md["fitsHeader"] == before["fitsHeader"]
    assert "HISTORY" not in md["fitsHeader"]


def test_rescale_a_mapping_of_cards_blind_to_case():
    md = {"fitsHeader": {"magzp": (27.0, "zero point"), "FluxMag0": 100.0}}
    changed, left = rescale_calibration(md, 10.0)
    assert md["fitsHeader"] == {"magzp": (pytest.approx(29.5), "zero point"), "FluxMag0": pytest.approx(1000.0)}
    assert len(changed) == 2 and left == []


def test_rescale_reports_what_it_cannot_interpret():
    class PhotoCalib:  # e.g. an LSST object
        pass

    calib = PhotoCalib()
    md = {"photoCalib": calib, "fitsHeader": fits.Header([("MAGZERO", "unknown"), ("FLUXMAG0", 5.0)])}
    changed, left = rescale_calibration(md, 2.0)
    assert md["photoCalib"] is calib and md["fitsHeader"]["MAGZERO"] == "unknown"
    assert md["fitsHeader"]["FLUXMAG0"] == 10.0 and changed == ["FLUXMAG0 5 -> 10"]
    assert len(left) == 2 and "PhotoCalib" in left[0] and "MAGZERO" in left[1]
    md = {"photoCalib": {"calibrationMean": float("nan")}}
    changed, left = rescale_calibration(md, 2.0)
    assert changed == [] and "calibrationMean" in left[0] and math.isnan(md["photoCalib"]["calibrationMean"])


def test_a_rescaled_value_beyond_the_float_range_is_reported_not_written():
    """FLUXMAG0 = 1e300 times 1e10 is inf, which no FITS card can hold (the matched file could not be written), and
    PHOTFLAM = 1e-315 / 1e10 rounds to 0 (a calibration of nothing): both are left as they were and reported, as
    is a photoCalib that would round to 0; the cards that can be rescaled are."""
    h = fits.Header([("FLUXMAG0", 1e300), ("PHOTFLAM", 1e-315), ("MAGZERO", 25.0)])
    md = {"fitsHeader": h, "photoCalib": {"calibrationMean": 1e-320, "calibrationErr": 1.0}}
    changed, left = rescale_calibration(md, 1e10)
    assert h["FLUXMAG0"] == 1e300 and h["PHOTFLAM"] == 1e-315 and h["MAGZERO"] == 50.0
    assert md["photoCalib"] == {"calibrationMean": 1e-320, "calibrationErr": 1e-10}
    assert left == ["metadata['photoCalib']['calibrationMean'] (1e-320: rescaled, it would be 0.0, beyond the range "
                    "of a float)",
                    "the card FLUXMAG0 (1e+300: rescaled, it would be inf, beyond the range of a float)",
                    "the card PHOTFLAM (1e-315: rescaled, it would be 0.0, beyond the range of a float)"]
    assert changed == ["photoCalib calibrationErr 1 -> 1e-10", "MAGZERO 25 -> 50"]
    # in a run: the matched exposure keeps what it can and warns of the rest, and it can be written
    exposure = _star_exposure({"fitsHeader": fits.Header([("FLUXMAG0", 1e300), ("MAGZERO", 25.0)])})
    with pytest.warns(PsfMatchWarning, match=r"the card FLUXMAG0 \(1e\+300: rescaled, it would be inf, beyond the "
                                             r"range of a float\) could not be rescaled"):
        out = _task().run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=1e10).psfMatchedExposure
    assert out.metadata["fitsHeader"]["FLUXMAG0"] == 1e300 and out.metadata["fitsHeader"]["MAGZERO"] == 50.0


def _star_exposure(metadata, n=96):
    y, x = np.mgrid[:n, :n]
    img = 1000.0 * np.exp(-((x - 47.3) ** 2 + (y - 48.6) ** 2) / (2 * 1.8 ** 2)) / (2 * np.pi * 1.8 ** 2)
    return Exposure(img.astype(np.float32), variance=np.ones((n, n), np.float32), psf=GaussianPsf(21, 21, 1.8),
                    metadata=metadata)


def _task():
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 48
    return ModelPsfMatchTask(config=config)


def test_run_keeps_calibrated_fluxes_and_magnitudes():
    md = {"photoCalib": {"calibrationMean": 0.7}, "fitsHeader": _header()}
    exposure = _star_exposure(md)
    s = 3.0
    result = _task().run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=s)
    out = result.psfMatchedExposure
    counts_in = float(exposure.image.sum())
    counts_out = float(np.nansum(out.image))
    assert counts_out == pytest.approx(s * counts_in, rel=1e-3)  # the pixel values are s times the input's
    assert counts_out * out.getPhotoCalib()["calibrationMean"] == pytest.approx(counts_in * 0.7, rel=1e-3)
    h = out.metadata["fitsHeader"]
    assert h["MAGZERO"] - 2.5 * math.log10(counts_out) == pytest.approx(25.0 - 2.5 * math.log10(counts_in),
                                                                         abs=1e-3)
    assert result.metadata["calibrationRescaled"][0].startswith("photoCalib calibrationMean 0.7 -> 0.2333")
    # the input's metadata is untouched
    assert exposure.metadata["photoCalib"] == {"calibrationMean": 0.7} and exposure.metadata["fitsHeader"]["MAGZERO"] == 25
    # and kernelSum = 1 leaves everything as it was
    one = _task().run(exposure, GaussianPsf(31, 31, 2.6))
    assert one.psfMatchedExposure.metadata["photoCalib"] == {"calibrationMean": 0.7}
    assert one.psfMatchedExposure.metadata["fitsHeader"] == exposure.metadata["fitsHeader"]
    assert "calibrationRescaled" not in one.metadata


def test_run_warns_about_a_calibration_it_cannot_rescale():
    exposure = _star_exposure({"photoCalib": 0.7})
    with pytest.warns(PsfMatchWarning, match=r"kernelSum=2 makes the matched pixel values 2 times the input's, but "
                                             r"metadata\['photoCalib'\] \(float.*could not be rescaled.*"
                                             r"add 2.5\*log10\(2\) = 0.7526"):
        result = _task().run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=2.0)
    assert result.psfMatchedExposure.getPhotoCalib() == 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error", PsfMatchWarning)  # at kernelSum = 1 there is nothing to say
        _task().run(exposure, GaussianPsf(31, 31, 2.6))


def test_cli_kernel_sum_rescales_the_written_zero_point(tmp_path, capsys):
    path = tmp_path / "in.fits"
    header = fits.Header([("MAGZERO", 25.0, "zero point"), ("EXPTIME", 30.0)])
    _star_exposure({"fitsHeader": header}).writeFits(str(path))
    out = tmp_path / "out.fits"
    rc = main(["run", str(path), "-r", "gaussian:sigma=2.6", "-o", str(out), "--kernel-sum", "10",
               "-c", "autoKernel=False", "-c", "kernel.active.spatialKernelOrder=0",
               "-c", "kernel.active.sizeCellX=48", "-c", "kernel.active.sizeCellY=48"])
    assert rc == 0, capsys.readouterr().err
    matched = Exposure.readFits(str(out))
    assert matched.metadata["fitsHeader"]["MAGZERO"] == pytest.approx(27.5, abs=1e-9)
    assert matched.metadata["fitsHeader"]["EXPTIME"] == 30.0
    with fits.open(out) as hdul:
        assert any(hdu.header.get("MAGZERO") == pytest.approx(27.5) for hdu in hdul)


# ---------------------------------------------------------------------------
# found by an adversarial review of the feature: contracts, and the defects it found (each test failed before
# its fix)


def test_integer_and_numpy_calibration_values_are_rescaled(tmp_path):
    """A FITS card written as an integer (``MAGZERO = 25``) reads back as an int, and metadata built in
    code holds numpy scalars: both are numbers the calibration must follow (not 'not a finite number')."""
    path = tmp_path / "int.fits"
    fits.PrimaryHDU(header=fits.Header([("MAGZERO", 25), ("FLUXMAG0", 10 ** 10)])).writeto(path)
    header = fits.getheader(path)
    assert isinstance(header["MAGZERO"], int)  # (the premise: astropy gives an int)
    md = {"fitsHeader": header, "photoCalib": {"calibrationMean": np.float32(0.5), "calibrationErr": 1}}
    changed, left = rescale_calibration(md, 10.0)
    assert left == [] and len(changed) == 4
    assert md["fitsHeader"]["MAGZERO"] == pytest.approx(27.5, abs=1e-12)
    assert md["fitsHeader"]["FLUXMAG0"] == pytest.approx(1e11, rel=1e-12)
    assert md["photoCalib"] == {"calibrationMean": pytest.approx(0.05), "calibrationErr": pytest.approx(0.1)}




def test_a_repeated_zero_point_card_is_rescaled_everywhere_or_reported():
    header = fits.Header()
    header.append(("MAGZERO", 25.0))
    header.append(("MAGZERO", 25.0))
    md = {"fitsHeader": header}
    changed, left = rescale_calibration(md, 10.0)
    values = [card.value for card in md["fitsHeader"].cards if card.keyword == "MAGZERO"]
    assert values == [pytest.approx(27.5)] * 2 and left == [] and len(changed) == 2


@pytest.mark.parametrize("header", ["MAGZERO = 25.0", [("MAGZERO", 25.0)]], ids=["text", "list"])
def test_a_fits_header_that_is_no_mapping_is_reported_not_an_attribute_error(header):
    exposure = _star_exposure({"fitsHeader": header})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _task().run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=2.0)
    assert result.psfMatchedExposure.metadata["fitsHeader"] == header
    assert any(issubclass(w.category, PsfMatchWarning) and "fitsHeader" in str(w.message) for w in caught)


def test_a_ccddata_dict_meta_zero_point_follows_kernel_sum():
    from astropy.nddata import CCDData, VarianceUncertainty

    from psfmatch.io.nddata import exposure_from_nddata, exposure_to_nddata

    star = _star_exposure({})
    ccd = CCDData(star.image.copy(), unit="adu", meta={"MAGZP": 25.0, "EXPTIME": 30.0},
                  uncertainty=VarianceUncertainty(np.ones(star.image.shape)))
    exposure = exposure_from_nddata(ccd, psf=GaussianPsf(21, 21, 1.8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _task().run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=10.0)
    warned = any(issubclass(w.category, PsfMatchWarning) and "MAGZP" in str(w.message) for w in caught)
    back = exposure_to_nddata(result.psfMatchedExposure, ccd=True)
    assert not warned and back.meta["MAGZP"] == pytest.approx(27.5, abs=1e-9) and back.meta["EXPTIME"] == 30.0
    assert ccd.meta["MAGZP"] == 25.0  # the caller's NDData is untouched


def _write(path, magzero):
    exp = _star_exposure({"fitsHeader": fits.Header([("MAGZERO", magzero, "zero point")])}, n=32)
    exp.writeFits(str(path))
    return str(path)


def test_coadd_of_inputs_with_different_zero_points_is_refused(tmp_path, caplog):
    """Outputs of kernelSum 4 and 1 (MAGZERO 26.505 and 25) were averaged into one image of no consistent
    calibration, without an error or a warning."""
    from psfmatch.batch import coadd

    paths = [_write(tmp_path / "a.fits", 25.0 + 2.5 * math.log10(4.0)), _write(tmp_path / "b.fits", 25.0)]
    with pytest.raises(InvalidInputError, match=r"coadd input .*b\.fits has MAGZERO = 25\.0 and .*a\.fits has "
                                                r"26\.50\d*: their pixels are on different flux scales.*zeroPoint=ZP.*"
                                                r"--zero-point ZP.*require_same_calibration=False"):
        coadd(paths, tmp_path / "coadd.fits", require_same_psf=False)
    assert not (tmp_path / "coadd.fits").exists()
    # allowed: coadded, with no zero point in its header, and said
    with caplog.at_level("WARNING", logger="psfmatch.batch"):
        coadd(paths, tmp_path / "mixed.fits", require_same_psf=False, require_same_calibration=False)
    assert "MAGZERO" not in Exposure.readFits(str(tmp_path / "mixed.fits")).metadata.get("fitsHeader", {})
    assert "different flux scales" in caplog.text
    # an input without the card: no zero point for the coadd either, and said
    bare = _star_exposure({}, n=32)
    bare.writeFits(str(tmp_path / "bare.fits"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="psfmatch.batch"):
        coadd([paths[1], str(tmp_path / "bare.fits")], tmp_path / "partial.fits", require_same_psf=False)
    assert "MAGZERO" not in Exposure.readFits(str(tmp_path / "partial.fits")).metadata.get("fitsHeader", {})
    assert "bare.fits has no MAGZERO and" in caplog.text


def test_coadd_keeps_the_zero_point_its_inputs_share(tmp_path):
    from psfmatch.batch import coadd

    paths = [_write(tmp_path / "a.fits", 27.0), _write(tmp_path / "b.fits", 27.0)]
    coadd(paths, tmp_path / "coadd.fits", require_same_psf=False)
    header = Exposure.readFits(str(tmp_path / "coadd.fits")).metadata.get("fitsHeader")
    assert header is not None and header.get("MAGZERO") == pytest.approx(27.0)


def test_cli_batch_coadd_mixed_calibration_reaches_the_coadd(tmp_path, monkeypatch):
    """``--coadd-mixed-calibration`` is passed to coadd as require_same_calibration=False (and its absence as
    True)."""
    import argparse

    import psfmatch.batch
    from psfmatch.batch_cli import add_batch_parser, run_batch_command

    seen = []

    def fake_coadd(paths, out, **kwargs):
        seen.append(kwargs["require_same_calibration"])
        raise InvalidInputError("stop here")

    class Reports(list):
        ok, failed = True, []

        def output_paths(self):
            return []

        def summary(self):
            return ""

        def write_json(self, path):
            pass

    monkeypatch.setattr(psfmatch.batch, "coadd", fake_coadd)
    monkeypatch.setattr(psfmatch.batch, "match_many", lambda *a, **k: Reports())
    monkeypatch.setattr(psfmatch.batch, "_check_coadd_grid", lambda *a, **k: [], raising=False)
    path = _write(tmp_path / "a.fits", 25.0)
    parser = argparse.ArgumentParser(prog="psfmatch")
    add_batch_parser(parser.add_subparsers(dest="command"))
    for extra in ([], ["--coadd-mixed-calibration"]):
        args = parser.parse_args(["batch", path, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"),
                                  "--coadd", str(tmp_path / "c.fits"), "--scheduler", "tcp://127.0.0.1:1", *extra])
        assert run_batch_command(args) == 1
    assert seen == [True, False]


def test_coadd_compares_and_keeps_the_inputs_photo_calib(tmp_path):
    """A stored photoCalib is a calibration too: inputs of calibrationMean 0.7 and 0.35 (one matched with
    kernelSum 2) are refused, and the one inputs share is the coadd's."""
    from psfmatch.batch import coadd

    def write(name, mean):
        path = str(tmp_path / name)
        _star_exposure({"photoCalib": {"calibrationMean": mean, "calibrationErr": 0.01}}, n=32).writeFits(path)
        return path

    same = [write("a.fits", 0.7), write("b.fits", 0.7)]
    coadd(same, tmp_path / "same.fits", require_same_psf=False)
    assert Exposure.readFits(str(tmp_path / "same.fits")).getPhotoCalib() == {"calibrationMean": 0.7,
                                                                              "calibrationErr": 0.01}
    with pytest.raises(InvalidInputError, match=r"coadd input .*c\.fits has photoCalib calibrationMean = 0\.35 and "
                                                r".*a\.fits has 0\.7: their pixels are on different flux scales"):
        coadd([same[0], write("c.fits", 0.35)], tmp_path / "mixed.fits", require_same_psf=False)
    assert not (tmp_path / "mixed.fits").exists()
    # each exposure's own uncertainty is no flux scale: different errors on one mean are coadded, without an error
    other = str(tmp_path / "d.fits")
    _star_exposure({"photoCalib": {"calibrationMean": 0.7, "calibrationErr": 0.03}}, n=32).writeFits(other)
    coadd([same[0], other], tmp_path / "errs.fits", require_same_psf=False)
    assert Exposure.readFits(str(tmp_path / "errs.fits")).getPhotoCalib() == {"calibrationMean": 0.7}
