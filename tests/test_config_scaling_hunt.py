"""Time and memory of non-default configurations: counts and tracemalloc peaks against the task's own estimates.

No wall-time assertions: each check is a peak of ``tracemalloc`` (deterministic for a given code path)
compared with :func:`psfmatch.task.estimate_fit_memory` / :func:`psfmatch.convolve.estimate_memory`, or an
exception raised before anything large is allocated.
"""

import tracemalloc

import numpy as np
import pytest

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.convolve import convolve_masked_image, default_workers, estimate_memory
from psfmatch.demo import demo_psf, demo_reference_psf
from psfmatch.errors import MemoryLimitError
from psfmatch.geom import Box2I
from psfmatch.task import estimate_fit_memory

MiB = 2 ** 20


def _config(name="AL", **kernel):
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.name = name
    for key, value in kernel.items():
        setattr(config.kernel.active, key, value)
    return config


def _fit_peak(config, size):
    """(fit, tracemalloc peak in bytes) of fitKernel of the demo PSF over a size x size box."""
    bbox = Box2I((0, 0), (size, size))
    task = ModelPsfMatchTask(config=config)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fit = task.fitKernel(demo_psf(bbox), demo_reference_psf(), bbox)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return fit, peak


def test_alard_lupton_fit_memory_grows_linearly_with_candidates_and_stays_under_its_estimate():
    """Small cells (32 px): 256 then 1024 candidates.  Nothing quadratic in the candidates, and the task's
    preflight estimate (the larger of both stamps, 31 px) bounds each peak."""
    config = _config(sizeCellX=32, sizeCellY=32)
    peaks, estimates = [], []
    for size in (512, 1024):
        fit, peak = _fit_peak(config, size)
        n = fit.metadata["nCells"]
        assert n == (size // 32) ** 2
        peaks.append(peak)
        estimates.append(estimate_fit_memory(config, n, 31)[0])
        assert peak <= estimates[-1]
    # 4 times the candidates: at most 4 times the memory (plus the 16 MiB allowance of small arrays); a
    # quadratic term (pairs of candidates) would give 16 times
    assert peaks[1] <= 4 * peaks[0] + 16 * MiB


def test_delta_function_fit_over_the_limit_is_refused_before_its_normal_equations_are_allocated():
    """A 2048 x 2048 delta-function fit (256 candidates of 441 x 441 normal equations, four copies: 1.5 GiB)
    under maxMemoryGiB = 1: MemoryLimitError naming the normal equations, and nothing big allocated."""
    config = _config("DF")
    config.maxMemoryGiB = 1.0
    bbox = Box2I((0, 0), (2048, 2048))
    task = ModelPsfMatchTask(config=config)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError, match=r"fitting the kernel needs about 1\.5\d* GiB \(.*normal equations "
                                                   r"1\.5 GiB.*256 candidate\(s\).*more than config\.maxMemoryGiB = 1 "
                                                   r"GiB\. Raise maxMemoryGiB"):
            task.fitKernel(demo_psf(bbox), demo_reference_psf(), bbox)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB


def test_order_five_float64_convolution_stays_under_its_estimate():
    """Order 5: 21 image terms and 231 exact-variance terms; float64 planes.  The convolution's peak stays
    under estimate_memory, which the task compares with maxMemoryGiB."""
    config = _config(spatialKernelOrder=5, sizeCellX=64, sizeCellY=64)
    size = 512
    bbox = Box2I((0, 0), (size, size))
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 10.0, (size, size))
    exposure = Exposure(image, variance=np.full((size, size), 100.0), psf=demo_psf(bbox))
    fit = ModelPsfMatchTask(config=config).fitKernel(exposure.getPsf(), demo_reference_psf(), bbox)
    assert fit.metadata["spatialKernelOrder"] == 5
    need = estimate_memory((size, size), fit.kernel.getWidth(), 21, 231, config.convolveTileSize, 8,
                           default_workers())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = convolve_masked_image(exposure, fit.kernel, tile=config.convolveTileSize, max_memory_bytes=need)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= need
    # and the result is a convolution: the flat sky stays at its level (unit-sum kernel) away from the border
    h = fit.kernel.getWidth() // 2
    assert np.nanmean(out.image[h:-h, h:-h]) == pytest.approx(100.0, rel=1e-3)


def test_delta_function_fit_without_pca_at_high_spatial_order_keeps_to_max_memory():
    """DF, usePcaForSpatialKernel=False, 11 px kernel, order 5 asked (4 fitted on a 4 x 4 grid): 120 x 15 = 1800
    spatial unknowns, a 25 MiB Gram held in about four copies.  With maxMemoryGiB 10 % above the task's own
    estimate, the fit must keep under the limit; it peaked at about 2.8 times the estimate before the estimate
    counted the spatial system (order 5, 21 px kernel, 1024 px: 2.1 GiB under maxMemoryGiB = 0.5, 50 s)."""
    config = _config("DF", kernelSize=11, usePcaForSpatialKernel=False, spatialKernelOrder=5)
    size = 512
    need = estimate_fit_memory(config, (size // 128) ** 2, 31)[0]
    config.maxMemoryGiB = 1.1 * need / 2 ** 30
    fit, peak = _fit_peak(config, size)  # (the estimate is under the limit: no MemoryLimitError)
    assert fit.metadata["nSpatialUnknowns"] == 120 * 15
    assert peak <= config.maxMemoryGiB * 2 ** 30


def test_a_dense_qa_keeps_the_fit_within_max_memory():
    """qaPositionsPerCandidate = 16 ("raise it for a denser check"): 576 candidates, 9216 held-out positions.  With
    maxMemoryGiB 10 % above the task's own estimate the fit must keep under it; it peaked at about 1.3 times the
    estimate (1.5 at 16384 positions) before the estimate counted the held-out survey's stacks."""
    config = _config(sizeCellX=32, sizeCellY=32)
    config.qaPositionsPerCandidate = 16.0
    config.qaMaxPositions = 10 ** 6
    size = 768
    need = estimate_fit_memory(config, (size // 32) ** 2, 31)[0]
    config.maxMemoryGiB = 1.1 * need / 2 ** 30
    fit, peak = _fit_peak(config, size)  # (the estimate is under the limit: no MemoryLimitError)
    assert fit.metadata["qa"]["between"]["n"] == 16 * (size // 32) ** 2
    assert peak <= config.maxMemoryGiB * 2 ** 30
