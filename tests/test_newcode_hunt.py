"""Adversarial review of two new features: the calibration rescaled with ``kernelSum`` (psfmatch.calib) and the
reader options of a file PSF SPEC (``image:FILE,recenter=true``).

The review found eight defects (a repeated zero-point card rescaled once; a header that is no mapping
crashed; an NDData's dict meta not rescaled; coadds of inputs on different zero points; a shared zero point
lost by the coadd; ``recenter=no`` taken as true; options after a path or file name that looks like an
option); each test here failed on the code before its fix.  The others pin contracts the features' own tests
leave open.
"""

import math
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, PsfMatchWarning
from psfmatch.calib import rescale_calibration
from psfmatch.cli import parse_psf_spec
from psfmatch.errors import InvalidInputError, PsfMatchError
from psfmatch.psf import GaussianPsf


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


def _off_centre_psf(path, dx=1.0):
    """A Gaussian PSF image whose centre is ``dx`` px right of the array's centre pixel."""
    y, x = np.mgrid[:25, :25]
    fits.writeto(path, np.exp(-((x - 12.0 - dx) ** 2 + (y - 12.0) ** 2) / (2 * 2.0 ** 2)), overwrite=True)
    return path


def _x_centroid(psf):
    k = psf.computeKernelImage((0, 0))
    n = k.shape[1]
    return float((k * np.arange(n)[None, :]).sum() / k.sum()) - n // 2


# ---------------------------------------------------------------------------
# calibration: contracts the feature's tests leave open


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


# ---------------------------------------------------------------------------
# calibration: what it gets wrong


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
                                                r"26\.50\d*: their pixels are on different flux scales.*kernelSum=10\*\*"
                                                r"\(0\.4 \* \(ZP - MAGZERO\)\).*require_same_calibration=False"):
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
    assert "bare.fits has no MAGZERO card" in caplog.text


def test_coadd_keeps_the_zero_point_its_inputs_share(tmp_path):
    from psfmatch.batch import coadd

    paths = [_write(tmp_path / "a.fits", 27.0), _write(tmp_path / "b.fits", 27.0)]
    coadd(paths, tmp_path / "coadd.fits", require_same_psf=False)
    header = Exposure.readFits(str(tmp_path / "coadd.fits")).metadata.get("fitsHeader")
    assert header is not None and header.get("MAGZERO") == pytest.approx(27.0)


# ---------------------------------------------------------------------------
# PSF SPEC reader options: what they get wrong


@pytest.mark.parametrize("word", ["no", "off"])
def test_recenter_no_does_not_recenter(tmp_path, word):
    path = _off_centre_psf(tmp_path / "off.fits")
    assert _x_centroid(parse_psf_spec(f"image:{path}")) == pytest.approx(1.0, abs=1e-3)  # the premise
    psf = parse_psf_spec(f"image:{path},recenter={word}")
    assert _x_centroid(psf) == pytest.approx(1.0, abs=1e-3)
    assert _x_centroid(parse_psf_spec(f"image:{path},recenter=yes")) == pytest.approx(0.0, abs=1e-3)


def test_options_after_a_path_whose_directory_looks_like_an_option(tmp_path):
    folder = tmp_path / "run,v=2"
    folder.mkdir()
    path = _off_centre_psf(folder / "psf.fits")
    assert _x_centroid(parse_psf_spec(f"image:{path}")) == pytest.approx(1.0, abs=1e-3)  # no options: found
    psf = parse_psf_spec(f"image:{path},recenter=true")
    assert _x_centroid(psf) == pytest.approx(0.0, abs=1e-3)


def test_options_after_a_file_name_that_looks_like_an_option(tmp_path):
    path = _off_centre_psf(tmp_path / "psf,v=2.fits")
    _off_centre_psf(tmp_path / "psf", dx=-2.0)  # a file named as the wrong split: must not be read
    psf = parse_psf_spec(f"image:{path},recenter=false")
    assert _x_centroid(psf) == pytest.approx(1.0, abs=1e-3)


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
    monkeypatch.setattr(psfmatch.batch, "_check_coadd_grid", lambda *a, **k: None, raising=False)
    path = _write(tmp_path / "a.fits", 25.0)
    parser = argparse.ArgumentParser(prog="psfmatch")
    add_batch_parser(parser.add_subparsers(dest="command"))
    for extra in ([], ["--coadd-mixed-calibration"]):
        args = parser.parse_args(["batch", path, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"),
                                  "--coadd", str(tmp_path / "c.fits"), "--scheduler", "tcp://127.0.0.1:1", *extra])
        assert run_batch_command(args) == 1
    assert seen == [True, False]


def test_a_recenter_that_is_not_a_boolean_is_refused(tmp_path):
    """A word such as "no" reaching ImagePsf or read_image_psf counted as true."""
    from psfmatch.psf import ImagePsf, read_image_psf

    path = _off_centre_psf(tmp_path / "off.fits")
    stamp = fits.getdata(path)
    with pytest.raises(InvalidInputError, match=r"ImagePsf: recenter must be True or False; got 'no'"):
        ImagePsf(stamp, recenter="no")
    with pytest.raises(InvalidInputError, match=r"recenter must be True or False \(on the command line true or "
                                                r"false\); got 'no'"):
        read_image_psf(path, recenter="no")
    with pytest.raises(InvalidInputError, match=r"require_psf_like must be True or False .*got 1"):
        read_image_psf(path, require_psf_like=1)
    assert _x_centroid(read_image_psf(path, recenter=np.bool_(False))) == pytest.approx(1.0, abs=1e-3)
