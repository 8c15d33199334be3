"""A newcomer following README.md and the guide: the Python examples the doctests do not run, and the claims
the pages make about names, warnings, errors and files, checked against what the library does.

The ``>>>`` examples of docs/**/*.rst and of the docstrings run as doctests (pyproject's ``--doctest-glob``);
this file runs the others: README.md's ```python blocks (the "Use" block, the debug.py block, the batch block),
the task page's ``.. code-block:: python`` and the package docstring's ``::`` example, and checks the prose
claims around them with analytic identities (Gaussian kernels: sigma_k^2 = sigma_ref^2 - sigma_sci^2; flux and
second moments under convolution; inverse-variance weights).
"""

import io
import contextlib
import os
import re
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.demo import demo_reference_psf, make_demo_exposure
from psfmatch.errors import (InvalidConfigError, KernelQualityWarning, MissingDependencyError, PsfMatchError,
                             PsfMatchWarning)
from psfmatch.psf import GaussianPsf

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
README = os.path.join(ROOT, "README.md")


def _readme_python_blocks():
    with open(README) as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)


def _block(starts_with):
    found = [b for b in _readme_python_blocks() if starts_with in b]
    assert len(found) == 1, f"README.md has {len(found)} python blocks containing {starts_with!r}"
    return found[0]


def _moments(img):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    flux = img.sum()
    mx, my = (img * xx).sum() / flux, (img * yy).sum() / flux
    vx, vy = (img * (xx - mx) ** 2).sum() / flux, (img * (yy - my) ** 2).sum() / flux
    return flux, mx, my, vx, vy


def _cli(argv):
    """psfmatch.cli.main(argv) -> (status, stderr)."""
    from psfmatch.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def demo512():
    exposure = make_demo_exposure(512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask().run(exposure, demo_reference_psf())
    return exposure, result


# --- README.md's "Use" block, run as written with its placeholders filled in ----------------------------------


def test_readme_use_block_runs_and_its_kernel_is_the_gaussian_difference():
    code = _block("result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6))")
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 2.0, (256, 256)).astype(np.float32)
    mask = np.zeros((256, 256), np.int32)
    variance = np.full((256, 256), 4.0, np.float32)
    before = image.copy()
    ns = {"image": image, "mask": mask, "variance": variance, "my_psf_model": GaussianPsf(21, 21, 1.8),
          "x": 100.0, "y": 150.0}
    exec(compile(code, "README.md (Use)", "exec"), ns)
    result = ns["result"]
    kern = result.psfMatchingKernel.computeImage((100.0, 150.0))
    assert kern.shape == (21, 21)  # kernelSize = 21, set by the user, honoured by the automatic mode
    assert kern.sum() == pytest.approx(1.0, abs=1e-7)
    yy, xx = np.mgrid[-10:11, -10:11]
    # Gaussian to Gaussian: the kernel's variance along each axis is sigma_ref^2 - sigma_sci^2
    assert (kern * xx**2).sum() == pytest.approx(2.6**2 - 1.8**2, rel=1e-5)
    assert (kern * yy**2).sum() == pytest.approx(2.6**2 - 1.8**2, rel=1e-5)
    assert np.array_equal(image, before)  # "the input is untouched"
    assert result.psfMatchedExposure.getPsf().getSigma() == 2.6
    md = result.metadata  # "basis description, solve rank/condition, QA at and between candidates"
    assert md["kernelBasisSet"] == "alard-lupton" and md["spatialSolutionRank"] > 0
    assert {"candidates", "between"} <= set(md["qa"])


def test_a_matched_star_keeps_its_flux_and_centroid_and_its_second_moment_is_the_reference():
    n, x0, y0, s = 129, 64.3, 63.8, 1.8
    yy, xx = np.mgrid[:n, :n]
    star = 1000 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)
    exposure = Exposure(star, variance=np.ones_like(star), psf=GaussianPsf(25, 25, s))
    result = ModelPsfMatchTask().run(exposure, GaussianPsf(31, 31, 2.6))
    out = result.psfMatchedExposure.image
    flux, mx, my, vx, vy = _moments(np.where(np.isfinite(out), out, 0.0))
    assert flux == pytest.approx(1000.0, rel=1e-6)
    assert (mx, my) == pytest.approx((x0, y0), abs=1e-4)
    assert (vx, vy) == pytest.approx((2.6**2, 2.6**2), rel=1e-4)
    # variance propagated exactly as sum K^2 V (V = 1)
    k = result.psfMatchingKernel.computeImage((64, 64))
    assert result.psfMatchedExposure.variance[64, 64] == pytest.approx((k**2).sum(), rel=1e-6)


def test_the_border_band_is_exactly_kernel_size_over_two_and_only_no_data(demo512):
    _, result = demo512
    matched = result.psfMatchedExposure
    half = result.psfMatchingKernel.getWidth() // 2
    no_data = matched.getMask().getPlaneBitMask("NO_DATA")
    column = matched.image[:, 300]
    assert np.isnan(column[:half]).all() and np.isfinite(column[half:half + 3]).all()
    assert (matched.mask[:half, 300] == no_data).all() and np.isinf(matched.variance[:half, 300]).all()


# --- the task page's code-block and the package docstring's example --------------------------------------------


def test_task_page_python_api_summary_runs():
    import psfmatch

    page = open(os.path.join(ROOT, "docs", "tasks", "ModelPsfMatchTask.rst")).read()
    code = re.search(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", page).group(1)
    code = "\n".join(line[3:] for line in code.splitlines())
    exposure = make_demo_exposure(512)
    ns = {"exposure": exposure, "referencePsfModel": demo_reference_psf()}
    exec(compile(code, "ModelPsfMatchTask.rst", "exec"), ns)
    assert ns["result"].metadata["qa"]["flags"] == []
    doc = psfmatch.__doc__.split("::", 1)[1]
    code = "\n".join(line[4:] for line in doc.splitlines() if line.startswith("    "))
    ns = {"exposure": exposure, "referencePsfModel": demo_reference_psf()}
    exec(compile(code, "psfmatch/__init__.py", "exec"), ns)
    assert ns["result"].psfMatchingKernel.getSum((10, 20)) == pytest.approx(1.0, abs=1e-7)


# --- README.md's debug.py block and batch block ------------------------------------------------------------------


@pytest.mark.slow
def test_readme_debug_py_block_draws_the_five_documented_displays(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import psfmatch.debug

    (tmp_path / "debug.py").write_text(_block("# debug.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "debug", raising=False)
    with psfmatch.debug.scoped():
        status, _ = _cli(["demo", "--size", "256", "--quiet", "--debug", "--debug-dir", "figs"])
    assert status == 0
    names = sorted(os.listdir(tmp_path / "figs"))
    suffixes = ["spatial-cells", "candidates", "kernel-basis", "kernel-mosaic", "kernel-spatial-model"]
    assert len(names) == 5
    for suffix in suffixes:
        assert any(re.fullmatch(rf"psfmatch-debug-\d{{3}}-{suffix}\.png", n) for n in names), (suffix, names)
    assert psfmatch.debug.Info("psfmatch.solve").display is False  # the command restored the switches


def _readme_batch_main(workdir):
    os.chdir(workdir)
    from psfmatch.io import write_exposure

    os.mkdir("raw")
    paths = []
    for seed in range(2):
        path = f"raw/visit{seed}.fits"
        write_exposure(make_demo_exposure(192, seed=seed), path)
        paths.append(path)
    with open("raw/broken.fits", "w") as fh:
        fh.write("not a FITS file")
    paths.append("raw/broken.fits")
    ns = {"paths": paths, "print": lambda *a, **k: None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 192 px: one cell each, flagged by the QA (as it should be)
        exec(compile(_block("match_many(paths"), "README.md (batch)", "exec"), ns)
    return ns["reports"]


@pytest.mark.slow
def test_readme_batch_block_runs_as_written_and_one_bad_file_does_not_stop_it(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    reports = _readme_batch_main(tmp_path)
    assert [r.status for r in reports] == ["matched", "matched", "failed"]
    bad = reports.failed[0]
    assert bad.error_type == "CorruptFileError" and "broken.fits" in bad.error_message
    assert [r.kernel_sum for r in reports] == [1.0, 1.0, None]
    assert "1 failed" in reports.summary() and "chosen automatically" in reports.summary()
    header = fits.getheader(tmp_path / "coadd.fits", 0)
    assert header["NCOMBINE"] == 2


# --- claims of the guide checked against the library ------------------------------------------------------------


@pytest.mark.parametrize("path", ["kernel.active.singleKernelClipping", "kernel.active.maxConditionNumber",
                                  "kernel.active.fitForBackground", "kernel.active.badMaskPlanes",
                                  "kernel.active.alardNGaussDeconv", "kernel.active.lambdaStep"])
def test_an_override_of_an_omitted_lsst_field_is_refused_saying_so(path):
    """Task page: 'An override that sets one of them is refused with an error that says so.'"""
    from psfmatch.config import apply_overrides

    name = path.rsplit(".", 1)[1]
    with pytest.raises(InvalidConfigError, match=rf"{name} is an LSST field that psfmatch omits"):
        apply_overrides(ModelPsfMatchConfig(), [f"{path}=1"])


def test_the_omitted_lambda_type_values_are_refused_saying_so():
    config = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match="minimizeBiasedRisk' is an LSST setting that psfmatch omits"):
        config.kernel["DF"].lambdaType = "minimizeBiasedRisk"


def test_a_python_override_file_error_names_the_file_and_line(tmp_path):
    from psfmatch.config import load_overrides

    path = tmp_path / "ov.py"
    path.write_text("# a comment\nconfig.kernel.active.kernelSize = 25\nconfig.kernel.active.kernelSize = 24\n")
    with pytest.raises(InvalidConfigError, match=r"ov\.py', line 3: .*kernelSize: must satisfy an odd integer"):
        load_overrides(ModelPsfMatchConfig(), str(path))


@pytest.mark.parametrize("suffix, text", [
    (".toml", "[kernel.AL]\nkernelSize = 25\nalardNGauss = 0\n"),
    (".yaml", "kernel:\n  AL:\n    kernelSize: 25\n    alardNGauss: 0\n"),
])
def test_an_override_file_error_names_the_file_and_for_python_the_line_as_cli_rst_says(tmp_path, suffix, text):
    """cli.rst said a bad override names 'the file and line it came from'; a TOML or YAML file's error names the
    file only (tomllib keeps no positions), and the page now says so: the line for a Python file."""
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    from psfmatch.config import load_overrides

    path = tmp_path / f"ov{suffix}"
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match=rf"config override file '.*ov\{suffix}': .*alardNGauss"):
        load_overrides(ModelPsfMatchConfig(), str(path))
    (tmp_path / "ov.py").write_text("x = 1\nconfig.kernel['AL'].kernelSize = 25\nconfig.kernel['AL'].alardNGauss = 0\n")
    with pytest.raises(InvalidConfigError, match=r"config override file '.*ov\.py', line 3: .*alardNGauss"):
        load_overrides(ModelPsfMatchConfig(), str(tmp_path / "ov.py"))


@pytest.mark.parametrize("blocked, call, match", [
    ("matplotlib", "plot_qa", r"pip install 'psfmatch\[plot\]'"),
    ("distributed", "match_many", r"pip install 'psfmatch\[batch\]'"),
    ("galsim", "galsim", r"pip install 'psfmatch\[galsim\]'"),
])
def test_a_missing_optional_package_names_the_pip_command(monkeypatch, tmp_path, blocked, call, match):
    """install.rst: 'a missing package gives an error that names the pip command to run'."""
    for name in list(sys.modules):
        if name == blocked or name.startswith(blocked + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)
    if call == "plot_qa":
        from psfmatch import display

        exposure = make_demo_exposure(128)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = ModelPsfMatchTask().run(exposure, demo_reference_psf())
        with pytest.raises(MissingDependencyError, match=match):
            display.plot_qa(result, exposure)
    elif call == "match_many":
        from psfmatch.batch import match_many

        with pytest.raises(MissingDependencyError, match=match):
            match_many([str(tmp_path / "x.fits")], "auto", str(tmp_path / "out"), progress=False)
    else:
        from psfmatch.psf import GalSimPsf

        with pytest.raises(MissingDependencyError, match=match):
            GalSimPsf(None, pixel_scale=0.2)


def test_coadd_weights_by_inverse_variance_and_names_an_input_without_variance(tmp_path):
    """batch.rst: weights 1/V, variance 1/sum(1/V); an input without a variance plane (zeros) is named in a
    PsfMatchWarning and in unused_inputs; NCOMBINE counts the others."""
    pytest.importorskip("dask.array")
    from psfmatch.batch import coadd
    from psfmatch.io import read_exposure, write_exposure

    psf = GaussianPsf(21, 21, 2.5)
    planes = {"a": (10.0, 4.0), "b": (20.0, 1.0)}
    for name, (value, var) in planes.items():
        write_exposure(Exposure(np.full((64, 64), value, np.float32), variance=np.full((64, 64), var, np.float32),
                                psf=psf), str(tmp_path / f"{name}.fits"))
    write_exposure(Exposure(np.full((64, 64), 30.0, np.float32), psf=psf), str(tmp_path / "z.fits"))
    paths = [str(tmp_path / f"{n}.fits") for n in ("a", "b", "z")]
    with pytest.warns(PsfMatchWarning, match=r"1 of 3 input\(s\) contributed no pixel .*z\.fits"):
        report = coadd(paths, str(tmp_path / "coadd.fits"))
    assert report.unused_inputs == [paths[2]]
    assert fits.getheader(tmp_path / "coadd.fits", 0)["NCOMBINE"] == 2
    out = read_exposure(str(tmp_path / "coadd.fits"))
    w = np.array([1 / 4.0, 1 / 1.0])
    assert float(out.image[30, 30]) == pytest.approx((w * [10.0, 20.0]).sum() / w.sum(), rel=1e-6)
    assert float(out.variance[30, 30]) == pytest.approx(1 / w.sum(), rel=1e-6)


def test_choose_reference_psf_double_gaussian_follows_the_documented_rule():
    """reference.rst: sigma^2 = (1 + margin)^2 lambda_max + floor^2 over (psf, box) pairs; kind='doublegaussian'
    adds a wing twice as broad with a peak ratio 0.1, and wing_ratio / b change them."""
    from psfmatch import Box2I
    from psfmatch.batch import choose_reference_psf

    box = Box2I((0, 0), (200, 200))
    sigma = np.sqrt(1.1**2 * 2.0**2 + 0.7**2)
    psf = choose_reference_psf([(GaussianPsf(21, 21, 2.0), box)], kind="doublegaussian").psf
    assert (psf.getSigma1(), psf.getSigma2(), psf.getB()) == pytest.approx((sigma, 2 * sigma, 0.1), rel=1e-6)
    psf = choose_reference_psf([(GaussianPsf(21, 21, 2.0), box)], kind="doublegaussian", wing_ratio=3, b=0.2).psf
    assert (psf.getSigma1(), psf.getSigma2(), psf.getB()) == pytest.approx((sigma, 3 * sigma, 0.2), rel=1e-6)


def test_a_psfex_model_of_another_domain_warns_and_a_small_overhang_does_not():
    """psf_models.rst: run() warns when the exposure reaches beyond POLZERO +- POLSCAL/2 by more than 10 %."""
    from psfmatch.psf import PsfexPsf

    y, x = np.mgrid[-24:25, -24:25] * 0.5
    core = np.exp(-(x**2 + y**2) / (2 * 1.8**2))
    model = PsfexPsf(np.array([core, 0 * core, 0 * core]), degree=1, polzero=(100.5, 100.5), polscal=(200.0, 200.0),
                     psf_samp=0.5)
    with pytest.warns(PsfMatchWarning, match=r"reaches beyond the region the science PSF model was fitted on"):
        ModelPsfMatchTask().run(Exposure(np.zeros((300, 300), np.float32), psf=model), GaussianPsf(31, 31, 2.6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PsfMatchWarning)
        ModelPsfMatchTask().run(Exposure(np.zeros((210, 210), np.float32), psf=model), GaussianPsf(31, 31, 2.6))


def test_a_psf_image_at_another_pixel_scale_than_the_wcs_warns(tmp_path):
    """psf_models.rst: a PSF image more than 1 % off the exposure's WCS pixel scale makes run() warn."""
    from astropy.wcs import WCS

    from psfmatch.psf import read_image_psf

    y, x = np.mgrid[-24:25, -24:25] * 0.5
    fits.PrimaryHDU(np.exp(-(x**2 + y**2) / (2 * 1.8**2)), header=fits.Header({"PIXSCALE": 0.1})).writeto(
        tmp_path / "psf.fits")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crval = [10, 10]
    wcs.wcs.crpix = [64, 64]
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.5), wcs=wcs)
    with pytest.warns(PsfMatchWarning, match=r"reference PSF image has pixels of 0.1 arcsec, the exposure's WCS 0.2"):
        ModelPsfMatchTask().run(exposure, read_image_psf(str(tmp_path / "psf.fits")))


def test_applying_a_kernel_outside_its_box_warns_as_quickstart_says():
    from psfmatch.convolve import convolve_masked_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask().run(make_demo_exposure(256), demo_reference_psf())
    with pytest.warns(KernelQualityWarning, match=r"reaches outside the box the kernel was fitted on"):
        convolve_masked_image(make_demo_exposure(384).getMaskedImage(), result.psfMatchingKernel)


def test_a_third_order_model_on_three_by_three_cells_drops_only_x3_and_y3():
    """lsst.rst: a 384 x 384 exposure, 3 x 3 cells of 128 px, fits a third-order model without x^3 and y^3."""
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = ModelPsfMatchTask(config=config).run(make_demo_exposure(384), demo_reference_psf()).metadata
    assert md["spatialKernelOrder"] == 3
    n_free = 27 - 1  # 27 Alard-Lupton kernels, the sum constrained
    assert md["nSpatialUnknowns"] == n_free * 8 == md["spatialSolutionRank"]  # 10 terms of order 3 less x^3, y^3
    assert any("degree at most 2 along x and 2 along y" in note for note in md["notes"])


def test_demo_outdir_writes_the_five_documented_products_and_replaces_them(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "agg")
    products = ["demo-exposure.fits", "demo-kernel.fits", "demo-matched.fits", "demo-qa.json", "demo-qa.png"]
    assert _cli(["demo", "--size", "256", "--outdir", "demo", "--quiet"])[0] == 0
    assert sorted(os.listdir("demo")) == products
    assert _cli(["demo", "--size", "256", "--outdir", "demo", "--quiet"])[0] == 0  # its own products: replaced
    assert sorted(os.listdir("demo")) == products


def test_debug_dir_naming_a_file_fails_and_without_debug_warns(tmp_path, monkeypatch):
    import psfmatch.debug

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    with psfmatch.debug.scoped():
        status, err = _cli(["demo", "--size", "128", "--debug", "--debug-dir", "afile", "--quiet"])
    assert status == 1 and "--debug-dir afile" in err and "give a directory" in err
    with psfmatch.debug.scoped():
        status, err = _cli(["demo", "--size", "128", "--debug-dir", "dd"])
    assert status == 0 and "--debug-dir dd without --debug" in err and not (tmp_path / "dd").exists()


def test_every_error_the_examples_meet_is_a_psfmatch_error():
    """README: every error psfmatch raises on purpose derives from PsfMatchError and the builtin."""
    assert issubclass(InvalidConfigError, PsfMatchError) and issubclass(InvalidConfigError, ValueError)
    assert issubclass(MissingDependencyError, PsfMatchError)


def test_a_reference_off_centre_by_half_a_pixel_moves_the_stars_by_it_and_inf_turns_the_flag_off():
    """qa.rst: kernelShift is the move of the stars (first moments add under convolution); KERNEL_SHIFT above
    qaMaxKernelShift (0.2 px), with a warning; inf turns the check off."""
    from psfmatch.psf import ImagePsf

    yy, xx = np.mgrid[-15:16, -15:16]
    reference = ImagePsf(np.exp(-((xx - 0.5) ** 2 + yy**2) / (2 * 2.6**2)))
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(21, 21, 1.8))
    with pytest.warns(KernelQualityWarning, match=r"moves the stars by 0.5 px"):
        result = ModelPsfMatchTask().run(exposure, reference)
    qa = result.metadata["qa"]
    assert qa["flags"] == ["KERNEL_SHIFT"]
    assert qa["between"]["kernelShiftWorst"] == pytest.approx(0.5, abs=1e-4)
    assert qa["between"]["kernelShiftWorstDx"] == pytest.approx(0.5, abs=1e-4)
    config = ModelPsfMatchConfig()
    config.qaMaxKernelShift = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ModelPsfMatchTask(config=config).run(exposure, reference).metadata["qa"]["flags"] == []


def test_an_ill_posed_match_is_flagged_warned_and_described_in_the_notes():
    """qa.rst: each failed check issues a warning, and an ill-posed match is also described in metadata['notes']."""
    from psfmatch.errors import IllPosedMatchWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ModelPsfMatchTask().run(make_demo_exposure(512), GaussianPsf(21, 21, 1.9))
    qa = result.metadata["qa"]
    assert qa["illPosed"]["flag"] is True and qa["illPosed"]["nCellsFlagged"] == 5
    assert "ILL_POSED" in qa["flags"]
    assert any(issubclass(w.category, IllPosedMatchWarning) for w in caught)
    assert any(n.startswith("ill-posed match: the reference PSF is narrower than the science PSF at 5 of 16 cells")
               for n in result.metadata["notes"])
