"""Tests that kill the surviving mutants of the command-line and display layer (cli, display, debug, progress).

Each test pins a behaviour that a mutation of that layer changed without any other test noticing:
PSF-spec defaults and limits, what the subcommands pass on and write, and the numbers of the QA report.
"""

import math

import numpy as np
import pytest

from psfmatch.cli import main, parse_psf_spec
from psfmatch.errors import InvalidInputError
from psfmatch.psf import GaussianPsf


def _run(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def _moment_sigma(img):
    """Second-moment sigma (the mean of x and y) of a centred stamp."""
    img = np.asarray(img, dtype=float)
    ny, nx = img.shape
    y, x = np.mgrid[:ny, :nx]
    f = img.sum()
    cx, cy = (img * x).sum() / f, (img * y).sum() / f
    return math.sqrt(0.5 * ((img * (x - cx) ** 2).sum() + (img * (y - cy) ** 2).sum()) / f)


# ---------------------------------------------------------------------------
# PSF specs: defaults and limits


def test_a_stamp_exactly_at_the_size_limit_is_accepted_and_one_beyond_is_refused():
    """8 sigma + 1 = 4095 px is the largest stamp: it is built, a hair broader is refused (the limit is <=)."""
    from psfmatch.psf.psfex import MAX_STAMP_SIZE

    sigma = (MAX_STAMP_SIZE - 1) / 8
    psf = parse_psf_spec(f"gaussian:sigma={sigma!r}")
    assert tuple(psf.getDimensions()) == (MAX_STAMP_SIZE, MAX_STAMP_SIZE)
    with pytest.raises(InvalidInputError, match=r"too broad.*4095 px limit"):
        parse_psf_spec(f"gaussian:sigma={sigma + 0.01!r}")


def test_a_narrow_analytic_psf_gets_a_stamp_of_at_least_11_px():
    """sigma=0.5 implies 5 px (8 sigma + 1), but the stamp is at least 11 px so that the profile's wings and a
    shift of the centroid stay on it."""
    for spec in ("gaussian:sigma=0.5", "moffat:fwhm=0.6,beta=3", "doublegaussian:sigma1=0.4"):
        psf = parse_psf_spec(spec)
        assert tuple(psf.getDimensions()) == (11, 11), spec


def test_a_double_gaussian_without_b_is_its_core_gaussian():
    """``b`` (the wing's peak ratio) defaults to 0: the model is then the single Gaussian of sigma1."""
    d = parse_psf_spec("doublegaussian:sigma1=2")
    assert d.getB() == 0
    img = d.computeKernelImage((0, 0))
    ref = GaussianPsf(img.shape[1], img.shape[0], 2.0).computeKernelImage((0, 0))
    assert np.allclose(img / img.sum(), ref / ref.sum(), atol=1e-12)
    assert _moment_sigma(img) == pytest.approx(2.0, rel=1e-3)


def test_an_explicit_b_of_zero_is_accepted_and_a_negative_one_is_refused():
    """``b=0`` (no wing) is a valid peak ratio, unlike the other parameters, which must be positive."""
    d = parse_psf_spec("doublegaussian:sigma1=2,sigma2=5,b=0")
    assert d.getB() == 0
    assert _moment_sigma(d.computeKernelImage((0, 0))) == pytest.approx(2.0, rel=1e-3)
    with pytest.raises(InvalidInputError, match=r"b \(peak ratio of the wing to the core\) must be >= 0; got -0.1"):
        parse_psf_spec("doublegaussian:sigma1=2,b=-0.1")


@pytest.mark.parametrize("size, ok", [(1, False), (3, True), (2, False)])
def test_the_smallest_stamp_size_is_3(size, ok):
    spec = f"gaussian:sigma=0.3,size={size}"
    if ok:
        assert tuple(parse_psf_spec(spec).getDimensions()) == (size, size)
    else:
        with pytest.raises(InvalidInputError, match=rf"size must be an odd integer >= 3; got {size}"):
            parse_psf_spec(spec)


# ---------------------------------------------------------------------------
# psfmatch run / demo: what the options change in the outputs

CELLS32 = ["-c", "kernel.active.sizeCellX=32", "-c", "kernel.active.sizeCellY=32"]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    from psfmatch.demo import make_demo_exposure

    path = tmp_path_factory.mktemp("input") / "small.fits"
    make_demo_exposure(128, seed=1).writeFits(str(path))
    return str(path)


def test_kernel_sum_scales_the_matched_flux_and_the_written_kernel(small_file, tmp_path, capsys):
    """--kernel-sum S: the kernel written sums to S everywhere and the matched image carries S times the flux."""
    from psfmatch import Exposure
    from psfmatch.kernel import LinearCombinationKernel

    out, kern = tmp_path / "m.fits", tmp_path / "k.fits"
    rc, _, err = _run(["run", small_file, "-r", "gaussian:sigma=2.6", "-o", str(out), "--kernel-out", str(kern),
                       "--kernel-sum", "2.5", "-q", *CELLS32], capsys)
    assert rc == 0, err
    k = LinearCombinationKernel.readFits(str(kern))
    for x, y in ((10, 10), (64, 64), (120, 7)):
        assert k.computeImage((x, y)).sum() == pytest.approx(2.5, rel=1e-6)
    matched = Exposure.readFits(str(out)).image
    original = Exposure.readFits(small_file).image
    inner = (slice(20, -20), slice(20, -20))  # away from the edge that the kernel cannot fill
    good = np.isfinite(matched[inner])
    assert matched[inner][good].sum() / original[inner][good].sum() == pytest.approx(2.5, rel=0.02)


def test_demo_seed_chooses_the_exposure(tmp_path, capsys, monkeypatch):
    """--seed S matches the exposure that make_demo_exposure(size, seed=S) makes (not that of the default seed)."""
    import psfmatch.demo

    made = []
    real = psfmatch.demo.make_demo_exposure

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(psfmatch.demo, "make_demo_exposure", recording)
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["demo", "--size", "64", "--seed", "5", "-q"], capsys)
    assert rc == 0, err
    assert len(made) == 1
    np.testing.assert_array_equal(made[0].image, real(64, seed=5).image)
    assert not np.array_equal(made[0].image, real(64, seed=0).image)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "0.0"])
def test_a_kernel_sum_that_is_not_positive_and_finite_is_a_usage_error(value, small_file, tmp_path, capsys):
    """A kernel sum of 0 would make an all-zero matched image: refused before any work (exit 2)."""
    out = tmp_path / "m.fits"
    rc, _, err = _run(["run", small_file, "-r", "gaussian:sigma=2.6", "-o", str(out), f"--kernel-sum={value}"],
                      capsys)
    assert rc == 2 and f"must be positive and finite; got {value!r}" in err
    assert not out.exists()


@pytest.mark.parametrize("size, accepted", [("31", False), ("32", True), ("16384", True), ("16385", False)])
def test_demo_size_limits_are_inclusive(size, accepted, tmp_path, capsys, monkeypatch):
    """--size accepts DEMO_MIN_SIZE (32) to DEMO_MAX_SIZE (16384), both included; outside is a usage error."""
    import psfmatch.demo

    def stop(size, seed=0):
        raise RuntimeError(f"sentinel: demo of {size} px")

    monkeypatch.setattr(psfmatch.demo, "make_demo_exposure", stop)  # the size reaches the exposure, or not
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["demo", "--size", size], capsys)
    if accepted:
        assert rc == 1 and f"sentinel: demo of {size} px" in err
    else:
        assert rc == 2 and "sentinel" not in err and f"got '{size}'" in err


def test_an_output_that_is_a_dangling_symbolic_link_needs_overwrite(small_file, tmp_path, capsys, monkeypatch):
    """A symbolic link to nowhere is an existing name: refused before any work without --overwrite (writing
    through it would create a file somewhere else)."""
    import os

    import psfmatch.io

    link = tmp_path / "m.fits"
    os.symlink(tmp_path / "nowhere" / "x.fits", link)

    def must_not_read(*args, **kwargs):
        raise AssertionError("the exposure was read although the output exists")

    monkeypatch.setattr(psfmatch.io, "read_exposure", must_not_read)
    rc, _, err = _run(["run", small_file, "-r", "gaussian:sigma=2.6", "-o", str(link)], capsys)
    assert rc == 1 and f"output {link} exists already; pass --overwrite to replace it" in err
    assert os.path.islink(link) and sorted(os.listdir(tmp_path)) == ["m.fits"]


def test_an_output_that_appears_during_the_match_is_not_replaced(small_file, tmp_path, capsys, monkeypatch):
    """Another process creating the output while the match runs: that file is kept, nothing else is moved into
    place and no temporary file is left (without --overwrite)."""
    import os

    from psfmatch.task import ModelPsfMatchTask

    out, kern = tmp_path / "m.fits", tmp_path / "k.fits"
    real = ModelPsfMatchTask.run

    def run_then_appear(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        out.write_bytes(b"someone else's")
        return result

    monkeypatch.setattr(ModelPsfMatchTask, "run", run_then_appear)
    rc, _, err = _run(["run", small_file, "-r", "gaussian:sigma=2.6", "-o", str(out), "--kernel-out", str(kern),
                       *CELLS32], capsys)
    assert rc == 1 and f"{out} appeared while psfmatch was running; not replaced" in err
    assert out.read_bytes() == b"someone else's"
    assert sorted(os.listdir(tmp_path)) == ["m.fits"]


def test_variance_plane_without_a_kind_is_read_as_a_variance(tmp_path, capsys):
    """--variance HDU without --variance-kind: the plane is a variance (not a standard deviation or a weight)."""
    from astropy.io import fits

    from psfmatch import Exposure
    from psfmatch.io import read_kernel

    rng = np.random.default_rng(1)
    img = rng.normal(0, 20, (64, 64)).astype(np.float32)
    var = np.full((64, 64), 400.0, np.float32)
    path = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(var, name="VAR")]).writeto(path)
    rc, _, err = _run(["run", str(path), "--psf", "gaussian:sigma=1.5", "-r", "gaussian:sigma=2.5", "--variance",
                       "VAR", "-o", str(tmp_path / "m.fits"), "--kernel-out", str(tmp_path / "k.fits"), "-q",
                       "-c", "autoKernel=False", "-c", "kernel.active.kernelSize=11", *CELLS32], capsys)
    assert rc == 0, err
    out = Exposure.readFits(tmp_path / "m.fits")
    kernel = read_kernel(tmp_path / "k.fits")
    assert float(out.variance[30, 20]) == pytest.approx(400 * np.sum(kernel.computeImage((20, 30)) ** 2), rel=1e-5)


def test_run_names_every_extra_output_it_wrote(small_file, tmp_path, capsys):
    """Without -q, psfmatch run reports the matched exposure and then one 'wrote' line per output, the matched
    exposure first (it was left out of the list, named on the first line only)."""
    out, kern, qa = tmp_path / "m.fits", tmp_path / "k.fits", tmp_path / "qa.json"
    rc, stdout, err = _run(["run", small_file, "-r", "gaussian:sigma=2.6", "-o", str(out), "--kernel-out", str(kern),
                            "--qa-json", str(qa), *CELLS32], capsys)
    assert rc == 0, err
    assert f"psfmatch run: {small_file} -> {out}" in stdout
    wrote = [line for line in stdout.splitlines() if line.startswith("wrote ")]
    assert wrote == [f"wrote {out}", f"wrote {kern}", f"wrote {qa}"]


@pytest.mark.parametrize("option", ["--mask", "--variance"])
def test_run_refuses_an_output_that_would_replace_its_mask_or_variance_file(option, small_file, tmp_path, capsys):
    """A --mask or --variance FILE is an input too: -o naming it is refused even with --overwrite."""
    plane = tmp_path / "plane.fits"
    plane.write_bytes(b"the plane")
    rc, _, err = _run(["run", small_file, "-r", "gaussian:sigma=2.6", option, str(plane), "-o", str(plane),
                       "--overwrite"], capsys)
    assert rc == 1 and f"output {plane} would overwrite the input {plane} ({option}" in err
    assert plane.read_bytes() == b"the plane"


# ---------------------------------------------------------------------------
# display: the QA numbers, against direct computations


@pytest.fixture(scope="module")
def matched128():
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.demo import demo_reference_psf, make_demo_exposure

    exposure = make_demo_exposure(128, seed=1)
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    result = ModelPsfMatchTask(config=config).run(exposure, demo_reference_psf())
    return exposure, result


def test_field_qa_positions_are_the_centres_of_equal_square_tiles(matched128):
    """On a 128 x 64 field the grid is 16 x 8 (four per cell along the longer side): square tiles, their centres
    symmetric about the field's centre."""
    from psfmatch import display
    from psfmatch.geom import Box2I

    exposure, result = matched128
    bbox = Box2I((0, 0), (128, 64))
    grid = display.field_qa(result.psfMatchingKernel, exposure.getPsf(), result.psfMatchedExposure.getPsf(),
                            result.metadata["psfSize"], bbox, cells=result.kernelCellSet)
    assert grid["shape"] == [8, 16]
    np.testing.assert_allclose(grid["x"], -0.5 + (np.arange(16) + 0.5) * 8)
    np.testing.assert_allclose(grid["y"], -0.5 + (np.arange(8) + 0.5) * 8)
    tall = display.field_qa(result.psfMatchingKernel, exposure.getPsf(), result.psfMatchedExposure.getPsf(),
                            result.metadata["psfSize"], Box2I((10, 0), (64, 128)), cells=result.kernelCellSet)
    assert tall["shape"] == [16, 8]
    np.testing.assert_allclose(tall["x"], 9.5 + (np.arange(8) + 0.5) * 8)


def test_field_qa_does_not_depend_on_the_kernel_sum(matched128):
    """The QA compares shapes: a kernel scaled by kernelSum gives the same numbers as the unit-sum one."""
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask, display
    from psfmatch.demo import demo_reference_psf

    exposure, result = matched128
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    scaled = ModelPsfMatchTask(config=config).run(exposure, demo_reference_psf(), kernelSum=3.0)
    args = (exposure.getPsf(), result.psfMatchedExposure.getPsf(), result.metadata["psfSize"])
    g1 = display.field_qa(result.psfMatchingKernel, *args, shape=(4, 4))
    g3 = display.field_qa(scaled.psfMatchingKernel, *args, shape=(4, 4))
    assert g1["summary"]["residualMaxWorst"] < 0.05
    for name in display.QA_FIELDS:
        np.testing.assert_allclose(g3[name], g1[name], rtol=1e-6, atol=1e-12, err_msg=name)


def test_residual_stamps_equal_a_direct_convolution_per_position(matched128):
    """(S * K - R) / max R with each position's own R, checked against scipy's direct convolution, with a
    reference that varies over the field (the science PSF itself) so that each stamp's normalization shows."""
    from scipy.signal import convolve2d

    from psfmatch import display

    exposure, result = matched128
    sci = exposure.getPsf()
    kernel = result.psfMatchingKernel
    n = result.metadata["psfSize"]
    ref = exposure.getPsf()  # varies over the field: R's peak differs between the positions
    positions = [(5.0, 7.0), (120.0, 100.0)]
    stamps = display.residual_stamps(kernel, sci, ref, n, positions)
    assert len(stamps) == 2
    peaks = []
    for (x, y), st in zip(positions, stamps):
        S = sci.computeKernelImage((x, y)).astype(float)
        R = ref.computeKernelImage((x, y)).astype(float)
        S, R = S / S.sum(), R / R.sum()
        K = kernel.computeImage((x, y)) / kernel.kernel_sum
        full = convolve2d(S, K)  # (n + k - 1) square, centred like S
        h = K.shape[0] // 2
        expected = (full[h:h + n, h:h + n] - R) / R.max()
        np.testing.assert_allclose(st["residual"], expected, atol=1e-6 * np.abs(expected).max())
        assert (st["x"], st["y"]) == (x, y)
        peaks.append(R.max())
    assert abs(peaks[0] - peaks[1]) > 0.01 * max(peaks)


def test_psf_summary_numbers_of_an_elliptical_non_square_model():
    """Width/height of a non-square stamp, |e| = hypot(e1, e2), and the flux in the outermost pixel ring."""
    from psfmatch import display
    from psfmatch.demo import make_demo_exposure

    psf = make_demo_exposure(64, seed=1).getPsf()  # elliptical, e1 and e2 both non-zero
    s = display.psf_summary(psf, (10, 50))
    assert abs(s["e1"]) > 1e-3 and abs(s["e2"]) > 1e-3
    assert s["e"] == pytest.approx(math.hypot(s["e1"], s["e2"]), rel=1e-12)
    assert (s["x"], s["y"]) == (10.0, 50.0)
    wide = display.psf_summary(GaussianPsf(21, 15, 2.5))
    assert (wide["width"], wide["height"]) == (21, 15)
    img = GaussianPsf(21, 15, 2.5).computeKernelImage((0, 0)).astype(float)
    ring = img.sum() - img[1:-1, 1:-1].sum()
    assert wide["edgeFluxFraction"] == pytest.approx(ring / img.sum(), rel=1e-9)
    assert wide["edgeFluxFraction"] > 1e-3  # the 15 px side truncates a sigma-2.5 Gaussian


def test_psf_variation_is_the_range_over_the_grid():
    """fwhmMin, fwhmMax and eMax are the extremes of the n x n grid's shapes (a direct loop), on a model whose
    first grid position is neither extreme."""
    from psfmatch import display
    from psfmatch.geom import Box2I
    from psfmatch.psf import VariableGaussianPsf

    bbox = Box2I((0, 0), (64, 64))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, -0.15, 0.05], e1=[0.0, 0.04, -0.02], e2=[0.02, 0.0, 0.03])
    v = display.psf_variation(psf, bbox, n=4)
    xs, ys = display._grid_positions(bbox, 4, 4)
    shapes = [psf.computeShape((x, y)) for y in ys for x in xs]
    fwhm = [q.fwhm for q in shapes]
    e = [math.hypot(q.e1, q.e2) for q in shapes]
    assert min(fwhm) < fwhm[0] < max(fwhm) and min(e) < max(e)
    assert v["n"] == 16
    assert v["fwhmMin"] == pytest.approx(min(fwhm)) and v["fwhmMax"] == pytest.approx(max(fwhm))
    assert v["eMax"] == pytest.approx(max(e))


@pytest.mark.parametrize("cells_xy, shape", [((8, 2), [8, 32]), ((12, 12), [32, 32]), ((2, 2), [16, 16])])
def test_default_field_grid_has_four_positions_per_cell_along_the_longer_side(matched128, cells_xy, shape):
    """By default: 4 positions per cell along the side with more cells, clipped to 16..32, square tiles."""
    from psfmatch import display
    from psfmatch.cells import SpatialCellSet
    from psfmatch.geom import Box2I

    exposure, result = matched128
    bbox = Box2I((0, 0), (128, 32)) if cells_xy == (8, 2) else Box2I((0, 0), (128, 128))
    cells = SpatialCellSet(bbox, bbox.getWidth() // cells_xy[0], bbox.getHeight() // cells_xy[1])
    assert (cells.nx, cells.ny) == cells_xy
    grid = display.field_qa(result.psfMatchingKernel, exposure.getPsf(), result.psfMatchedExposure.getPsf(),
                            result.metadata["psfSize"], bbox, cells=cells)
    assert grid["shape"] == shape


def test_quiet_switches_progress_bars_off_even_on_a_terminal(capsys, monkeypatch):
    """Bars are on by default when standard error is a terminal, but -q (print only errors) or --no-progress
    switch them off for the command."""
    import sys

    import psfmatch.cli
    from psfmatch import progress

    seen = []
    monkeypatch.setattr(psfmatch.cli, "_cmd_config", lambda args: seen.append(progress.is_enabled()) or 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["config"]) == 0
    assert main(["config", "-q"]) == 0
    assert main(["config", "--no-progress"]) == 0
    assert seen == [True, False, False]


@pytest.mark.parametrize("flags, level", [([], "WARNING"), (["-v"], "INFO"), (["-vv"], "DEBUG"), (["-vvv"], "DEBUG"),
                                          (["-q", "-vv"], "ERROR")])
def test_verbosity_sets_the_level_of_psfmatchs_log(flags, level, capsys, monkeypatch):
    """-v info, -vv (or more) debug, -q errors only (it wins over -v), while a command runs."""
    import logging

    import psfmatch.cli

    seen = []
    monkeypatch.setattr(psfmatch.cli, "_cmd_config",
                        lambda args: seen.append(logging.getLogger("psfmatch").getEffectiveLevel()) or 0)
    assert main([*flags, "config"]) == 0
    assert seen == [getattr(logging, level)]


def test_save_figure_honours_an_explicit_format_and_the_resolution(tmp_path):
    """fmt= wins over the file's extension; dpi= sets the pixel size (2 x 1 inches at 50 dpi: 100 x 50 px)."""
    import os
    import struct

    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from psfmatch import display

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    display.save_figure(fig, tmp_path / "a.png", fmt="pdf")
    assert (tmp_path / "a.png").read_bytes()[:5] == b"%PDF-"
    display.save_figure(fig, tmp_path / "b.png", dpi=50)
    head = (tmp_path / "b.png").read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (100, 50)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]  # no temporary file left


def test_enabled_false_turns_a_bar_off_even_when_bars_are_on_for_the_process():
    """progress_bar(enabled=False) wins over set_enabled(True): that loop gets the plain iterable."""
    from psfmatch import progress

    items = [1, 2, 3]
    saved = progress.is_enabled()
    try:
        progress.set_enabled(True)
        assert progress.progress_bar(items, enabled=False) is items
    finally:
        progress.set_enabled(saved)
