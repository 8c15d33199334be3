"""Progress bars on the long loops (drawn by tqdm when enabled; the CLI enables them on a terminal)."""

import numpy as np
import pytest

from psfmatch import Box2I, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch import progress
from psfmatch.convolve import convolve_masked_image
from psfmatch.image import MaskedImage
from psfmatch.psf import GaussianPsf

pytest.importorskip("tqdm", reason="tqdm is not installed (pip install 'psfmatch[progress]')")


@pytest.fixture
def kernel():
    bbox = Box2I((0, 0), (600, 600))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    return ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(21, 21, 1.8), GaussianPsf(31, 31, 2.6), bbox).kernel


def test_convolution_shows_progress_when_enabled(kernel, capsys):
    mi = MaskedImage(np.ones((600, 600), np.float32), variance=np.ones((600, 600), np.float32))
    progress.set_enabled(True)
    try:
        out = convolve_masked_image(mi, kernel, tile=128)
    finally:
        progress.set_enabled(False)
    err = capsys.readouterr().err
    assert "convolve image and variance" in err
    assert np.allclose(out.image[20:-20, 20:-20], 1.0, atol=1e-5)


def test_no_progress_by_default(kernel, capsys):
    mi = MaskedImage(np.ones((300, 300), np.float32), variance=np.ones((300, 300), np.float32))
    convolve_masked_image(mi, kernel, tile=128)
    assert "convolve" not in capsys.readouterr().err
