"""LSST's own ModelPsfMatchTask tests (lsst-reference section 5.1), restated for psfmatch's API.

Setup as in ip_diffim's test_modelPsfMatch.py: a 256x256 exposure whose PSF is
DoubleGaussianPsf(11, 11, 2.0), references DoubleGaussianPsf(n, n, 3.7), kernelSize 9.
"""

import numpy as np
import pytest

from psfmatch import (Box2I, Exposure, InvalidConfigError, KernelTooBigError, MissingPsfError, ModelPsfMatchConfig,
                      ModelPsfMatchTask)
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf


def make_exposure(metadata=None):
    rng = np.random.default_rng(3)
    img = rng.normal(size=(256, 256)).astype(np.float32)
    return Exposure(img, variance=np.ones((256, 256), np.float32), psf=DoubleGaussianPsf(11, 11, 2.0),
                    metadata=metadata)


def make_config(**fields):
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = 9
    config.kernel.active.kernelSizeMin = 9
    if "autoKernel" in ModelPsfMatchConfig._fields():
        config.autoKernel = False  # these tests pin LSST's behaviour
    for name, value in fields.items():
        if name in ("spatialKernelOrder",):
            setattr(config.kernel.active, name, value)
        else:
            setattr(config, name, value)
    return config


def test_too_big():
    config = make_config(doAutoPadPsf=False)
    config.kernel.active.kernelSize = 11
    task = ModelPsfMatchTask(config=config)
    with pytest.raises(ValueError, match=r"Kernel size \(11\) too big to match Psfs of size 11") as info:
        task.run(make_exposure(), DoubleGaussianPsf(11, 11, 3.7))
    assert isinstance(info.value, KernelTooBigError)
    msg = str(info.value)
    assert "kernel size to <= 9" in msg and "doAutoPadPsf=True" in msg and "padPsfBy to >= 2" in msg


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("kernel_sum", [0.5, 1.0, 2.7])
def test_match_kernel_sum(order, kernel_sum):
    config = make_config(spatialKernelOrder=order)
    result = ModelPsfMatchTask(config=config).run(make_exposure(), DoubleGaussianPsf(11, 11, 3.7),
                                                  kernelSum=kernel_sum)
    kernel = result.psfMatchingKernel
    for pos in [(0, 0), (64.0, 64.0), (200.5, 17.25), (255, 255), (128, 128)]:
        img = kernel.computeImage(pos, normalize=False)
        assert img.shape == (9, 9)
        assert abs(img.sum() - kernel_sum) < 1e-7
        assert abs(kernel.getSum(pos) - kernel_sum) < 1e-7
        assert abs(kernel.computeImage(pos, normalize=True).sum() - 1.0) < 1e-12
    assert kernel.isSpatiallyVarying() == (order > 0)
    assert result.metadata["spatialKernelOrder"] == order


def test_adjust_model_size():
    config = make_config(doAutoPadPsf=False)
    result = ModelPsfMatchTask(config=config).run(make_exposure(), DoubleGaussianPsf(13, 13, 3.7))
    psf = result.psfMatchedExposure.getPsf()
    assert psf.computeKernelImage((10, 10)).shape == (11, 11)
    assert psf.getSigma1() == 3.7


def test_pad_psf_auto():
    result = ModelPsfMatchTask(config=make_config()).run(make_exposure(), DoubleGaussianPsf(11, 11, 3.7))
    # nextOddInteger(9 * 1.4) = 13
    assert result.psfMatchedExposure.getPsf().computeKernelImage((0, 0)).shape == (13, 13)
    assert result.metadata["psfSize"] == 13


@pytest.mark.parametrize("pad, width", [(0, 11), (2, 13), (4, 15)])
def test_pad_psf_by(pad, width):
    config = make_config(doAutoPadPsf=False, padPsfBy=pad)
    result = ModelPsfMatchTask(config=config).run(make_exposure(), DoubleGaussianPsf(11, 11, 3.7))
    assert result.psfMatchedExposure.getPsf().computeKernelImage((0, 0)).shape == (width, width)


@pytest.mark.parametrize("pad", [1, 3, 5])
def test_pad_psf_by_odd_raises(pad):
    config = make_config(doAutoPadPsf=False)
    config.padPsfBy = pad
    with pytest.raises(ValueError, match=rf"Config padPsfBy \({pad} pixels\) must be even number") as info:
        ModelPsfMatchTask(config=config)
    assert isinstance(info.value, InvalidConfigError)


def test_propagate_metadata():
    md = {"visitInfo": {"exposureTime": 30.0, "date": "2026-11-25T03:00:00"}, "id": 7, "filter": "i",
          "photoCalib": {"calibrationMean": 1.23}, "custom": [1, 2, 3]}
    exposure = make_exposure(md)
    result = ModelPsfMatchTask(config=make_config()).run(exposure, DoubleGaussianPsf(13, 13, 3.7))
    out = result.psfMatchedExposure
    assert out.getVisitInfo() == md["visitInfo"]
    assert out.getId() == 7 and out.getFilter() == "i" and out.getPhotoCalib() == md["photoCalib"]
    assert out.metadata["custom"] == [1, 2, 3]
    assert out.metadata is not exposure.metadata
    assert out.getBBox() == exposure.getBBox()


def test_missing_psf():
    exposure = make_exposure()
    exposure.setPsf(None)
    with pytest.raises(RuntimeError, match="exposure does not contain a Psf model") as info:
        ModelPsfMatchTask(config=make_config()).run(exposure, DoubleGaussianPsf(11, 11, 3.7))
    assert isinstance(info.value, MissingPsfError)


def test_rank_deficient_setup_does_not_raise():
    """LSST's unit-test setup has 25 equations for 27 unknowns in its valid region; psfmatch solves it anyway."""
    config = make_config()
    config.kernel.active.fitRegion = "valid"
    result = ModelPsfMatchTask(config=config).run(make_exposure(), DoubleGaussianPsf(11, 11, 3.7))
    cands = list(result.kernelCellSet.candidates())
    assert all(c.rank < 26 for c in cands)  # rank deficient, recorded
    assert abs(result.psfMatchingKernel.getSum((5, 5)) - 1) < 1e-7


def test_lsst_habits_on_the_kernel_and_the_config(tmp_path):
    from psfmatch.geom import Extent2I, Point2I
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.8))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    kernel = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6)).psfMatchingKernel
    assert isinstance(kernel.getDimensions(), Extent2I) and kernel.getDimensions().getX() == 21
    assert isinstance(kernel.getCtr(), Point2I) and kernel.getCtr().getY() == 10
    assert kernel.getDimensions() == (21, 21)  # still a pair
    np.testing.assert_array_equal(kernel.computeImage(doNormalize=True), kernel.computeImage(normalize=True))
    assert isinstance(GaussianPsf(21, 21, 1.8).getDimensions(), Extent2I)
    # pex_config-style load and save, round trip
    config.kernel["DF"].lambdaScaling = 1e-3
    config.maxMemoryGiB = float("inf")
    config.save(tmp_path / "c.py")
    back = ModelPsfMatchConfig()
    back.load(tmp_path / "c.py")
    assert back == config and back.kernel["DF"].lambdaScaling == 1e-3


def test_config_equality_includes_the_explicit_fields():
    a, b = ModelPsfMatchConfig(), ModelPsfMatchConfig()
    b.kernel.active.kernelSize = 21  # the default value, set explicitly: autoKernel keeps it
    assert a.to_dict() == b.to_dict() and a != b
    a.kernel.active.kernelSize = 21
    assert a == b and a.copy() == b


def test_albasismode_says_when_the_automatic_kernel_chose_the_widths():
    from psfmatch.demo import demo_psf, demo_reference_psf
    bbox = Box2I((0, 0), (512, 512))
    md = ModelPsfMatchTask().fitKernel(demo_psf(bbox), demo_reference_psf(), bbox).metadata
    assert md["autoKernel"]["chosen"]["label"] == "moments" and md["ALBasisMode"] == "auto"
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    md = ModelPsfMatchTask(config=config).fitKernel(demo_psf(bbox), demo_reference_psf(), bbox).metadata
    assert md["ALBasisMode"] == "config"


def test_albasismode_is_auto_when_the_wing_stage_chose_the_widths():
    """The wing stage's widths (the moments' plus broad ones) were recorded as ALBasisMode "config"."""
    from psfmatch.psf import DoubleGaussianPsf, VariableGaussianPsf

    bbox = Box2I((0, 0), (512, 512))
    sci = VariableGaussianPsf(25, 25, bbox, [1.6, 0.2, 0.1], [0.05], [0.05])
    ref = DoubleGaussianPsf(23, 23, 3.27, 8.17, 0.1)  # LSST's production model PSF: a faint broad wing
    md = ModelPsfMatchTask().fitKernel(sci, ref, bbox).metadata
    assert md["autoKernel"]["chosen"]["label"] == "wing"
    assert md["ALBasisSigGauss"] != list(ModelPsfMatchConfig().kernel.active.alardSigGauss)
    assert md["ALBasisMode"] == "auto"


def test_a_reference_objects_own_resized_is_used():
    """LSST resizes the reference with its own resized(); padding an analytic model's small stamp cut its wings."""
    class Wide:
        def __init__(self, size):
            self.size = size

        def computeKernelImage(self, position):
            return GaussianPsf(self.size, self.size, 2.6).computeKernelImage(position)

        def resized(self, w, h):
            return Wide(w)

    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.8))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    result = ModelPsfMatchTask(config=config).run(exposure, Wide(15))
    out = result.psfMatchedExposure.getPsf().computeKernelImage((64, 64))
    np.testing.assert_allclose(out, GaussianPsf(31, 31, 2.6).computeKernelImage((64, 64)), atol=1e-15)
