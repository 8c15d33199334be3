"""Contracts of the I/O, image and geometry layer that mutation testing found unpinned.

Each test here was checked to fail against a deliberate mutation of the code it
protects (an x/y swap, an off-by-one, a dropped term) and to pass on the real
code.  The inputs are asymmetric in x and y, so that a swap shows.
"""

import warnings

import numpy as np
import pytest

from psfmatch import Box2I, InvalidInputError


# ---------------------------------------------------------------------------
# geometry: boxes


def _pixels(box):
    """The set of (x, y) pixels of ``box``, enumerated directly (the slow reference)."""
    return {(x, y) for x in range(box.getMinX(), box.getMinX() + box.getWidth())
            for y in range(box.getMinY(), box.getMinY() + box.getHeight())}


def test_grown_with_separate_dx_and_dy_grows_each_axis_by_its_own_amount():
    box = Box2I((10, 20), (7, 5))
    g = box.grown(2, 3)
    assert (g.getMinX(), g.getMinY(), g.getMaxX(), g.getMaxY()) == (8, 17, 18, 27)
    assert g.getDimensions() == (11, 11)
    same = box.grown(2)  # one amount grows both axes
    assert (same.getMinX(), same.getMinY(), same.getMaxX(), same.getMaxY()) == (8, 18, 18, 26)
    shrunk = box.grown(-1, -2)
    assert (shrunk.getMinX(), shrunk.getMinY(), shrunk.getWidth(), shrunk.getHeight()) == (11, 22, 5, 1)


def test_shifted_moves_by_dx_and_dy_in_their_own_directions():
    box = Box2I((10, 20), (7, 5))
    s = box.shifted(3, -4)
    assert (s.getMinX(), s.getMinY(), s.getMaxX(), s.getMaxY()) == (13, 16, 19, 20)
    assert _pixels(s) == {(x + 3, y - 4) for x, y in _pixels(box)}


@pytest.mark.parametrize("other", [
    Box2I((16, 0), (5, 40)),      # shares the single column x = 16
    Box2I((0, 24), (40, 3)),      # shares the single row y = 24
    Box2I((16, 24), (1, 1)),      # the corner pixel
    Box2I((12, 21), (2, 3)),      # inside
    Box2I((17, 0), (3, 3)),       # disjoint
])
def test_intersection_is_the_set_of_common_pixels(other):
    box = Box2I((10, 20), (7, 5))  # x 10..16, y 20..24
    both = box.intersection(other)
    assert _pixels(both) == _pixels(box) & _pixels(other)
    assert both.getArea() == len(_pixels(box) & _pixels(other))


def test_slices_accept_a_box_ending_on_the_array_edge_and_refuse_one_beyond_it():
    image = np.arange(6 * 9).reshape(6, 9)  # height 6, width 9
    xy0 = (100, 200)
    edge = Box2I((105, 202), (4, 4))  # ends on the last column and the last row
    rows, cols = edge.slices(xy0, image.shape)
    assert image[rows, cols].shape == (4, 4) and image[rows, cols][-1, -1] == image[-1, -1]
    for beyond in (Box2I((105, 202), (5, 4)), Box2I((105, 202), (4, 5))):  # one column / one row too many
        with pytest.raises(InvalidInputError, match="is not inside the array"):
            beyond.slices(xy0, image.shape)


# ---------------------------------------------------------------------------
# exposure files: origin cards and mask-plane cards


def _exposure(xy0=(100, 200)):
    from psfmatch import Exposure

    image = np.arange(6 * 9, dtype=np.float32).reshape(6, 9)
    return Exposure(image, variance=np.full((6, 9), 2.0, dtype=np.float32), xy0=xy0)


def test_written_origin_follows_the_iraf_ltv_convention(tmp_path):
    """IRAF (and ds9's physical coordinates) read x0 = -LTV1: the cards must have that sign, and a file
    holding only them must read back with the same origin."""
    from astropy.io import fits

    from psfmatch.io import read_exposure, write_exposure

    path = str(tmp_path / "e.fits")
    write_exposure(_exposure((100, 200)), path)
    with fits.open(path) as hdul:
        for name in ("IMAGE", "MASK", "VARIANCE"):
            assert (hdul[name].header["LTV1"], hdul[name].header["LTV2"]) == (-100, -200)
        hdus = [h.copy() for h in hdul]
    for h in hdus[1:4]:  # leave only the IRAF cards
        for key in ("CRVAL1A", "CRVAL2A", "CRPIX1A", "CRPIX2A", "CTYPE1A", "CTYPE2A"):
            h.header.remove(key, ignore_missing=True)
    iraf = str(tmp_path / "iraf.fits")
    fits.HDUList(hdus).writeto(iraf)
    assert tuple(read_exposure(iraf).getXY0()) == (100, 200)


def test_origin_from_the_alternate_wcs_takes_its_reference_pixel_into_account(tmp_path):
    """Parent x of FITS pixel p (1-based) is CRVAL1A + (p - CRPIX1A): the first pixel's is the origin."""
    from astropy.io import fits

    from psfmatch.io import read_exposure

    header = fits.Header()
    header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
    header["CRPIX1A"], header["CRPIX2A"] = 4.0, 11.0
    header["CRVAL1A"], header["CRVAL2A"] = 103.0, 210.0
    path = str(tmp_path / "plain.fits")
    fits.PrimaryHDU(np.ones((6, 9), dtype=np.float32), header).writeto(path)
    back = read_exposure(path, variance=np.ones((6, 9)))
    assert tuple(back.getXY0()) == (100, 200)


def test_eight_character_mask_plane_keywords_are_standard_cards(tmp_path):
    """``MP_INTRP`` (8 characters) fits a standard FITS keyword, as afw writes it; only longer names
    need HIERARCH."""
    from astropy.io import fits

    from psfmatch.io import write_exposure

    exposure = _exposure()
    exposure.getMask().addMaskPlane("LONGNAME1")
    path = str(tmp_path / "e.fits")
    write_exposure(exposure, path)
    with fits.open(path) as hdul:
        images = {card.keyword: card.image for card in hdul["MASK"].header.cards if "MP_" in card.keyword}
    assert images["MP_INTRP"].startswith("MP_INTRP= ")
    assert images["MP_SAT"].startswith("MP_SAT  = ")
    assert images["MP_LONGNAME1"].startswith("HIERARCH MP_LONGNAME1")


# ---------------------------------------------------------------------------
# PSF images: pixel scale and the PSF-like check


def test_pixel_scale_of_a_cdelt_wcs_includes_the_pc_matrix_determinant():
    """The pixel matrix is CDELT_i * PC_ij: its area is |CDELT1 CDELT2 det(PC)|, and the scale its root."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from psfmatch.psf.image_io import pixel_scale_from_header, pixel_scale_from_wcs

    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 150.0, 2.0
    header["CRPIX1"], header["CRPIX2"] = 16.0, 16.0
    header["CDELT1"], header["CDELT2"] = -0.1 / 3600, 0.1 / 3600
    header["PC1_1"], header["PC1_2"], header["PC2_1"], header["PC2_2"] = 2.0, 0.0, 0.0, 3.0
    expected = 0.1 * np.sqrt(6.0)
    assert pixel_scale_from_header(header) == pytest.approx(expected, rel=1e-9)
    # astropy's own reading of the same WCS agrees
    assert pixel_scale_from_wcs(WCS(header)) == pytest.approx(expected, rel=1e-9)


def test_a_wide_thin_science_frame_is_not_taken_for_a_psf_image(tmp_path):
    """The PSF-like check applies when the LARGER side reaches PSF_LIKE_MIN_SIZE: a 600 x 40 strip of
    evenly spread light is refused when only identified as an image, and read when format="image"."""
    from astropy.io import fits

    from psfmatch.errors import UnsupportedFormatError
    from psfmatch.psf import read_psf

    rng = np.random.default_rng(3)
    strip = 100.0 + rng.normal(0.0, 1.0, size=(40, 600))
    path = str(tmp_path / "strip.fits")
    fits.PrimaryHDU(strip).writeto(path)
    with pytest.raises(UnsupportedFormatError, match="does not look like one"):
        read_psf(path)
    with warnings.catch_warnings():  # forced, it is read (a warning may say its flat level looks like a bias)
        warnings.simplefilter("ignore")
        assert read_psf(path, format="image").computeKernelImage().sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# PSF models stored in exposure files


class _WideVaryingPsf:
    """A user model (unknown to psfmatch) with a non-square 21 x 15 stamp whose width grows across the field."""

    def computeKernelImage(self, position):
        from psfmatch.psf import GaussianPsf

        x, y = position
        return GaussianPsf(21, 15, 1.8 + 0.3 * x / 100.0 + 0.3 * y / 20.0).computeKernelImage(position)

    def getAveragePosition(self):
        return (50.0, 10.0)

    def isSpatiallyVarying(self):
        return True


def test_a_varying_model_on_a_wide_box_is_approximated_over_that_box(tmp_path):
    """The polynomial stored for an unknown varying model is fitted on a grid spanning the exposure's box
    (100 x 20 here): it matches the model inside the box, and keeps its non-square 21 x 15 stamp."""
    from psfmatch import Exposure
    from psfmatch.psf import PsfAdapter, PsfexPsf

    psf = PsfAdapter(_WideVaryingPsf())
    exposure = Exposure(np.zeros((20, 100), np.float32), psf=psf)
    path = tmp_path / "e.fits"
    exposure.writeFits(path)
    back = Exposure.readFits(path).getPsf()
    assert isinstance(back, PsfexPsf)
    for pos in [(0.0, 0.0), (99.0, 19.0), (50.0, 10.0), (10.0, 17.0), (80.0, 3.0)]:
        a, b = back.computeKernelImage(pos), psf.computeKernelImage(pos)
        assert a.shape == b.shape == (15, 21)
        assert np.abs(a - b).max() < 0.008 * b.max()  # 0.0055 at worst; 0.01-0.03 fitted off the box


def test_a_resized_psfex_model_keeps_its_non_square_stamp_through_a_file(tmp_path, shared_data):
    from psfmatch import Exposure
    from psfmatch.psf import PsfexPsf, read_psf

    psf = read_psf(shared_data("psfex", "GalSim-developers__GalSim", "DECam_00154912_12_psfcat.psf")).resized(31, 27)
    exposure = Exposure(np.zeros((40, 60), np.float32), psf=psf)
    exposure.writeFits(tmp_path / "e.fits")
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    assert isinstance(back, PsfexPsf) and back.getDimensions() == (31, 27)
    for pos in [(0.0, 0.0), (1000.0, 2000.0)]:
        np.testing.assert_allclose(back.computeKernelImage(pos), psf.computeKernelImage(pos), rtol=1e-9, atol=1e-15)


def test_a_padded_model_is_read_back_at_its_padded_size(tmp_path):
    """A model padded to a larger stamp (the task's fallback for a reference without its own resize)
    is stored with its PMRESIZW/PMRESIZH size and read back at that size, not the model's native one."""
    from astropy.io import fits

    from psfmatch import Exposure
    from psfmatch.psf import GaussianPsf
    from psfmatch.psf.base import _ResizedPsf

    psf = _ResizedPsf(GaussianPsf(15, 15, 2.0), 21, 25)
    exposure = Exposure(np.zeros((40, 60), np.float32), psf=psf)
    exposure.writeFits(tmp_path / "e.fits")
    assert (fits.getval(tmp_path / "e.fits", "PMRESIZW", "PSF"), fits.getval(tmp_path / "e.fits", "PMRESIZH", "PSF")) \
        == (21, 25)
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    image, padded = back.computeKernelImage((10.0, 10.0)), psf.computeKernelImage((10.0, 10.0))
    assert image.shape == padded.shape == (25, 21)
    # the stored Gaussian is evaluated at the larger size: its wings replace the zero padding (1e-5 of the peak)
    assert np.abs(image - padded).max() < 1e-3 * padded.max()


@pytest.mark.parametrize("card", ["PMRESIZW", "PMSTAMPW"])
def test_a_damaged_stamp_size_card_is_refused_before_anything_is_allocated(tmp_path, card, shared_data):
    """A stored stamp size beyond MAX_STAMP_SIZE is a damaged card: reading refuses it, naming it, instead
    of building a model whose first kernel image would take gigabytes."""
    from astropy.io import fits

    from psfmatch import Exposure
    from psfmatch.errors import CorruptFileError
    from psfmatch.io import read_exposure
    from psfmatch.psf import ImagePsf, read_psf
    from psfmatch.psf.base import _ResizedPsf
    from psfmatch.psf.psfex import MAX_STAMP_SIZE

    if card == "PMRESIZW":
        psf = _ResizedPsf(ImagePsf(np.outer([1.0, 2.0, 4.0, 2.0, 1.0], [1.0, 3.0, 1.0])), 9, 9)
    else:
        psf = read_psf(shared_data("psfex", "GalSim-developers__GalSim", "DECam_00154912_12_psfcat.psf"))
    path = str(tmp_path / "e.fits")
    Exposure(np.zeros((20, 30), np.float32), psf=psf).writeFits(path)
    with fits.open(path, mode="update") as hdul:
        assert card in hdul["PSF"].header
        hdul["PSF"].header[card] = MAX_STAMP_SIZE + 2
    with pytest.raises(CorruptFileError, match=f"{card} = {MAX_STAMP_SIZE + 2}"):
        read_exposure(path)


# ---------------------------------------------------------------------------
# kernel files


@pytest.mark.parametrize("axis", ["X", "Y"])
def test_a_kernel_file_whose_spatial_box_has_no_extent_is_refused(tmp_path, axis):
    """SPMAX = SPMIN leaves the spatial polynomial's scaling a division by zero (NaN kernels): damaged."""
    from astropy.io import fits

    from psfmatch import LinearCombinationKernel
    from psfmatch.errors import CorruptFileError
    from psfmatch.geom import Box2D
    from psfmatch.io import read_kernel, write_kernel
    from psfmatch.kernel.basis import KernelBasis
    from psfmatch.kernel.spatial import SpatialFunction

    images = np.zeros((2, 5, 5))
    images[0, 2, 2] = 1.0
    images[1, 1, 2], images[1, 3, 2] = 1.0, -1.0
    bbox = Box2I((10, 20), (30, 40))
    sf = SpatialFunction("polynomial", 1, Box2D(bbox))
    kernel = LinearCombinationKernel(KernelBasis(images, "custom", {}), np.array([[1.0, 0.0, 0.0], [0.1, 0.2, 0.3]]),
                                     sf, bbox=bbox)
    path = str(tmp_path / "k.fits")
    write_kernel(kernel, path)
    assert np.isfinite(read_kernel(path).computeImage((15.0, 30.0))).all()
    with fits.open(path, mode="update") as hdul:
        hdul[0].header[f"SPMAX{axis}"] = hdul[0].header[f"SPMIN{axis}"]
    with pytest.raises(CorruptFileError, match="not a finite, non-empty box"):
        read_kernel(path)


# ---------------------------------------------------------------------------
# PSF images: when they are resampled, and which reader reads a file


def _gaussian_image(nx=25, ny=21, sigma=2.0):
    y, x = np.mgrid[:ny, :nx]
    return np.exp(-((x - (nx - 1) / 2) ** 2 + (y - (ny - 1) / 2) ** 2) / (2 * sigma ** 2))


def test_a_psf_image_is_resampled_unless_the_scales_agree_within_rtol(tmp_path):
    """0.26 -> 0.27 arcsec/px (4 % apart) is resampled: the model takes the target scale and a narrower
    image; scales 1e-9 apart (below rtol=1e-6) are taken as equal and the image is kept as it is."""
    from astropy.io import fits

    from psfmatch.psf import read_image_psf

    def width(img):  # the unweighted rms width (pixels) about the centroid
        y, x = np.mgrid[:img.shape[0], :img.shape[1]]
        total = img.sum()
        cx, cy = (x * img).sum() / total, (y * img).sum() / total
        return np.sqrt((((x - cx) ** 2 + (y - cy) ** 2) * img).sum() / total / 2)

    path = str(tmp_path / "psf.fits")
    header = fits.Header()
    header["PIXSCALE"] = 0.26
    fits.PrimaryHDU(_gaussian_image(), header).writeto(path)
    kept = read_image_psf(path, target_pixel_scale=0.26 * (1 + 1e-9))
    assert kept.pixel_scale == 0.26
    np.testing.assert_allclose(kept.computeKernelImage(), _gaussian_image() / _gaussian_image().sum(), rtol=1e-12)
    resampled = read_image_psf(path, target_pixel_scale=0.27)
    assert resampled.pixel_scale == 0.27
    # the same PSF in 4 % larger pixels is about 4 % fewer pixels wide (the rebinning adds a little)
    assert width(resampled.computeKernelImage()) < 0.985 * width(kept.computeKernelImage())


def test_read_psf_uses_the_first_format_in_identification_order(tmp_path, monkeypatch):
    """A format registered later whose identifier also accepts the file does not take it from the
    built-in reader that identifies it first (``psf_formats()`` is the identification order)."""
    from astropy.io import fits

    from psfmatch.psf import ImagePsf, read_psf, readers
    from psfmatch.psf.readers import psf_formats

    def greedy(path, **kwargs):
        raise AssertionError("the later format's reader was used")

    monkeypatch.setitem(readers._REGISTRY, "greedy", (greedy, lambda path: True))
    path = str(tmp_path / "psf.fits")
    fits.PrimaryHDU(_gaussian_image()).writeto(path)
    assert psf_formats()[-1] == "greedy"
    assert readers.identify_psf_format(path)[-2:] == ["image", "greedy"]
    assert isinstance(read_psf(path), ImagePsf)


def test_a_file_with_image_and_mask_extensions_but_no_variance_is_read_as_lsst_style(tmp_path):
    """IMAGE + MASK extensions (no VARIANCE) are an LSST-style file: its mask bits and plane names are read
    (a plain-image reading would drop them), and the variance is estimated."""
    from astropy.io import fits

    from psfmatch.io import read_exposure

    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 2.0, size=(12, 17)).astype(np.float32)
    mask = np.zeros((12, 17), np.int32)
    mask[3, 11] = 1 << 9
    mask[7, 2] = 1
    mask_hdu = fits.ImageHDU(mask, name="MASK")
    mask_hdu.header["MP_BAD"] = 0
    mask_hdu.header["MP_STRK"] = 9
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="IMAGE"), mask_hdu]).writeto(tmp_path / "e.fits")
    back = read_exposure(str(tmp_path / "e.fits"))
    np.testing.assert_array_equal(back.mask, mask)
    assert back.getMask().getMaskPlaneDict()["STRK"] == 9
    assert np.argwhere(back.getMask().planes_set("STRK")).tolist() == [[3, 11]]
