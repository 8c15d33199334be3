"""LSST Science Pipelines idioms on psfmatch objects: accepted where unambiguous, else a typed error naming both.

A PSF class given as the reference, afw's ``Kernel.computeImage(image, doNormalize, x, y)`` and
``getSpatialFunction(index)`` on the matching kernel, and candidate statuses given by name.
"""

import numpy as np
import pytest

from psfmatch import Box2I, CandidateStatus, Exposure, InvalidInputError, ModelPsfMatchTask
from psfmatch.cells import KernelCandidate
from psfmatch.kernel.spatial import SpatialFunction
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, VariableGaussianPsf, as_psf

BBOX = Box2I((0, 0), (256, 256))


@pytest.fixture(scope="module")
def fit():
    """A spatially varying fit: science sigma 1.65 to 1.95 px across the field, reference 2.6 px."""
    science = VariableGaussianPsf(21, 21, BBOX, sigma=(1.8, 0.1, 0.05))
    return ModelPsfMatchTask().fitKernel(science, GaussianPsf(31, 31, 2.6), BBOX)


@pytest.fixture(scope="module")
def kernel(fit):
    return fit.kernel


# --- a PSF class instead of a model ----------------------------------------------------------------

@pytest.mark.parametrize("cls", [GaussianPsf, DoubleGaussianPsf])
def test_reference_psf_class_is_refused_as_set_psf_does(cls):
    exposure = Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(21, 21, 1.8))
    with pytest.raises(InvalidInputError, match=rf"^referencePsfModel must be a PSF model, not the class "
                                                rf"{cls.__name__}; give an instance, e\.g\. GaussianPsf\(31, 31, 2\.6\)"):
        ModelPsfMatchTask().run(exposure, cls)


def test_as_psf_refuses_a_class_and_names_the_argument():
    class MyPsf:  # a duck-typed model: its class has computeKernelImage too
        def computeKernelImage(self, position):
            return GaussianPsf(11, 11, 1.5).computeKernelImage(position)

    with pytest.raises(InvalidInputError, match=r"^referencePsfModel must be a PSF model, not the class MyPsf; "):
        as_psf(MyPsf, who="referencePsfModel")
    with pytest.raises(InvalidInputError, match=r"^expected a PSF model, not the class GaussianPsf; give an instance"):
        as_psf(GaussianPsf)
    assert as_psf(MyPsf()).computeKernelImage((3, 4)).shape == (11, 11)  # an instance is still wrapped


# --- afw's Kernel.computeImage(image, doNormalize, x, y) ------------------------------------------

def test_compute_image_fills_an_image_in_place_and_returns_its_sum(kernel):
    k = kernel.getWidth()
    doubled = kernel.with_kernel_sum(2.0)
    k_image = np.zeros((k, k))
    total = doubled.computeImage(k_image, False)
    np.testing.assert_array_equal(k_image, doubled.computeImage())  # the default position: the box's centre
    assert total == pytest.approx(2.0, abs=1e-7) and isinstance(total, float)
    # afw's extra positionals x, y; the sum returned is the one before normalization, as afw's
    total = doubled.computeImage(k_image, True, 10.0, 20.0)
    np.testing.assert_array_equal(k_image, doubled.computeImage((10.0, 20.0), True))
    assert total == pytest.approx(2.0, abs=1e-7) and k_image.sum() == pytest.approx(1.0, abs=1e-12)
    assert not np.allclose(doubled.computeImage((10.0, 20.0)), doubled.computeImage((240.0, 200.0)), atol=1e-4)


def test_compute_image_afw_keywords(kernel):
    k = kernel.getWidth()
    at = kernel.computeImage((10.0, 20.0))
    np.testing.assert_array_equal(kernel.computeImage(doNormalize=False, x=10.0, y=20.0), at)
    np.testing.assert_array_equal(kernel.computeImage(x=10, y=20), at)
    k_image = np.zeros((k, k), np.float32)
    assert kernel.computeImage(image=k_image, doNormalize=False, x=10.0, y=20.0) == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(k_image, at, rtol=1e-6, atol=1e-7)
    k_image = np.zeros((k, k))
    kernel.computeImage(k_image, False, 10.0, y=20.0)
    np.testing.assert_array_equal(k_image, at)

    class Image:  # afw's ImageD: the pixels are its .array
        array = np.zeros((k, k))

    kernel.computeImage(Image(), False, 10.0, 20.0)
    np.testing.assert_array_equal(Image.array, at)


@pytest.mark.parametrize("make, match", [
    (lambda k: np.zeros((k + 2, k + 2)), r"fills an image of the kernel's dimensions, (\d+)x\1 .*; got an array "
                                         r"of shape \(\d+, \d+\)$"),
    (lambda k: np.zeros((k, k), int), r"fills a floating-point image; got dtype int64"),
    (lambda k: np.broadcast_to(np.zeros(1), (k, k)), r"cannot fill a read-only array"),
])
def test_compute_image_refuses_an_image_it_cannot_fill(kernel, make, match):
    image = make(kernel.getWidth())
    with pytest.raises(InvalidInputError, match=match) as info:
        kernel.computeImage(image, False)
    assert "0., 0." not in str(info.value) and len(str(info.value)) < 300  # the array is not listed


def test_compute_image_leaves_the_image_alone_when_it_fails(kernel):
    k = kernel.getWidth()
    k_image = np.full((k, k), 7.0)
    with pytest.raises(InvalidInputError, match=r"cannot normalize the kernel: its sum is 0"):
        kernel.with_kernel_sum(0.0).computeImage(k_image, True)
    assert np.all(k_image == 7.0)


@pytest.mark.parametrize("call, match", [
    (lambda kern: kern.computeImage((10.0, 20.0), False, 10.0, 20.0),
     r"takes 2 more positional argument\(s\) \(x, y\) only after an image to fill, as afw's computeImage\(image, "
     r"doNormalize, x, y\); to get the image at a position give computeImage\(\(x, y\), normalize\)"),
    (lambda kern: kern.computeImage(x=10.0), r"computeImage needs both x and y; got only x"),
    (lambda kern: kern.computeImage((1.0, 2.0), x=10.0, y=20.0), r"give the position once"),
    (lambda kern: kern.computeImage(np.zeros((kern.getWidth(),) * 2), False, 1.0, 2.0, 3.0),
     r"takes at most x and y after doNormalize; got 3 more"),
    (lambda kern: kern.computeImage(np.zeros((kern.getWidth(),) * 2), False, 1.0, x=2.0),
     r"x or y both as a positional argument and as a keyword"),
    (lambda kern: kern.computeImage((1.0, 2.0), image=np.zeros((kern.getWidth(),) * 2)),
     r"both an image to fill and a position"),
    (lambda kern: kern.computeImage(np.zeros((3, kern.getWidth(), kern.getWidth()))),
     r"position must be an \(x, y\) pair; got an array of shape \(3, \d+, \d+\) \(afw's computeImage\(image, "
     r"doNormalize\) fills a 2-d float array"),
    (lambda kern: kern.computeImage(x=np.zeros(9), y=1.0), r"x must be a number; got an array of shape \(9,\)"),
    (lambda kern: kern.computeImage(x=float("nan"), y=1.0), r"x must be finite; got nan"),
])
def test_compute_image_ambiguous_forms_name_both(kernel, call, match):
    with pytest.raises(InvalidInputError, match=match):
        call(kernel)


# --- afw's getSpatialFunction(index), getSpatialFunctionList() -------------------------------------

def test_spatial_function_of_a_parameter(kernel):
    assert kernel.isSpatiallyVarying()
    assert isinstance(kernel.getSpatialFunction(), SpatialFunction)  # psfmatch's form: the shared terms
    n = kernel.getNKernelParameters()
    functions = kernel.getSpatialFunctionList()
    assert len(functions) == n
    for x, y in [(10.0, 20.0), (200.0, 50.0)]:
        params = kernel.getKernelParameters((x, y))
        np.testing.assert_allclose([f(x, y) for f in functions], params, rtol=1e-12, atol=1e-15)
        assert kernel.getSpatialFunction(3)(x, y) == pytest.approx(params[3], rel=1e-12, abs=1e-15)
    xs, ys = np.array([10.0, 200.0]), np.array([20.0, 50.0])
    np.testing.assert_allclose(functions[5](xs, ys), [kernel.getKernelParameters((a, b))[5] for a, b in zip(xs, ys)],
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(functions[2].getParameters(), kernel.getSpatialParameters()[2])
    assert functions[2].getNParameters() == kernel.getNSpatialParameters()


@pytest.mark.parametrize("index", [-1, 10**6, 1.5, "0", True])
def test_spatial_function_index_is_checked(kernel, index):
    n = kernel.getNKernelParameters()
    with pytest.raises(InvalidInputError, match=rf"getSpatialFunction\(index\) takes a kernel parameter index, an "
                                                rf"integer from 0 to {n - 1}; got {index!r} \(getSpatialFunction\(\) "
                                                r"without an index returns the spatial function"):
        kernel.getSpatialFunction(index)


# --- candidate statuses by name -------------------------------------------------------------------

def test_candidates_by_status_name(fit):
    cells = fit.cellSet
    good = list(cells.candidates(CandidateStatus.GOOD))
    assert len(good) == len(list(cells.candidates())) > 1
    assert list(cells.candidates("GOOD")) == good and list(cells.candidates("good")) == good
    assert list(cells.candidates("BAD")) == []


def test_unknown_status_is_refused_with_the_valid_ones(fit):
    valid = (r"must be one of CandidateStatus\.GOOD, CandidateStatus\.BAD, CandidateStatus\.UNKNOWN "
             r"\(or the names 'GOOD', 'BAD', 'UNKNOWN'\); got ")
    with pytest.raises(InvalidInputError, match=valid + "'GODO'"):
        fit.cellSet.candidates("GODO")  # at the call, before anything is iterated
    cand = KernelCandidate(0, 1.0, 2.0)
    with pytest.raises(InvalidInputError, match=valid + "'GODO'"):
        cand.setStatus("GODO", "typo")
    assert cand.getStatus() is CandidateStatus.UNKNOWN
    with pytest.raises(InvalidInputError, match=valid + "3"):
        KernelCandidate(0, 1.0, 2.0, status=3)
    cand.setStatus("bad", "demo")
    assert cand.getStatus() is CandidateStatus.BAD and cand.reason == "demo"
    assert KernelCandidate(1, 1.0, 2.0, status="GOOD").getStatus() is CandidateStatus.GOOD


def test_spatial_function_of_a_parameter_checks_its_positions(kernel):
    """KernelParameterFunction evaluated a string position into a bare ValueError and NaN or inf into NaN."""
    f = kernel.getSpatialFunction(1)
    for x, message in (("a", r"getSpatialFunction\(1\) needs numeric x and y; got 'a' and 1\.0"),
                       (np.nan, r"getSpatialFunction\(1\) needs finite positions; position 0 is \(nan, 1\.0\)"),
                       (np.inf, r"getSpatialFunction\(1\) needs finite positions; position 0 is \(inf, 1\.0\)")):
        with pytest.raises(InvalidInputError, match=message):
            f(x, 1.0)
    with pytest.raises(InvalidInputError, match=r"needs x and y of the same length \(1-d\); got shapes \(2,\) and \(3,\)"):
        f([1.0, 2.0], [1.0, 2.0, 3.0])
    assert f(10.0, 20.0) == pytest.approx(kernel.getKernelParameters((10.0, 20.0))[1], rel=1e-12)
    both = f([10.0, 30.0], [20.0, 40.0])
    assert both.shape == (2,) and both[1] == pytest.approx(kernel.getKernelParameters((30.0, 40.0))[1], rel=1e-12)


@pytest.mark.parametrize("obj, kind", [("gaussian:sigma=2.6", "str"), (np.ones((5, 5)), "ndarray")])
def test_a_reference_without_computekernelimage_names_the_argument(obj, kind):
    exposure = Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(21, 21, 1.8))
    with pytest.raises(InvalidInputError, match=rf"^referencePsfModel must be a PSF model: a PSF model needs a "
                                                rf"computeKernelImage\(position\) method; {kind} has none \(give e\.g\. "
                                                r"GaussianPsf\(31, 31, 2\.6\), or read a model file with read_psf\)$"):
        ModelPsfMatchTask().run(exposure, obj)
