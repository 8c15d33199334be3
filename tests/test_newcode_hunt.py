"""Adversarial review of the reader options of a file PSF SPEC (``image:FILE,recenter=true``); the review's
calibration tests are in test_calib.py.

It found three defects here (``recenter=no`` taken as true; options after a path, or a file name, that looks
like an option); each test failed on the code before its fix.
"""

import numpy as np
import pytest
from astropy.io import fits

from psfmatch.cli import parse_psf_spec
from psfmatch.errors import InvalidInputError


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


@pytest.mark.parametrize("kind, option", [("image", "hdu"), ("psfex", "ext")])
def test_a_boolean_hdu_is_refused_not_read_as_index_1(tmp_path, kind, option, shared_data):
    """``hdu=true`` in a SPEC became True, which astropy takes for HDU 1: the PSFEx reader silently read HDU 1."""
    path = (_off_centre_psf(tmp_path / "psf.fits") if kind == "image" else
            shared_data("psfex", "GalSim-developers__GalSim", "DECam_00154912_12_psfcat.psf"))
    with pytest.raises(InvalidInputError, match=rf"{option} must be an HDU's index \(an integer\) or name; got True"):
        parse_psf_spec(f"{kind}:{path},{option}=true")
    assert parse_psf_spec(f"{kind}:{path},{option}={0 if kind == 'image' else 1}") is not None
