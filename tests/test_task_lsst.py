"""LSST's own ModelPsfMatchTask tests (lsst-reference section 5.1), restated for psfmatch's API.

Setup as in ip_diffim's test_modelPsfMatch.py: a 256x256 exposure whose PSF is
DoubleGaussianPsf(11, 11, 2.0), references DoubleGaussianPsf(n, n, 3.7), kernelSize 9.
"""

import numpy as np
import pytest

from psfmatch import (Exposure, InvalidConfigError, KernelTooBigError, MissingPsfError, ModelPsfMatchConfig,
                      ModelPsfMatchTask)
from psfmatch.psf import DoubleGaussianPsf


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
