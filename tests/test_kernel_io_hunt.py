"""Saved kernels and saved PSFs, adversarially: write, read back, evaluate and apply again.

What these pin beyond tests/test_io_kernel.py and tests/test_io_exposure.py: every kernel kind the task
fits (Alard-Lupton, delta-function, PCA; Chebyshev and raw-pixel polynomials; kernelSum != 1; a box with
a non-zero, far-away origin) reads back bit for bit at the box's corners, centre and outside it; spatial
orders 0-5 over boxes whose edges are not half-integers; afw's getters on a read-back kernel; a saved
kernel applied to an exposure gives run()'s psfMatchedExposure bit for bit, and is evaluated in parent
coordinates on a sub-image; the stored PSFs of real PSFEx files, read 1-based and 0-based, are equal
models; a polynomial approximation of a varying model stays within the residual it records.  The tests
for the defects this review found pin their fixes.
"""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Box2I, Exposure, LinearCombinationKernel, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.convolve import convolve_masked_image
from psfmatch.errors import CorruptFileError, KernelQualityWarning, UnsupportedFormatError
from psfmatch.geom import Box2D
from psfmatch.io import read_kernel, write_kernel
from psfmatch.kernel.basis import KernelBasis
from psfmatch.kernel.spatial import SpatialFunction
from psfmatch.psf import GaussianPsf, PsfexPsf, VariableGaussianPsf, read_psfex

SHARED_PSFEX = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "psfex"))


def _quiet_fit(cfg, sci, ref, bbox, kernel_sum=1.0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelPsfMatchTask(cfg).fitKernel(sci, ref, bbox, kernelSum=kernel_sum).kernel


def _config(name="AL", pca=False, kind="chebyshev1", order=2, size=11, cell=64):
    cfg = ModelPsfMatchConfig()
    cfg.autoKernel = False
    cfg.kernel.name = name
    a = cfg.kernel.active
    a.kernelSize = size
    a.spatialKernelOrder = order
    a.spatialModelType = kind
    a.usePcaForSpatialKernel = pca
    a.sizeCellX = a.sizeCellY = cell
    return cfg


def _probe_positions(bbox):
    """The box's four corner pixels, its centre, an edge half a pixel out and a point far outside it."""
    x0, y0, x1, y1 = bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()
    return [(x0, y0), (x1, y0), (x0, y1), (x1, y1), tuple(bbox.getCenter()), (x0 - 0.5, y1 + 0.5),
            (x0 - 313.25, y1 + 777.75)]


def _assert_same_kernel(back, kernel):
    assert back.basis.kind == kernel.basis.kind and back.basis.description == kernel.basis.description
    assert back.spatial_function == kernel.spatial_function and back.bbox == kernel.bbox
    assert back.kernel_sum == kernel.kernel_sum
    np.testing.assert_array_equal(back.coefficients, kernel.coefficients)
    for pos in _probe_positions(kernel.bbox):
        np.testing.assert_array_equal(back.computeImage(pos), kernel.computeImage(pos))
    np.testing.assert_array_equal(back.computeImage(), kernel.computeImage())  # default: the box's centre


# ---------------------------------------------------------------------------
# kernel files: round trips


@pytest.mark.parametrize("name, pca, kind, kernel_sum, xy0, kind_read", [
    ("AL", False, "chebyshev1", 1.0, (0, 0), "alard-lupton"),
    ("AL", False, "polynomial", 0.73, (100000, 200000), "alard-lupton"),  # raw pixels far from the origin
    ("DF", False, "chebyshev1", 2.5, (37, -11), "delta-function"),
    ("DF", True, "chebyshev1", 1.0, (37, 11), "pca"),
    ("AL", True, "polynomial", 1.3e-5, (5, 7), "pca"),
], ids=["AL-cheb", "AL-poly-far", "DF-ksum2.5", "DF-pca", "AL-pca-poly"])
def test_every_fitted_kernel_kind_reads_back_bit_for_bit(tmp_path, name, pca, kind, kernel_sum, xy0, kind_read):
    bbox = Box2I(xy0, (192, 192))
    sci = VariableGaussianPsf(21, 21, bbox, sigma=(1.6, 0.2, -0.15, 0.05, 0.03, 0.02))
    kernel = _quiet_fit(_config(name, pca, kind), sci, GaussianPsf(31, 31, 2.6), bbox, kernel_sum)
    assert kernel.basis.kind == kind_read and kernel.spatial_function.order == 2 and kernel.isSpatiallyVarying()
    write_kernel(kernel, tmp_path / "k.fits")
    back = read_kernel(tmp_path / "k.fits")
    _assert_same_kernel(back, kernel)
    for pos in _probe_positions(bbox)[:5]:  # inside the box: every image sums to kernelSum
        assert back.getSum(pos) == pytest.approx(kernel_sum, rel=1e-9)


@pytest.mark.parametrize("kind", ["chebyshev1", "polynomial"])
@pytest.mark.parametrize("order", range(6))
def test_spatial_orders_0_to_5_over_awkward_boxes_read_back_bit_for_bit(tmp_path, kind, order):
    rng = np.random.default_rng(order)
    images = rng.normal(size=(4, 7, 7))
    images[0] = np.pad(np.ones((1, 1)), 3)
    images[1:] -= images[1:].mean(axis=(1, 2), keepdims=True)
    basis = KernelBasis(images, "alard-lupton", {"ALBasisSigGauss": [0.7, 1.5], "note": "handmade"})
    cases = [(Box2D((0.1 + 0.2, 1 / 3), (1000.7, 2048 / 3)), Box2I((0, 0), (1000, 682))),  # edges not x.5
             (Box2D(Box2I((123457, 987655), (2048, 4096))), Box2I((123457, 987655), (2048, 4096)))]
    for i, (domain, bbox) in enumerate(cases):
        sf = SpatialFunction(kind, order, domain)
        coeffs = rng.normal(size=(4, sf.nterms))
        coeffs[0] = 0.0
        coeffs[0, 0] = 1.0
        kernel = LinearCombinationKernel(basis, coeffs, sf, kernel_sum=0.93, bbox=bbox)
        write_kernel(kernel, tmp_path / f"k{i}.fits")
        back = read_kernel(tmp_path / f"k{i}.fits")
        assert back.spatial_function.bbox == domain  # the float edges, exactly
        _assert_same_kernel(back, kernel)


def test_afw_getters_of_a_read_back_kernel_behave_as_the_originals(tmp_path):
    bbox = Box2I((40, 25), (192, 160))
    kernel = _quiet_fit(_config(), VariableGaussianPsf(21, 21, bbox, sigma=(1.6, 0.25, -0.2)),
                        GaussianPsf(31, 31, 2.6), bbox, kernel_sum=0.8)
    kernel.writeFits(tmp_path / "k.fits")
    back = LinearCombinationKernel.readFits(tmp_path / "k.fits")
    for getter in ("getWidth", "getHeight", "getCtr", "getDimensions", "getNKernelParameters",
                   "getNSpatialParameters", "isSpatiallyVarying"):
        assert getattr(back, getter)() == getattr(kernel, getter)()
    np.testing.assert_array_equal(back.getSpatialParameters(), kernel.getSpatialParameters())
    np.testing.assert_array_equal(back.getSpatialParameters(), 0.8 * kernel.coefficients)
    pos = (51.5, 170.25)
    np.testing.assert_array_equal(back.getKernelParameters(pos), kernel.getKernelParameters(pos))
    np.testing.assert_array_equal(back.getKernelParameters(), kernel.getKernelParameters())
    for i, f in enumerate(back.getSpatialFunctionList()):
        assert f(*pos) == kernel.getSpatialFunction(i)(*pos)
        assert f(*pos) == pytest.approx(back.getKernelParameters(pos)[i], rel=1e-12, abs=1e-15)
    # afw's form fills an image and returns its sum before normalization (kernelSum)
    a, b = np.zeros((11, 11)), np.zeros((11, 11))
    total = back.computeImage(a, True, pos[0], pos[1])
    assert total == kernel.computeImage(b, True, pos[0], pos[1]) and total == pytest.approx(0.8, rel=1e-12)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_array_equal(back.computeImage(x=pos[0], y=pos[1]), kernel.computeImage(pos))
    np.testing.assert_array_equal(back.computeImageLsst(pos), kernel.computeImage(pos)[::-1, ::-1])


def test_big_endian_float32_kernel_arrays_are_stored_as_their_float64_values(tmp_path):
    images = np.zeros((3, 5, 5), dtype=">f4")
    images[0, 2, 2] = 1.0
    images[1, 1, 2], images[1, 3, 2] = np.float32(0.1), np.float32(-0.1)
    images[2, 2, 1], images[2, 2, 3] = np.float32(1 / 3), np.float32(-1 / 3)
    coeffs = np.array([[1.0, 0.0, 0.0], [0.3, 0.1, -0.2], [0.05, 0.0, 0.1]], dtype=">f4")
    bbox = Box2I((-20, 30), (64, 48))
    kernel = LinearCombinationKernel(KernelBasis(images, "alard-lupton", {}), coeffs,
                                     SpatialFunction("polynomial", 1, bbox), 1.0, bbox)
    write_kernel(kernel, tmp_path / "k.fits")
    back = read_kernel(tmp_path / "k.fits")
    assert back.basis.images.dtype == np.float64 and back.basis.images.dtype.isnative
    np.testing.assert_array_equal(back.basis.images, images.astype(np.float64))
    np.testing.assert_array_equal(back.coefficients, coeffs.astype(np.float64))
    # the +-1/3 pixels (float32 values) weighted by the coefficient 0.05 + 0.1 y (float32 values) at y = 40
    img = back.computeImage((0.0, 40.0))
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    assert img[2, 1] == pytest.approx(f32(1 / 3) * (f32(0.05) + f32(0.1) * 40.0), rel=1e-14)
    assert img.sum() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("cut", [100, 2880, 2880 * 3 + 40, -2880 + 8])
def test_a_truncated_kernel_file_is_a_corrupt_file_error_naming_it(tmp_path, cut):
    bbox = Box2I((0, 0), (64, 64))
    images = np.zeros((2, 5, 5))
    images[0, 2, 2] = 1.0
    images[1, 2, 1], images[1, 2, 3] = 0.5, -0.5
    kernel = LinearCombinationKernel(KernelBasis(images, "alard-lupton", {}), [[1.0, 0.0, 0.0], [0.1, 0.2, 0.0]],
                                     SpatialFunction("chebyshev1", 1, bbox), 1.0, bbox)
    write_kernel(kernel, tmp_path / "k.fits")
    raw = (tmp_path / "k.fits").read_bytes()
    assert len(raw) > 2880 * 4
    (tmp_path / "cut.fits").write_bytes(raw[:cut])
    with pytest.raises(CorruptFileError, match="cut.fits"):
        read_kernel(tmp_path / "cut.fits")


# ---------------------------------------------------------------------------
# applying a saved kernel


def _exposure(dtype=np.float32):
    x0, y0, W, H = 40, 25, 160, 128
    bbox = Box2I((x0, y0), (W, H))
    rng = np.random.default_rng(3)
    img = rng.normal(100.0, 3.0, size=(H, W))
    img[60, 70] += 5000.0
    img[10, 100] = np.nan
    mask = np.zeros((H, W), np.int32)
    mask[90, 30] = 1  # BAD
    return Exposure(img.astype(dtype), mask, np.full((H, W), 9.0, dtype),
                    psf=VariableGaussianPsf(21, 21, bbox, sigma=(1.6, 0.25, -0.2)), xy0=(x0, y0))


def test_a_saved_kernel_applied_to_the_exposure_gives_runs_output_bit_for_bit(tmp_path):
    exposure = _exposure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask(_config(order=1, cell=40)).run(exposure, GaussianPsf(31, 31, 2.6))
    write_kernel(result.psfMatchingKernel, tmp_path / "k.fits")
    kernel = read_kernel(tmp_path / "k.fits")
    assert kernel.isSpatiallyVarying() and kernel.bbox == exposure.getBBox()
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)  # the exposure is the kernel's own box
        mi = convolve_masked_image(exposure, kernel)
    matched = result.psfMatchedExposure
    assert mi.getXY0() == matched.getXY0() and mi.image.dtype == np.float32
    np.testing.assert_array_equal(mi.image, matched.image)  # NaN border and NaN pixel included
    np.testing.assert_array_equal(mi.variance, matched.variance)
    np.testing.assert_array_equal(mi.mask, matched.mask)


def test_a_saved_kernel_is_evaluated_in_parent_coordinates_on_a_sub_image(tmp_path):
    full = _exposure(np.float64)
    x0, y0 = full.getXY0()
    bbox = full.getBBox()
    kernel = _quiet_fit(_config(order=1, cell=40), full.getPsf(), GaussianPsf(31, 31, 2.6), bbox)
    write_kernel(kernel, tmp_path / "k.fits")
    kernel = read_kernel(tmp_path / "k.fits")
    assert kernel.isSpatiallyVarying()
    img = np.nan_to_num(full.image, nan=100.0)
    clean = Exposure(img, variance=full.variance, xy0=(x0, y0))
    whole = convolve_masked_image(clean, kernel)
    sx, sy, sw, sh = 30, 20, 90, 70
    h = kernel.getWidth() // 2
    want = whole.image[sy + h:sy + sh - h, sx + h:sx + sw - h]
    piece = Exposure(img[sy:sy + sh, sx:sx + sw].copy(), variance=full.variance[sy:sy + sh, sx:sx + sw].copy(),
                     xy0=(x0 + sx, y0 + sy))
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)  # inside the fitted box: no warning
        got = convolve_masked_image(piece, kernel).image[h:-h, h:-h]
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9)
    # direct sum at one output pixel, kernel taken at its parent position: out(x) = sum_u K_x(u) I(x - u)
    py, px = 40, 50  # in the piece
    K = kernel.computeImage((x0 + sx + px, y0 + sy + py))
    stamp = img[sy + py - h:sy + py + h + 1, sx + px - h:sx + px + h + 1]
    assert got[py - h, px - h] == pytest.approx(float(np.sum(K * stamp[::-1, ::-1])), rel=1e-12)
    # the same pixels placed at the origin are another part of the field: different, and warned about
    moved = Exposure(piece.image, variance=piece.variance)
    with pytest.warns(KernelQualityWarning, match="reaches outside the box the kernel was fitted on"):
        other = convolve_masked_image(moved, kernel).image[h:-h, h:-h]
    assert np.abs(other - want).max() > 1.0


# ---------------------------------------------------------------------------
# saved PSFs


def _psfex_files():
    return sorted(f for f in glob.glob(os.path.join(SHARED_PSFEX, "*", "*.psf")) if "invalid" not in f)


@pytest.mark.parametrize("origin", [1, 0])
def test_real_psfex_models_stored_in_an_exposure_are_equal_models(tmp_path, shared_data, origin):
    shared_data("psfex")  # (skips without the shared data)
    files = _psfex_files()
    assert files
    for i, path in enumerate(files):
        psf = read_psfex(path, origin=origin)
        for model in (psf, psf.resized(11, 15)):
            out = tmp_path / f"e{i}_{model.getDimensions()[0]}.fits"
            Exposure(np.zeros((8, 8), np.float32), psf=model).writeFits(out)
            back = Exposure.readFits(out).getPsf()
            assert type(back) is PsfexPsf and back == model and back.getDimensions() == model.getDimensions()
            assert tuple(back.getAveragePosition()) == tuple(model.getAveragePosition())
            for pos in [(0.0, 0.0), (1000.25, 2047.75), (10.3, 3000.7)]:  # sub-pixel offsets: shifted images
                np.testing.assert_array_equal(back.computeImage(pos), model.computeImage(pos))


def test_a_varying_reference_psf_of_a_matched_exposure_reads_back_equal(tmp_path):
    bbox = Box2I((0, 0), (96, 96))
    exposure = Exposure(np.zeros((96, 96), np.float32), psf=GaussianPsf(21, 21, 1.6))
    reference = VariableGaussianPsf(31, 31, bbox, sigma=(2.6, 0.1, 0.05), e1=(0.0, 0.02, 0.0))
    cfg = _config(order=0, cell=96)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matched = ModelPsfMatchTask(cfg).run(exposure, reference).psfMatchedExposure
    matched.writeFits(tmp_path / "m.fits")
    assert "PMAPPROX" not in fits.getheader(tmp_path / "m.fits", "PSF")
    back = Exposure.readFits(tmp_path / "m.fits").getPsf()
    assert type(back) is VariableGaussianPsf and back == matched.getPsf()
    for pos in [(0.0, 0.0), (95.0, 95.0), (47.3, 12.6)]:
        np.testing.assert_array_equal(back.computeImage(pos), matched.getPsf().computeImage(pos))


def test_a_varying_model_approximated_on_saving_stays_within_the_residual_it_records(tmp_path):
    from psfmatch.psf import PsfAdapter

    class Growing:
        def computeKernelImage(self, position):
            x, y = position
            return GaussianPsf(21, 21, 1.6 + 0.004 * x + 0.002 * y).computeKernelImage((0, 0))

        def isSpatiallyVarying(self):
            return True

    psf = PsfAdapter(Growing())
    bbox = Box2I((10, 20), (100, 80))
    exposure = Exposure(np.zeros((80, 100), np.float32), psf=psf, xy0=(10, 20))
    exposure.writeFits(tmp_path / "e.fits")
    header = fits.getheader(tmp_path / "e.fits", "PSF")
    assert header["PMAPPROX"] and header["PMORIGTY"] == "PsfAdapter" and 0 < header["PMFITRES"] < 0.05
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    assert isinstance(back, PsfexPsf)
    xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), 5)
    ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), 5)
    peak = max(psf.computeKernelImage((x, y)).max() for x in xs for y in ys)
    worst = max(np.abs(back.computeKernelImage((x, y)) - psf.computeKernelImage((x, y))).max()
                for x in xs for y in ys)  # the grid the fit used: its residual is what PMFITRES records
    assert worst <= header["PMFITRES"] * peak * (1 + 1e-6)
    assert worst >= 0.5 * header["PMFITRES"] * peak  # (the recorded number is this fit's, not a bound)


# ---------------------------------------------------------------------------
# defects found by this review (each passes once fixed)


class _LabelledVariableGaussian(VariableGaussianPsf):
    """A subclass that only adds an attribute: its images are VariableGaussianPsf's."""

    label = "CCD 7"


def test_a_subclass_that_redefines_nothing_is_stored_exactly(tmp_path):
    from psfmatch.psf.base import _overrides_model

    bbox = Box2I((0, 0), (100, 80))
    psf = _LabelledVariableGaussian(17, 17, bbox, sigma=(2.0, 0.3, -0.2, 0.1, 0.05, -0.08, 0.06, 0.0, 0.0, 0.04))
    assert not _overrides_model(type(psf))
    Exposure(np.zeros((80, 100), np.float32), psf=psf).writeFits(tmp_path / "e.fits")
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    assert "PMAPPROX" not in fits.getheader(tmp_path / "e.fits", "PSF")
    for pos in [(0.0, 0.0), (50.0, 40.0), (99.0, 79.0), (75.0, 10.0)]:
        np.testing.assert_array_equal(back.computeKernelImage(pos), psf.computeKernelImage(pos))


def test_a_negative_box_size_in_a_kernel_file_is_a_corrupt_file_error(tmp_path):
    bbox = Box2I((0, 0), (64, 64))
    kernel = LinearCombinationKernel(KernelBasis(np.pad(np.ones((1, 1, 1)), ((0, 0), (2, 2), (2, 2))),
                                                 "delta-function", {}), [[1.0]], None, 1.0, bbox)
    write_kernel(kernel, tmp_path / "k.fits")
    with fits.open(tmp_path / "k.fits", mode="update") as hdul:
        hdul[0].header["BBW"] = -5
    with pytest.raises(CorruptFileError, match=r"k\.fits: the fitted box's size BBW x BBH = -5 x 64 is not positive"):
        read_kernel(tmp_path / "k.fits")
    # and a box or an order that is not an integer (it was cut to one)
    for key, value in (("BBX0", 3.7), ("SPORDER", 2.5)):
        spatial = _quiet_fit(_config(), GaussianPsf(15, 15, 1.5), GaussianPsf(21, 21, 2.4), Box2I((0, 0), (128, 128)))
        write_kernel(kernel if key == "BBX0" else spatial, tmp_path / "k.fits", overwrite=True)
        with fits.open(tmp_path / "k.fits", mode="update") as hdul:
            hdul[0].header[key] = value
        with pytest.raises(CorruptFileError, match=rf"k\.fits: {key} = {value} is not an integer"):
            read_kernel(tmp_path / "k.fits")


def _constant_kernel_file(path):
    images = np.zeros((1, 3, 3))
    images[0, 1, 0] = 1.0  # a pure shift: a flipped (correlation) reading moves the image the other way
    write_kernel(LinearCombinationKernel(KernelBasis(images, "delta-function", {}), [[1.0]]), path)


def test_a_kernel_file_in_another_convention_is_not_read_as_a_convolution(tmp_path):
    _constant_kernel_file(tmp_path / "k.fits")
    with fits.open(tmp_path / "k.fits", mode="update") as hdul:
        hdul[0].header["CONVENTN"] = "lsst-correlation"
    with pytest.raises(CorruptFileError, match=r"k\.fits: CONVENTN = 'lsst-correlation': psfmatch's kernel files "
                                                r"hold kernels applied by convolution"):
        read_kernel(tmp_path / "k.fits")


def test_a_kernel_file_of_a_later_format_version_is_refused(tmp_path):
    _constant_kernel_file(tmp_path / "k.fits")
    with fits.open(tmp_path / "k.fits", mode="update") as hdul:
        hdul[0].header["PMVERS"] = 2
    with pytest.raises(UnsupportedFormatError, match=r"k\.fits: PMVERS = 2: a kernel file of format version 2, "
                                                     r"which this psfmatch \(format 1\) does not know"):
        read_kernel(tmp_path / "k.fits")


def test_a_basis_description_with_a_quote_and_slash_is_kept(tmp_path):
    """astropy cuts a long-string card's value at a quote followed by '/': the description's quotes are written as
    JSON's \\u0027, and the text reads back whole."""
    desc = {"note": "reference: O'Brien' / 2012, see notes", "sigmas": [0.7, 1.5, 3.0], "more": "x" * 80}
    kernel = LinearCombinationKernel(KernelBasis(np.pad(np.ones((1, 1, 1)), ((0, 0), (2, 2), (2, 2))),
                                                 "delta-function", desc), [[1.0]])
    write_kernel(kernel, tmp_path / "k.fits")
    assert read_kernel(tmp_path / "k.fits").basis.description == desc
    assert "'" not in fits.getheader(tmp_path / "k.fits", "BASIS")["DESCRIPT"]  # (JSON's \u0027 instead)


def test_an_origin_0_psfex_model_round_trips_to_its_polzero_rounding(tmp_path):
    """psf_persist: an origin-0 model's POLZERO is written plus 1 and read minus 1, so it comes back exact where
    those sums are (0.5) and to their rounding elsewhere ((0.1 + 1) - 1 = 0.10000000000000009)."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 15, 15)) * 1e-3
    basis[0] = GaussianPsf(15, 15, 2.0).computeKernelImage((0, 0))
    psf = PsfexPsf(basis, degree=2, polzero=(0.1, 1 / 3), polscal=(100.0 / 3, 80.7), psf_samp=0.7, origin=0)
    Exposure(np.zeros((8, 8), np.float32), psf=psf).writeFits(tmp_path / "e.fits")
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    np.testing.assert_allclose(tuple(back.getAveragePosition()), tuple(psf.getAveragePosition()), rtol=1e-15)
    for pos in ((3.3, 4.7), (50.0, 60.0)):
        np.testing.assert_allclose(back.computeKernelImage(pos), psf.computeKernelImage(pos), rtol=0, atol=1e-15)
    exact = PsfexPsf(basis, degree=2, polzero=(0.5, 2.0), polscal=(100.0 / 3, 80.7), psf_samp=0.7, origin=0)
    Exposure(np.zeros((8, 8), np.float32), psf=exact).writeFits(tmp_path / "e2.fits", overwrite=True)
    assert Exposure.readFits(tmp_path / "e2.fits").getPsf() == exact
