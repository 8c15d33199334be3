"""PSF models and the PSF protocol."""

import warnings

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, InvalidInputError, ModelPsfMatchTask, Point2D, PsfEvaluationError
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, ImagePsf, MoffatPsf, Psf, VariableGaussianPsf, as_psf
from psfmatch.psf.analytic import elliptical_gaussian
from psfmatch.psf.base import _ResizedPsf, pad_or_crop
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
    (np.ma.array(np.ones((5, 5)), mask=np.eye(5, dtype=bool)),
     r"numpy masked array, whose mask it would ignore .* fill the masked pixels first, e\.g\. "
     r"ImagePsf\(arr\.filled\(0\)\)"),
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


@pytest.mark.parametrize("make", [
    lambda: GaussianPsf(float("nan"), 25, 2.0),
    lambda: GaussianPsf(float("inf"), 25, 2.0),
    lambda: GaussianPsf(None, 25, 2.0),
    lambda: GaussianPsf(True, 25, 2.0),
], ids=["nan", "inf", "None", "bool"])
def test_stamp_size_must_be_an_odd_integer(make):
    with pytest.raises(InvalidInputError, match="PSF stamp width must be a positive odd integer; got"):
        make()


def test_constructor_arguments_are_checked():
    with pytest.raises(InvalidInputError, match="ImagePsf pixel_scale must be a positive number .*; got '0.2as'"):
        ImagePsf(np.ones((3, 3)), pixel_scale="0.2as")
    with pytest.raises(InvalidInputError, match="pixel_scale must be a positive number .*; got nan"):
        ImagePsf(np.ones((3, 3)), pixel_scale=float("nan"))
    assert ImagePsf(np.ones((3, 3)), pixel_scale=np.float32(0.25)).pixel_scale == 0.25
    bbox = Box2I((0, 0), (10, 10))
    # no coefficient at all used to be accepted, and failed at every evaluation
    with pytest.raises(InvalidInputError, match=r"sigma needs \(o\+1\)\(o\+2\)/2 finite coefficients .*got 0"):
        VariableGaussianPsf(5, 5, bbox, [])
    with pytest.raises(InvalidInputError, match="e1 must be a number or a sequence of polynomial coefficients; "
                                                "got 'x'"):
        VariableGaussianPsf(5, 5, bbox, 1.5, e1="x")
    with pytest.raises(InvalidInputError, match=r"e2 must be a number or a 1-d sequence .* got shape \(2, 2\)"):
        VariableGaussianPsf(5, 5, bbox, 1.5, e2=np.zeros((2, 2)))


class EllipticalGaussian(GaussianPsf):
    """A Gaussian twice as broad in x**2 as in y**2: a subclass overriding the evaluation."""

    def _image_at(self, x, y, dx, dy):
        s2 = self.getSigma() ** 2
        return elliptical_gaussian(*self.getDimensions(), 2.0 * s2, s2, 0.0, dx, dy)


class TiltedDoubleGaussian(DoubleGaussianPsf):
    def _image_at(self, x, y, dx, dy):
        return elliptical_gaussian(*self.getDimensions(), 9.0, 2.0, 0.5, dx, dy)


class StretchedMoffat(MoffatPsf):
    def _image_at(self, x, y, dx, dy):
        return super()._image_at(x, y, dx, dy)[:, ::-1] + 0.1 * super()._image_at(x, y, dx, dy)[::-1, :]


class ConstantEllipticity(VariableGaussianPsf):
    """Overrides the public parameters(): e1 = 0.3 everywhere, whatever the coefficients say."""

    def parameters(self, position, _arrays=False):
        s, _, e2 = super().parameters(position, _arrays)
        return s, (np.full(np.shape(s), 0.3) if _arrays else 0.3), e2


class FlippedImage(ImagePsf):
    def _kernel_image(self, x, y):
        return self.array[::-1]


class Renamed(GaussianPsf):
    """A subclass that only changes the construction: the same model."""

    def __init__(self, sigma):
        super().__init__(25, 25, sigma)


@pytest.mark.parametrize("psf", [
    EllipticalGaussian(25, 25, 2.0),
    TiltedDoubleGaussian(25, 25, 1.5, 3.0, 0.1),
    StretchedMoffat(25, 25, 4.0, 2.5),
    ConstantEllipticity(25, 25, Box2I((0, 0), (100, 100)), [2.0, 0.2, 0.1]),
    FlippedImage(np.arange(1.0, 26.0).reshape(5, 5)),
], ids=["gaussian", "doublegaussian", "moffat", "variablegaussian", "image"])
def test_resized_keeps_a_subclass_model(psf):
    for size in (5, 21, 31):
        resized = psf.resized(size, size)
        # the subclass's own image, padded or cropped (not the parent model rebuilt from its parameters)
        want = pad_or_crop(psf.computeKernelImage((30.0, 40.0)), size, size)
        np.testing.assert_allclose(resized.computeKernelImage((30.0, 40.0)), want / want.sum(), rtol=1e-12,
                                   atol=1e-15)
        assert resized.isSpatiallyVarying() == psf.isSpatiallyVarying()


def test_resized_keeps_an_elliptical_reference_through_the_task():
    ref = EllipticalGaussian(41, 41, 2.0)
    assert ref.resized(21, 21).computeShape((0, 0)).ixx == pytest.approx(8.0, rel=0.01)  # was 4: round
    # a subclass that changes only the construction still gets the model's own (exact) resize
    assert type(Renamed(2.0).resized(31, 31)) is GaussianPsf
    assert Renamed(2.0).resized(31, 31) == GaussianPsf(31, 31, 2.0)
    rng = np.random.default_rng(1)
    exposure = Exposure(rng.normal(size=(128, 128)).astype(np.float32), variance=np.ones((128, 128), np.float32),
                        psf=GaussianPsf(31, 31, 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask().run(exposure, ref)  # the reference is resized to the 31 px science stamp
    q = result.psfMatchedExposure.getPsf().computeShape((64, 64))
    assert (q.ixx, q.iyy) == (pytest.approx(8.0, rel=0.01), pytest.approx(4.0, rel=0.01))
    k = result.psfMatchingKernel.computeImage((64, 64))
    km = measure_shape(k / k.sum())
    # the kernel is what turns sigma 1.5 into the elliptical reference: variances 8 - 2.25 and 4 - 2.25
    assert km.ixx == pytest.approx(5.75, rel=0.05) and km.iyy == pytest.approx(1.75, rel=0.05)


class GrowingPsf(Psf):
    """Implements only _kernel_image, as the Psf docstring says: sigma 1.5 px at x = 0, 2.0 px at x = 1000."""

    name = "GrowingPsf"

    def _kernel_image(self, x, y):
        s = 1.5 + x / 2000
        yy, xx = np.mgrid[-10:11, -10:11]
        return np.exp(-(xx ** 2 + yy ** 2) / (2 * s ** 2))


def test_a_psf_subclass_varies_unless_it_says_otherwise():
    psf = GrowingPsf()
    assert psf.isSpatiallyVarying()
    positions = [(0.0, 0.0), (1000.0, 0.0), (500.0, 7.0)]
    stack = psf.computeKernelImages(positions)  # used to repeat the first stamp
    for img, pos in zip(stack, positions):
        np.testing.assert_array_equal(img, psf.computeKernelImage(pos))
    assert [round(measure_shape(s).sigma, 3) for s in stack] == [1.5, 2.0, 1.75]
    # the constant models say so (and are realized once); a subclass redefining their evaluation may vary
    bbox = Box2I((0, 0), (100, 100))
    for constant in (GaussianPsf(11, 11, 2.0), DoubleGaussianPsf(11, 11, 1.0, 2.0, 0.1), MoffatPsf(11, 11, 3.0, 2.5),
                     ImagePsf(np.ones((3, 3))), VariableGaussianPsf(11, 11, bbox, [1.5]), Renamed(2.0),
                     GaussianPsf(11, 11, 2.0).resized(9, 9), _ResizedPsf(MoffatPsf(11, 11, 3.0, 2.5), 9, 9)):
        assert not constant.isSpatiallyVarying(), constant
    assert EllipticalGaussian(11, 11, 2.0).isSpatiallyVarying()
    assert VariableGaussianPsf(11, 11, bbox, [1.5, 0.1, 0.0]).isSpatiallyVarying()


def test_a_psf_subclass_gets_a_spatially_varying_kernel():
    exposure = Exposure(np.zeros((1024, 1024), dtype=np.float32), psf=GrowingPsf())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = ModelPsfMatchTask().run(exposure, GaussianPsf(31, 31, 2.6)).psfMatchingKernel

    def width(x):
        k = kernel.computeImage((x, 512))
        return measure_shape(k / k.sum()).sigma

    # sqrt(2.6^2 - sigma^2): 2.106 at x = 50 (sigma 1.525), 1.661 at x = 1000 (sigma 2.0); it was 2.124 at both
    assert width(50) == pytest.approx(2.106, abs=0.02) and width(1000) == pytest.approx(1.661, abs=0.02)


def test_zero_dimensional_arrays_are_stamp_sizes_too():
    import numpy as np

    from psfmatch.psf import GaussianPsf
    psf = GaussianPsf(np.array(21), np.array(21), 2.0)
    assert psf.computeKernelImage((0, 0)).shape == (21, 21)
    assert psf.resized(np.array(31), np.array(31)).computeKernelImage((0, 0)).shape == (31, 31)


def test_a_user_resized_that_ignores_the_size_is_padded_instead(caplog):
    import numpy as np

    from psfmatch.psf import GaussianPsf, as_psf

    class Stubborn:
        def computeKernelImage(self, position):
            return GaussianPsf(31, 31, 2.0).computeKernelImage(position)

        def resized(self, w, h):
            return self  # ignores the size

    with caplog.at_level("WARNING", logger="psfmatch.psf.base"):
        out = as_psf(Stubborn()).resized(21, 21)
    assert out.computeKernelImage((0, 0)).shape == (21, 21)
    assert "Stubborn.resized(21, 21) gave 31x31 stamps; padding or cropping its images instead" in caplog.text
    np.testing.assert_allclose(out.computeKernelImage((0, 0)), GaussianPsf(31, 31, 2.0).computeKernelImage((0, 0))
                               [5:-5, 5:-5] / GaussianPsf(31, 31, 2.0).computeKernelImage((0, 0))[5:-5, 5:-5].sum())


def test_compute_image_reports_a_model_failure_with_the_position():
    # a model's own error in _image_at (the path computeImage takes) comes out as PsfEvaluationError, as
    # computeKernelImage's does, naming the model, the position and the cause
    vg = VariableGaussianPsf(21, 21, Box2I((0, 0), (100, 100)), [2.0, -3.0, 0.0])
    with pytest.raises(PsfEvaluationError, match=r"VariableGaussianPsf could not be evaluated at \(99, 50\): "
                                                 r"InvalidInputError: .*sigma=-0\.97"):
        vg.computeImage((99.0, 50.0))

    class Failing(GaussianPsf):
        def _image_at(self, x, y, dx, dy):
            if x > 1000:
                raise ValueError("outside the focal-plane model")
            return super()._image_at(x, y, dx, dy)

    psf = Failing(21, 21, 2.0)
    with pytest.raises(PsfEvaluationError, match=r"GaussianPsf could not be evaluated at \(1500\.3, 10\): "
                                                 "ValueError: outside the focal-plane model"):
        psf.computeImage((1500.3, 10.0))
    assert psf.computeImage((10.3, 10.0)).sum() == pytest.approx(1.0)

    own = PsfEvaluationError("the model's own message")

    class Raising(GaussianPsf):
        def _image_at(self, x, y, dx, dy):
            raise own

    with pytest.raises(PsfEvaluationError) as info:  # a PsfEvaluationError passes through unchanged
        Raising(21, 21, 2.0).computeImage((1.0, 2.0))
    assert info.value is own


def test_adapter_whose_is_spatially_varying_fails_is_taken_as_varying(caplog):
    class PartialPsf:
        def computeKernelImage(self, position):
            yy, xx = np.mgrid[-10:11, -10:11]
            return np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.5 ** 2))

        def getAveragePosition(self):
            raise NotImplementedError("not implemented")

        def isSpatiallyVarying(self):
            raise NotImplementedError("not implemented")

    with caplog.at_level("DEBUG", logger="psfmatch.psf.base"):
        assert as_psf(PartialPsf()).isSpatiallyVarying() is True
    assert "isSpatiallyVarying() failed (NotImplementedError: not implemented)" in caplog.text
    exposure = Exposure(np.zeros((128, 128), dtype=np.float32), psf=PartialPsf())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask().run(exposure, GaussianPsf(31, 31, 2.6))
    assert result.psfMatchingKernel is not None


def test_variable_gaussian_refuses_an_empty_bbox():
    for box in (Box2I((0, 0), (0, 0)), Box2I((5, 5), (10, 0))):
        with pytest.raises(InvalidInputError, match=r"VariableGaussianPsf bbox Box2I\(.*\) is empty; give the "
                                                    r"\(non-empty\) domain"):
            VariableGaussianPsf(21, 21, box, sigma=[2.0])


def test_double_gaussian_sigma2_zero_with_a_wing_is_refused():
    with pytest.raises(InvalidInputError, match=r"sigma2 must be positive and finite; got 0\.0 \(the wing's sigma, "
                                                r"used since b = 0\.5 > 0\); omit sigma2"):
        DoubleGaussianPsf(21, 21, 2.0, 0.0, 0.5)
    with pytest.raises(InvalidInputError, match=r"sigma2 must be positive and finite; got -1"):
        DoubleGaussianPsf(21, 21, 2.0, -1, 0.1)
    # only None means "the default"; with no wing (b = 0) sigma2 = 0 is LSST's "unused" and accepted
    assert DoubleGaussianPsf(21, 21, 2.0, None, 0.5).getSigma2() == 4.0
    assert DoubleGaussianPsf(21, 21, 2.0, 0.0, 0.0).getSigma2() == 4.0


def test_every_model_compares_by_value():
    import copy
    import pickle

    box = Box2I((0, 0), (100, 100))
    pairs = [(GaussianPsf(21, 21, 2.0), GaussianPsf(21, 21, 2.5)),
             (DoubleGaussianPsf(21, 21, 2.0, 4.0, 0.1), DoubleGaussianPsf(21, 21, 2.0, 4.0, 0.2)),
             (MoffatPsf(21, 21, 5.0, 3.0), MoffatPsf(21, 21, 5.0, 3.5)),
             (VariableGaussianPsf(21, 21, box, [2.0, 0.1, 0.0]), VariableGaussianPsf(21, 21, box, [2.0, 0.1, 0.1])),
             (ImagePsf(np.ones((3, 3))), ImagePsf(np.ones((3, 3)), pixel_scale=0.2)),
             (GaussianPsf(21, 21, 2.0).resized(11, 11), GaussianPsf(21, 21, 2.0).resized(13, 13))]
    for psf, other in pairs:
        for twin in (pickle.loads(pickle.dumps(psf)), copy.deepcopy(psf)):
            assert twin == psf and not twin != psf and hash(twin) == hash(psf), repr(psf)
        assert psf != other and len({psf, other, copy.deepcopy(psf)}) == 2, repr(psf)
    assert MoffatPsf(21, 21, 5, 3) == MoffatPsf(21, 21, 5.0, 3.0)

    class Mine(GaussianPsf):
        pass

    s = Mine(21, 21, 2.0)
    assert s == s and s == Mine(21, 21, 2.0) and hash(s) == hash(Mine(21, 21, 2.0))
    assert s != GaussianPsf(21, 21, 2.0) and GaussianPsf(21, 21, 2.0) != s  # another class: not equal
    # a user's Psf subclass has no known parameters: it equals only itself
    a, b = GrowingPsf(), GrowingPsf()
    assert a == a and a != b and len({a, b}) == 2


def test_a_subclass_redefining_its_model_compares_by_identity():
    """A GaussianPsf subclass with its own parameter and images compared equal (and hashed equal) whatever that
    parameter, through the model's key; it equals only itself now, unless it defines its own _eq_key."""
    from psfmatch.psf.analytic import elliptical_gaussian

    class Elliptical(GaussianPsf):
        def __init__(self, w, h, sigma, e1):
            super().__init__(w, h, sigma)
            self.e1 = e1

        def _kernel_image(self, x, y):
            s2 = self.getSigma() ** 2
            return elliptical_gaussian(self._w, self._h, s2 * (1 + self.e1), s2 * (1 - self.e1), 0.0)

    a, b = Elliptical(21, 21, 2.0, 0.0), Elliptical(21, 21, 2.0, 0.5)
    assert a == a and a != b and len({a, b}) == 2

    class Keyed(Elliptical):
        def _eq_key(self):
            return super()._eq_key(), self.e1

    assert Keyed(21, 21, 2.0, 0.5) == Keyed(21, 21, 2.0, 0.5) != Keyed(21, 21, 2.0, 0.0)


def test_image_psf_refuses_a_masked_array_instead_of_using_its_masked_pixels():
    yy, xx = np.mgrid[-7:8, -7:8]
    stamp = np.ma.array(np.exp(-(xx ** 2 + yy ** 2) / 8.0), mask=np.zeros((15, 15), bool))
    stamp.mask[0, 0] = True
    stamp.data[0, 0] = 50.0  # a cosmic ray the user masked: it took 2/3 of the PSF's flux
    with pytest.raises(InvalidInputError, match=r"fill the masked pixels first, e\.g\. ImagePsf\(arr\.filled\(0\)\)"):
        ImagePsf(stamp)
    assert ImagePsf(stamp.filled(0)).array[0, 0] == 0.0  # the remedy the message names


class WideGaussian(GaussianPsf):
    """A user's model that redefines the public computeKernelImage: a sigma 2.4 px Gaussian, not its 1.5 px."""

    def computeKernelImage(self, position=None):
        return GaussianPsf(21, 21, 2.4).computeKernelImage(position)


class HoleyGaussian(VariableGaussianPsf):
    """A varying model whose public computeKernelImage has no PSF in the upper-left corner (x < 100, y > 300)."""

    def computeKernelImage(self, position=None):
        x, y = position
        if x < 100 and y > 300:
            raise PsfEvaluationError(f"no PSF model at ({x}, {y})")
        return super().computeKernelImage(position)


class OnlyPublic(Psf):
    """A Psf subclass that implements only the public computeKernelImage: sigma 1.5 + x / 2000 px."""

    name = "OnlyPublic"

    def computeKernelImage(self, position=None):
        x, _ = position
        yy, xx = np.mgrid[-10:11, -10:11]
        return np.exp(-(xx ** 2 + yy ** 2) / (2 * (1.5 + x / 2000) ** 2))


def test_a_redefined_compute_kernel_image_is_what_the_batched_paths_and_the_fit_use():
    from psfmatch.cells import SpatialCellSet
    from psfmatch.diagnostics import survey_psfs
    from psfmatch.psf.base import compute_kernel_images

    wide = WideGaussian(21, 21, 1.5)
    positions = [(0.0, 0.0), (300.0, 200.0)]
    for stamp in wide.computeKernelImages(positions):  # were the parent's sigma 1.5 stamps
        assert measure_shape(stamp).sigma == pytest.approx(2.4, rel=1e-4)
    # computeImage shifts the redefined image, not the parent's _image_at
    img = wide.computeImage((10.3, 20.0))
    assert measure_shape(img).sigma == pytest.approx(2.4, rel=0.01)
    np.testing.assert_allclose(img, GaussianPsf(21, 21, 2.4).computeImage((10.3, 20.0)), atol=1e-6)
    bbox = Box2I((0, 0), (512, 512))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ModelPsfMatchTask().fitKernel(wide, GaussianPsf(31, 31, 2.6), bbox)
    for cand in fit.cellSet.candidates():
        assert measure_shape(cand.science).sigma == pytest.approx(2.4, rel=1e-4)
    survey = survey_psfs(wide, GaussianPsf(31, 31, 2.6), SpatialCellSet(bbox, 256, 256))
    assert all(measure_shape(s).sigma == pytest.approx(2.4, rel=1e-4) for s in survey.scienceStamps.values())

    # a varying model failing in a corner through its computeKernelImage: those candidates are rejected
    holey = HoleyGaussian(21, 21, bbox, sigma=[2.0, 0.3, 0.2])
    with pytest.raises(PsfEvaluationError, match=r"no PSF model at \(0\.0, 511\.0\)"):
        holey.computeKernelImages([(0.0, 511.0)])
    images, errors = compute_kernel_images(holey, [(200.0, 200.0), (0.0, 511.0)])
    assert images[1] is None and list(errors) == [1] and images[0].shape == (21, 21)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ModelPsfMatchTask().fitKernel(holey, GaussianPsf(31, 31, 2.6), bbox)
    assert fit.metadata["nCandidatesRejected"] == 2  # the cells at x = 0, y = 341 and 511

    # a Psf subclass with only the public method works through computeKernelImages (and computeImage) too
    mine = OnlyPublic()
    stack = mine.computeKernelImages([(0.0, 0.0), (1000.0, 0.0)])
    assert [round(measure_shape(s).sigma, 3) for s in stack] == [1.5, 2.0]
    assert round(measure_shape(mine.computeImage((1000.0, 0.0))).sigma, 3) == 2.0


def test_a_redefined_compute_kernel_image_failure_is_typed_and_names_the_position():
    class Broken(GaussianPsf):
        def computeKernelImage(self, position=None):
            if position[0] > 100:
                raise ValueError("outside the model")
            return super().computeKernelImage(position)

    with pytest.raises(PsfEvaluationError, match=r"GaussianPsf could not be evaluated at \(150, 2\): "
                                                 "ValueError: outside the model"):
        Broken(21, 21, 2.0).computeKernelImages([(1.0, 2.0), (150.0, 2.0)])


def test_unmodified_models_keep_the_vectorized_path(monkeypatch):
    psf = VariableGaussianPsf(21, 21, Box2I((0, 0), (100, 100)), [2.0, 0.3, 0.1])
    want = np.array([psf.computeKernelImage((x, 10.0)) for x in (0.0, 50.0, 99.0)])

    def one_by_one(*args):
        raise AssertionError("evaluated position by position")

    monkeypatch.setattr(VariableGaussianPsf, "_image_at", one_by_one)
    monkeypatch.setattr(Psf, "computeKernelImage", one_by_one)
    np.testing.assert_allclose(psf.computeKernelImages([(0.0, 10.0), (50.0, 10.0), (99.0, 10.0)]), want,
                               rtol=1e-12, atol=1e-15)


def test_a_redefined_compute_kernel_image_built_on_the_models_own_methods_does_not_recurse():
    """An override built on self.computeImage or self.computeKernelImages recursed without end once the batched
    paths went through the override: inside it, they serve the model's own images."""
    import math

    from psfmatch.geom import Point2D

    class PixelCentred(GaussianPsf):
        def computeKernelImage(self, position=None):
            x, y = self.getAveragePosition() if position is None else position
            return self.computeImage(Point2D(math.floor(x + 0.5), math.floor(y + 0.5)))

    class Batched(GaussianPsf):
        def computeKernelImage(self, position=None):
            p = self.getAveragePosition() if position is None else position
            return 2.0 * self.computeKernelImages([p])[0]

    plain = GaussianPsf(21, 21, 2.0).computeKernelImage((10.0, 10.0))
    for cls in (PixelCentred, Batched):
        psf = cls(21, 21, 2.0)
        np.testing.assert_allclose(psf.computeKernelImage((10.0, 10.0)) / (2.0 if cls is Batched else 1.0), plain,
                                   atol=1e-15)
        stack = psf.computeKernelImages([(10.0, 10.0), (30.0, 40.0)])  # through the override, unit sum
        np.testing.assert_allclose(stack[0], plain, atol=1e-15)
        assert psf.computeImage((10.5, 10.0)).shape == (21, 21)
