"""Optional adapters: GalSim objects and Piff models (each tested only when its package is installed)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from psfmatch.errors import InvalidInputError, MissingDependencyError, MissingFileError
from psfmatch.moments import measure_shape
from psfmatch.psf import GalSimPsf, PiffPsf, read_psfex
from psfmatch.psf.readers import identify_psf_format

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PIFF_FILE = DATA / "piff" / "rmjarvis__Piff" / "D00240560_r_c01_r2362p01_piff.fits"
DES = DATA / "psfex" / "GalSim-developers__GalSim" / "DECam_00154912_12_psfcat.psf"

try:
    import galsim
    import galsim.des
except ImportError:
    galsim = None
try:
    import piff
except ImportError:
    piff = None

needs_galsim = pytest.mark.skipif(galsim is None, reason="GalSim is not installed (pip install 'psfmatch[galsim]')")
needs_piff = pytest.mark.skipif(piff is None or galsim is None,
                                reason="Piff is not installed (pip install 'psfmatch[piff]')")


def test_importing_psfmatch_does_not_import_galsim_or_piff():
    code = "import sys, psfmatch, psfmatch.psf, psfmatch.io; print('galsim' in sys.modules, 'piff' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_packages_give_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "galsim", None)  # makes "import galsim" fail
    monkeypatch.setitem(sys.modules, "piff", None)
    with pytest.raises(MissingDependencyError, match=r"needs the optional package 'galsim'.*pip install "
                                                     r"'psfmatch\[galsim\]'") as info:
        GalSimPsf(object(), 0.2)
    assert isinstance(info.value, ImportError)
    with pytest.raises(MissingDependencyError, match=r"pip install 'psfmatch\[piff\]'"):
        PiffPsf("some.piff")


def test_piff_object_without_draw_is_rejected():
    with pytest.raises(InvalidInputError, match="PiffPsf needs a path or a piff.PSF"):
        PiffPsf(object())


@pytest.mark.skipif(not PIFF_FILE.is_file(), reason=f"shared Piff file not found at {PIFF_FILE}")
def test_real_piff_file_is_identified_without_reading_it():
    # identification reads headers only (the file's WCS is pickled: it is never loaded here)
    assert identify_psf_format(PIFF_FILE)[0] == "piff"


# ---------------------------------------------------------------------------
# GalSim


@needs_galsim
def test_galsim_profile_is_drawn_as_an_effective_psf():
    psf = GalSimPsf(galsim.Gaussian(sigma=0.5), pixel_scale=0.25, stamp_size=31)
    k = psf.computeKernelImage((100.0, 100.0))
    assert k.shape == (31, 31) and k.sum() == pytest.approx(1.0)
    q = measure_shape(k)
    # 2 px Gaussian convolved with the pixel (variance 1/12)
    assert q.sigma == pytest.approx(math.sqrt(4 + 1 / 12), rel=2e-3)
    assert abs(q.x) < 1e-6 and abs(q.y) < 1e-6
    no_pixel = GalSimPsf(galsim.Gaussian(sigma=0.5), pixel_scale=0.25, stamp_size=31, method="no_pixel")
    assert measure_shape(no_pixel.computeKernelImage()).sigma == pytest.approx(2.0, rel=1e-3)
    assert not psf.isSpatiallyVarying()


@needs_galsim
def test_galsim_default_stamp_and_subpixel_image():
    psf = GalSimPsf(galsim.Moffat(beta=3.0, fwhm=0.9), pixel_scale=0.2)
    w, h = psf.getDimensions()
    assert w % 2 == 1 and w == h
    img = psf.computeImage((10.3, 20.6))
    bbox = psf.computeImageBBox((10.3, 20.6))
    ys, xs = np.mgrid[bbox.getMinY():bbox.getMaxY() + 1, bbox.getMinX():bbox.getMaxX() + 1]
    q = measure_shape(img)
    assert q.x == pytest.approx(0.3, abs=1e-3) and q.y == pytest.approx(-0.4, abs=1e-3)
    assert (img * xs).sum() == pytest.approx(10.3, abs=0.02)
    assert psf.resized(11, 15).computeKernelImage().shape == (15, 11)


@needs_galsim
def test_galsim_factory_varies_across_the_field():
    psf = GalSimPsf(lambda x, y: galsim.Gaussian(sigma=0.4 + 0.2 * x / 1000.0), pixel_scale=0.2, stamp_size=25,
                    average_position=(500.0, 500.0))
    assert psf.isSpatiallyVarying() and psf.getAveragePosition() == (500.0, 500.0)
    s0 = measure_shape(psf.computeKernelImage((0.0, 0.0))).sigma
    s1 = measure_shape(psf.computeKernelImage((1000.0, 0.0))).sigma
    assert s0 == pytest.approx(math.sqrt(4 + 1 / 12), rel=3e-3) and s1 == pytest.approx(math.sqrt(9 + 1 / 12),
                                                                                          rel=3e-3)


@needs_galsim
@pytest.mark.skipif(not DES.is_file(), reason=f"shared PSFEx data not found at {DES}")
def test_galsim_des_psfex_through_the_adapter_equals_psfex_reader():
    des = galsim.des.DES_PSFEx(str(DES))
    wrapped = GalSimPsf(lambda x, y: des.getPSF(galsim.PositionD(x + 1, y + 1)), pixel_scale=1.0, stamp_size=25,
                        method="no_pixel")
    mine = read_psfex(DES)
    for pos in [(500.0, 600.0), (1800.0, 3500.0)]:
        a, b = wrapped.computeKernelImage(pos), mine.computeKernelImage(pos)
        assert np.abs(a - b).max() < 2e-5 * b.max()


@needs_galsim
def test_galsim_subclass_is_resized_with_its_own_images():
    class Sheared(GalSimPsf):
        def _draw(self, x, y, dx, dy):
            return super()._draw(x, y, dx, dy) ** 2  # a narrower profile than the wrapped one

    psf = Sheared(galsim.Gaussian(sigma=0.4), 0.2, stamp_size=25)
    small = psf.resized(15, 15)
    from psfmatch.psf.base import pad_or_crop

    want = pad_or_crop(psf.computeKernelImage((0, 0)), 15, 15)
    np.testing.assert_allclose(small.computeKernelImage((0, 0)), want / want.sum(), rtol=1e-12, atol=1e-15)
    assert small.computeShape((0, 0)).sigma == pytest.approx(2.0 / math.sqrt(2), rel=0.02)  # not 2 px


@needs_galsim
def test_galsim_argument_checks():
    with pytest.raises(InvalidInputError, match="pixel_scale must be a positive number"):
        GalSimPsf(galsim.Gaussian(sigma=1.0), 0.0)
    with pytest.raises(InvalidInputError, match="method must be 'auto'"):
        GalSimPsf(galsim.Gaussian(sigma=1.0), 0.2, method="fft")
    with pytest.raises(InvalidInputError, match="gsobject must be a galsim.GSObject or a callable"):
        GalSimPsf(3.0, 0.2)
    with pytest.raises(InvalidInputError, match="stamp width must be a positive odd integer"):
        GalSimPsf(galsim.Gaussian(sigma=1.0), 0.2, stamp_size=20)
    with pytest.raises(InvalidInputError, match=r"stamp_size must be an odd integer or a \(width, height\) pair "
                                                r"of odd integers; got \(25,\)"):
        GalSimPsf(galsim.Gaussian(sigma=1.0), 0.2, stamp_size=(25,))
    with pytest.raises(InvalidInputError, match="stamp height must be a positive odd integer; got nan"):
        GalSimPsf(galsim.Gaussian(sigma=1.0), 0.2, stamp_size=(25, float("nan")))
    bad = GalSimPsf(lambda x, y: "not a profile", 0.2, stamp_size=11)
    from psfmatch.errors import PsfEvaluationError

    with pytest.raises(PsfEvaluationError, match="the GalSim factory returned str"):
        bad.computeKernelImage((1.0, 2.0))


@needs_galsim
def test_galsim_factory_failing_at_the_average_position_is_a_typed_error():
    def des_like(x, y):  # a model on a 1-based pixel domain, as DES_PSFEx.getPSF is
        if not (1 <= x <= 2048 and 1 <= y <= 4096):
            raise ValueError(f"position ({x}, {y}) is outside the model's domain")
        return galsim.Gaussian(sigma=0.4)

    with pytest.raises(InvalidInputError, match=r"GalSimPsf sizes its stamp from the profile at average_position "
                                                r"\(0, 0\), where the factory failed: ValueError: position "
                                                r"\(0\.0, 0\.0\) is outside the model's domain; pass "
                                                r"average_position= .*or stamp_size=") as info:
        GalSimPsf(des_like, pixel_scale=0.263)
    assert isinstance(info.value.__cause__, ValueError)
    # either remedy works
    assert GalSimPsf(des_like, 0.263, average_position=(1024, 2048)).computeKernelImage((1024, 2048)).sum() \
        == pytest.approx(1.0)
    assert GalSimPsf(des_like, 0.263, stamp_size=15).computeKernelImage((10, 10)).shape == (15, 15)


@needs_galsim
def test_galsim_subclass_redefining_compute_kernel_image_varies():
    class Growing(GalSimPsf):  # a constant profile, made to vary by the subclass's public method
        def computeKernelImage(self, position=None):
            x, y = position
            return GalSimPsf(galsim.Gaussian(sigma=0.4 + 0.2 * x / 1000), 0.2, stamp_size=25).computeKernelImage()

    psf = Growing(galsim.Gaussian(sigma=0.4), 0.2, stamp_size=25)
    assert psf.isSpatiallyVarying()
    s0, s1 = (measure_shape(s).sigma for s in psf.computeKernelImages([(0.0, 0.0), (1000.0, 0.0)]))
    assert s0 == pytest.approx(math.sqrt(4 + 1 / 12), rel=3e-3) and s1 == pytest.approx(math.sqrt(9 + 1 / 12),
                                                                                          rel=3e-3)


# ---------------------------------------------------------------------------
# Piff


@pytest.fixture(scope="module")
def piff_model():
    """A Piff PSF fitted to noiseless Gaussian stars (a 1-2 s fit)."""
    scale = 0.26
    wcs = galsim.PixelScale(scale)
    truth = galsim.Gaussian(sigma=0.6).shear(g1=0.05, g2=-0.03)
    image = galsim.ImageD(256, 256, wcs=wcs)
    weight = galsim.ImageD(image.bounds, init_value=1e6)
    rng = np.random.default_rng(3)
    stars = []
    for x, y in rng.uniform(20, 236, size=(10, 2)):
        b = galsim.BoundsI(int(x) - 12, int(x) + 12, int(y) - 12, int(y) + 12)
        truth.drawImage(image=image[b], center=galsim.PositionD(x, y), add_to_image=True)
        stars.append(piff.Star(piff.StarData(image[b], galsim.PositionD(x, y), weight=weight[b]), None))
    model = piff.SimplePSF(piff.GSObjectModel(galsim.Gaussian(sigma=1.0), include_pixel=True), piff.Mean())
    model.fit(stars, {0: wcs}, None)
    return model, truth, scale


@needs_piff
def test_piff_object_and_file(piff_model, tmp_path):
    model, truth, scale = piff_model
    expected = truth.drawImage(nx=25, ny=25, scale=scale).array
    expected = expected / expected.sum()
    psf = PiffPsf(model, chipnum=0)
    k = psf.computeKernelImage((127.0, 127.0))
    assert k.shape == (25, 25) and k.sum() == pytest.approx(1.0)
    assert np.abs(k - expected).max() < 2e-3 * expected.max()
    q = measure_shape(k)
    assert abs(q.x) < 0.01 and abs(q.y) < 0.01
    assert psf.getAveragePosition()[0] == pytest.approx(np.mean([s.image_pos.x for s in model.stars]) - 1)
    path = tmp_path / "model.piff"
    model.write(str(path))
    from psfmatch.psf import read_psf

    from_file = read_psf(path, chipnum=0, stamp_size=21)  # sniffed as "piff"
    assert isinstance(from_file, PiffPsf)
    np.testing.assert_allclose(from_file.computeKernelImage((60.0, 80.0)),
                               PiffPsf(model, chipnum=0, stamp_size=21).computeKernelImage((60.0, 80.0)), atol=1e-12)
    assert psf.resized(31, 31).computeKernelImage((5.0, 5.0)).shape == (31, 31)
    assert psf.resized(31, 33).computeKernelImage((5.0, 5.0)).shape == (33, 31)
    img = psf.computeImage((100.25, 90.75))
    q = measure_shape(img)
    assert q.x == pytest.approx(0.25, abs=0.01) and q.y == pytest.approx(-0.25, abs=0.01)


@needs_piff
def test_piff_argument_checks(piff_model, tmp_path):
    model, _, _ = piff_model
    with pytest.raises(InvalidInputError, match="Piff draws square stamps"):
        PiffPsf(model, stamp_size=(21, 23))
    with pytest.raises(InvalidInputError, match="origin must be 0 or 1"):
        PiffPsf(model, origin=3)
    with pytest.raises(MissingFileError, match="does not exist"):
        PiffPsf(tmp_path / "missing.piff")


@needs_galsim
def test_galsim_psf_pickles_and_copies():
    import copy
    import pickle

    psf = GalSimPsf(galsim.Gaussian(sigma=0.4), pixel_scale=0.2, stamp_size=25)
    for twin in (pickle.loads(pickle.dumps(psf)), copy.deepcopy(psf)):
        assert type(twin) is GalSimPsf and twin == psf and hash(twin) == hash(psf)
        np.testing.assert_array_equal(twin.computeImage((3.3, 4.6)), psf.computeImage((3.3, 4.6)))
    assert psf != GalSimPsf(galsim.Gaussian(sigma=0.5), pixel_scale=0.2, stamp_size=25)
    assert psf != GalSimPsf(galsim.Gaussian(sigma=0.4), pixel_scale=0.2, stamp_size=25, method="no_pixel")


@needs_galsim
def test_galsim_factory_failure_in_compute_image_names_the_position():
    from psfmatch.errors import PsfEvaluationError

    def factory(x, y):
        if x > 1000:
            raise ValueError("outside the focal-plane model")
        return galsim.Gaussian(sigma=0.4)

    psf = GalSimPsf(factory, 0.2, stamp_size=25)
    for method in (psf.computeImage, psf.computeKernelImage):
        with pytest.raises(PsfEvaluationError, match=r"GalSimPsf could not be evaluated at \(1500\.3, 10\): "
                                                     "ValueError: outside the focal-plane model"):
            method((1500.3, 10.0))
    with pytest.raises(PsfEvaluationError, match=r"at \(5, 5\): InvalidInputError: the GalSim factory returned "
                                                 "str"):
        GalSimPsf(lambda x, y: "not a profile", 0.2, stamp_size=25).computeImage((5.0, 5.0))


@needs_galsim
def test_a_galsim_psf_drawn_on_other_pixels_warns_with_its_own_remedy():
    """The pixel-scale warning told a GalSimPsf to be resampled with read_image_psf, which does not apply to it."""
    import warnings

    from astropy.wcs import WCS

    from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.errors import PsfMatchWarning
    from psfmatch.psf import GaussianPsf

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.263 / 3600, 0.263 / 3600]  # DECam's pixels
    wcs.wcs.crval = [10.0, 20.0]
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = 11
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 48
    img = np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32)
    for scale, warns in ((0.2, True), (0.263, False)):
        psf = GalSimPsf(galsim.Gaussian(sigma=0.4), pixel_scale=scale, stamp_size=21)
        exposure = Exposure(img, variance=np.ones_like(img), psf=psf, wcs=wcs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 3.0))
        said = [str(w.message) for w in caught if w.category is PsfMatchWarning]
        assert bool(said) is warns, (scale, said)
        if warns:
            assert said[0] == ("the science PSF (a GalSimPsf) has pixels of 0.2 arcsec, the exposure's WCS 0.263 "
                               "arcsec: the PSF is matched in the exposure's pixels, so it must be sampled on them; "
                               "make the GalSimPsf with pixel_scale=0.263 (the exposure's)")
