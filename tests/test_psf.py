"""PSF models and the PSF protocol."""

import numpy as np
import pytest

from psfmatch import Box2I, InvalidInputError, Point2D, PsfEvaluationError
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, ImagePsf, MoffatPsf, VariableGaussianPsf, as_psf
from psfmatch.moments import measure_shape


def test_gaussian_kernel_image_contract():
    psf = GaussianPsf(15, 17, 2.0)
    img = psf.computeKernelImage(Point2D(3.0, 4.0))
    assert img.shape == (17, 15) and img.dtype == np.float64
    assert img.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.unravel_index(img.argmax(), img.shape) == (8, 7)
    assert psf.computeBBox((0, 0)) == Box2I((-7, -8), (15, 17))
    assert psf.computeShape((1, 1)).sigma == pytest.approx(2.0, rel=1e-5)
    np.testing.assert_array_equal(psf.computeKernelImage((3, 4)), img)  # tuples work too


def test_compute_image_subpixel():
    psf = GaussianPsf(21, 21, 2.0)
    img = psf.computeImage((10.3, 20.8))
    box = psf.computeImageBBox((10.3, 20.8))
    assert box.getCenter() == Point2D(10.0, 21.0)
    shape = measure_shape(img)
    assert shape.x == pytest.approx(0.3, abs=1e-6) and shape.y == pytest.approx(-0.2, abs=1e-6)


def test_double_gaussian_semantics():
    psf = DoubleGaussianPsf(41, 41, 2.0, 5.0, 0.1)
    assert (psf.getSigma1(), psf.getSigma2(), psf.getB()) == (2.0, 5.0, 0.1)
    img = psf.computeKernelImage((0, 0))
    v, u = np.mgrid[-20:21, -20:21]
    r2 = u * u + v * v
    g1, g2 = np.exp(-r2 / 8.0), np.exp(-r2 / 50.0)
    # b is the peak ratio of the second component: flux fraction b s2^2 / (s1^2 + b s2^2)
    expect = (g1 + 0.1 * g2) / (g1 + 0.1 * g2).sum()
    np.testing.assert_allclose(img, expect, rtol=1e-12)
    frac = 0.1 * 25 / (4 + 0.1 * 25)
    assert (0.1 * g2).sum() / (g1 + 0.1 * g2).sum() == pytest.approx(frac, rel=1e-3)
    r = psf.resized(11, 11)
    assert r.getSigma1() == 2.0 and r.computeKernelImage((0, 0)).shape == (11, 11)
    single = DoubleGaussianPsf(11, 11, 2.0)
    np.testing.assert_allclose(single.computeKernelImage((0, 0)), GaussianPsf(11, 11, 2.0).computeKernelImage((0, 0)))


def test_moffat_fwhm():
    psf = MoffatPsf(51, 51, 5.0, 2.5)
    img = psf.computeKernelImage((0, 0))
    alpha = psf.getAlpha()
    # the profile at r = fwhm / 2 is half the peak, by the definition of alpha
    assert (1 + (2.5 / alpha) ** 2) ** -2.5 == pytest.approx(0.5, rel=1e-12)
    r = np.arange(26)
    np.testing.assert_allclose(img[25, 25:] / img[25, 25], (1 + (r / alpha) ** 2) ** -2.5, rtol=1e-12)
    with pytest.raises(InvalidInputError, match="Moffat beta must be > 1"):
        MoffatPsf(11, 11, 3.0, 1.0)


def test_variable_gaussian():
    bbox = Box2I((0, 0), (1000, 500))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[2.0, 0.2, 0.0], e1=[0.05], e2=[0.0, 0.0, 0.03])
    s, e1, e2 = psf.parameters((999.5, 0))  # right edge: u = 1; bottom: v ~ -1
    assert s == pytest.approx(2.2, abs=1e-6) and e1 == 0.05 and e2 == pytest.approx(-0.03, abs=1e-4)
    shape = psf.computeShape((999.5, -0.5))
    assert shape.getTraceRadius() == pytest.approx(2.2, rel=2e-3)
    assert shape.e1 == pytest.approx(0.05, abs=2e-3)
    assert psf.getAveragePosition() == Point2D(499.5, 249.5)
    assert psf.isSpatiallyVarying()
    with pytest.raises(InvalidInputError, match="sigma needs"):
        VariableGaussianPsf(21, 21, bbox, sigma=[1, 2])


def test_image_psf_odd_even_and_resize():
    g = GaussianPsf(21, 21, 2.0).computeKernelImage((0, 0))
    psf = ImagePsf(g * 7.0)
    np.testing.assert_allclose(psf.computeKernelImage((5, 5)), g, atol=1e-15)
    # an even array: its geometric centre lands on the centre pixel of an odd stamp one pixel larger
    y, x = np.mgrid[0:20, 0:20]
    even = np.exp(-0.5 * ((x - 9.5) ** 2 + (y - 9.5) ** 2) / 2.0 ** 2)
    ep = ImagePsf(even)
    img = ep.computeKernelImage((0, 0))
    assert img.shape == (21, 21)
    s = measure_shape(img)
    assert abs(s.x) < 1e-3 and abs(s.y) < 1e-3 and s.sigma == pytest.approx(2.0, rel=1e-3)
    # off-centre arrays are kept as they are unless recenter=True
    off = np.exp(-0.5 * ((x[:19, :19] - 9.6) ** 2 + (y[:19, :19] - 8.7) ** 2) / 2.0 ** 2)
    assert measure_shape(ImagePsf(off).computeKernelImage((0, 0))).x == pytest.approx(0.6, abs=1e-3)
    rc = measure_shape(ImagePsf(off, recenter=True).computeKernelImage((0, 0)))
    assert abs(rc.x) < 1e-3 and abs(rc.y) < 1e-3
    r = psf.resized(31, 31)
    assert r.computeKernelImage((0, 0)).shape == (31, 31)
    np.testing.assert_allclose(r.computeKernelImage((0, 0))[5:26, 5:26], g, atol=1e-15)


@pytest.mark.parametrize("arr, match", [
    (np.full((5, 5), np.nan), "NaN or inf"),
    (np.zeros((5, 5)), "non-positive sum"),
    (-np.ones((5, 5)), "non-positive sum"),
    (np.zeros((0, 3)), "non-empty"),
    (np.ones(5), "2-d array"),
])
def test_image_psf_bad_input(arr, match):
    with pytest.raises(InvalidInputError, match=match):
        ImagePsf(arr)


class UserPsf:
    def __init__(self, image):
        self.image = image

    def computeKernelImage(self, position):
        return self.image


@pytest.mark.parametrize("img, match", [
    (np.ones((4, 5)), "even size 5x4"),
    (np.full((5, 5), np.inf), "NaN or inf"),
    (np.zeros((5, 5)), "non-positive sum"),
    (np.ones((2, 3, 3)), "must be 2-d"),
])
def test_user_psf_validation(img, match):
    with pytest.raises(PsfEvaluationError, match=match):
        as_psf(UserPsf(img)).computeKernelImage((1, 2))


def test_user_psf_derived_protocol():
    g = GaussianPsf(15, 15, 1.5).computeKernelImage((0, 0))
    psf = as_psf(UserPsf(3 * g))
    assert psf.computeBBox((0, 0)) == Box2I((-7, -7), (15, 15))
    assert psf.computeShape((0, 0)).sigma == pytest.approx(1.5, rel=1e-5)
    assert psf.resized(21, 21).computeKernelImage((0, 0)).shape == (21, 21)
    assert psf.getAveragePosition() == Point2D(0.0, 0.0)
    with pytest.raises(InvalidInputError, match="needs a computeKernelImage"):
        as_psf(object())


def test_odd_size_required():
    with pytest.raises(InvalidInputError, match="width must be a positive odd integer; got 10"):
        GaussianPsf(10, 11, 2.0)
    with pytest.raises(InvalidInputError, match="sigma must be positive"):
        GaussianPsf(11, 11, -2.0)
