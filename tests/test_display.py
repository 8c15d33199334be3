"""QA report and figures (issue 5): numbers agree with the task's metadata; figures render; writes are atomic."""

import json
import math
import os
import sys

import numpy as np
import pytest

from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch import display
from psfmatch.demo import demo_reference_psf, make_demo_exposure
from psfmatch.errors import OutputExistsError
from psfmatch.psf import GaussianPsf


@pytest.fixture(scope="module")
def matched():
    exposure = make_demo_exposure(256, seed=7)
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    task = ModelPsfMatchTask(config=config)
    result = task.run(exposure, demo_reference_psf())
    fit = task.fitKernel(exposure.getPsf(), demo_reference_psf(), exposure.getBBox())
    return exposure, result, fit


@pytest.fixture(scope="module")
def grid(matched):
    exposure, result, _ = matched
    return display.field_qa(result.psfMatchingKernel, exposure.getPsf(), result.psfMatchedExposure.getPsf(),
                            result.metadata["psfSize"], cells=result.kernelCellSet)


# ---------------------------------------------------------------------------
# numbers


def test_field_qa_grid(matched, grid):
    exposure, result, _ = matched
    ny, nx = grid["shape"]
    assert (nx, ny) == (16, 16)
    assert len(grid["x"]) == nx and len(grid["y"]) == ny
    assert grid["x"][0] > 0 and grid["x"][-1] < 255
    for name in display.QA_FIELDS:
        assert grid[name].shape == (ny, nx)
        assert np.all(np.isfinite(grid[name]))
    s = grid["summary"]
    assert s["n"] == nx * ny
    assert s["residualMaxWorst"] == pytest.approx(grid["residualMax"].max())
    assert abs(s["sizeMismatchWorst"]) == pytest.approx(np.abs(grid["sizeMismatch"]).max())
    # a good match: residuals of a percent at most, and never below the candidates' own worst
    assert s["residualMaxWorst"] < 0.02
    assert s["residualMaxWorst"] >= 0.5 * result.metadata["qa"]["candidates"]["residualMaxWorst"]


def test_residual_stamps_reproduce_the_candidate_qa(matched):
    exposure, result, _ = matched
    cands = list(result.kernelCellSet.candidates())
    stamps = display.residual_stamps(result.psfMatchingKernel, exposure.getPsf(), result.psfMatchedExposure.getPsf(),
                                     result.metadata["psfSize"], [(c.x, c.y) for c in cands])
    assert len(stamps) == len(cands) == 16
    for c, s in zip(cands, stamps):
        for name in ("residualMax", "residualRms", "sizeMismatch", "ellipticityMismatch", "kernelNegativeFraction"):
            assert s[name] == pytest.approx(c.qa[name], rel=1e-6, abs=1e-12), name
        assert s["residual"].shape == (result.metadata["psfSize"],) * 2
        # the stamp shown is the residual on the reference stamp: its max is at most the full-support max
        assert np.abs(s["residual"]).max() <= s["residualMax"] * (1 + 1e-9)


def test_qa_report_numbers_equal_the_metadata(matched, grid, tmp_path):
    exposure, result, _ = matched
    report = display.qa_report(result, exposure, grid=grid)
    assert report["qa"] == display.json_safe(result.metadata["qa"])
    assert report["metadata"]["nCandidatesUsed"] == result.metadata["nCandidatesUsed"]
    assert len(report["candidates"]) == result.metadata["nCandidatesBuilt"]
    by_id = {c["id"]: c for c in report["candidates"]}
    for cand in result.kernelCellSet.candidates():
        for name, value in cand.qa.items():
            assert by_id[cand.id][name] == pytest.approx(value)
    assert report["grid"]["summary"] == display.json_safe(grid["summary"])
    assert report["bbox"] == {"x0": 0, "y0": 0, "width": 256, "height": 256}

    path = tmp_path / "qa.json"
    display.write_qa_json(report, path)
    assert json.loads(path.read_text()) == report
    assert os.listdir(tmp_path) == ["qa.json"]
    with pytest.raises(OutputExistsError):
        display.write_qa_json(report, path)
    display.write_qa_json(report, path, overwrite=True)


def test_qa_report_from_a_kernel_fit(matched):
    exposure, result, fit = matched
    report = display.qa_report(fit, science_psf=exposure.getPsf(), grid_shape=(4, 3))
    assert report["grid"]["shape"] == [3, 4]
    assert report["qa"] == display.json_safe(fit.metadata["qa"])


def test_json_safe():
    value = {"a": np.float32(1.5), "b": [np.int64(3), float("nan"), float("inf")], "c": np.arange(3),
             "d": (True, None, "x"), 4: np.bool_(False)}
    out = display.json_safe(value)
    assert out == {"a": 1.5, "b": [3, None, None], "c": [0, 1, 2], "d": [True, None, "x"], "4": False}
    json.dumps(out, allow_nan=False)


def test_psf_summary_and_variation(matched):
    exposure, _, _ = matched
    g = display.psf_summary(GaussianPsf(25, 25, 2.0))
    assert g["sigma"] == pytest.approx(2.0, rel=1e-4)
    assert g["fwhm"] == pytest.approx(2.0 * 2.3548200450309493, rel=1e-4)
    assert g["e"] < 1e-8 and not g["spatiallyVarying"]
    v = display.psf_variation(exposure.getPsf(), exposure.getBBox())
    assert v["n"] == 25 and v["fwhmMin"] < v["fwhmMax"] and v["eMax"] > 0.01


# ---------------------------------------------------------------------------
# figures

@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def test_plot_qa_figure(mpl, matched, grid, tmp_path):
    exposure, result, _ = matched
    fig = display.plot_qa(result, exposure, grid=grid)
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert any(t.startswith("matching kernel K across the field") for t in titles)
    assert sum(t.startswith("at (") for t in titles) == 5                # residual stamps
    for start in ("residual max", "size mismatch", "ellipticity mismatch"):
        assert any(t.startswith(start) for t in titles), start
    assert len(fig.get_axes()) >= 3 + 5 + 3 + 3                          # panels and colour bars
    path = tmp_path / "qa.png"
    display.save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["qa.png"]
    with pytest.raises(OutputExistsError):
        display.save_figure(fig, path)


def test_plot_psf_figure(mpl, matched):
    exposure, _, _ = matched
    fig = display.plot_psf(exposure.getPsf(), (40, 200))
    assert len([ax for ax in fig.get_axes() if ax.get_title()]) == 4     # stamp, profile, two maps
    fig = display.plot_psf(GaussianPsf(21, 21, 2.0))
    assert len([ax for ax in fig.get_axes() if ax.get_title()]) == 2


def test_figures_do_not_need_pyplot(mpl, matched):
    # the figures are plain Figure objects: drawing them must not switch the caller's backend
    exposure, result, fit = matched
    backend = mpl.get_backend()
    fig = display.show_kernel_basis(fit.kernel.basis)
    fig.canvas.draw()
    assert mpl.get_backend() == backend


def test_has_screen(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    assert display.has_screen() is False
    monkeypatch.setenv("DISPLAY", ":0")
    assert display.has_screen() is True
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert display.has_screen() is False
    monkeypatch.setenv("MPLBACKEND", "QtAgg")
    assert display.has_screen() is True


def test_mask_transparency_convention():
    assert display._transparency(False) == 60.0        # unset: the default
    assert display._transparency(0) == 0.0             # LSST: 0 is opaque
    assert display._transparency(80) == 80.0
    assert display._transparency(150) == 100.0


def test_missing_matplotlib_gives_an_install_hint(matched, monkeypatch, caplog):
    exposure, result, fit = matched
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'psfmatch\[plot\]'"):
        display.plot_qa(result, exposure)
    import psfmatch.debug as debug

    with debug.scoped():
        debug.Info("psfmatch.solve").display = True
        debug.Info("psfmatch.solve").displayKernelBasis = True
        assert display.debug_displays(exposure, fit) == []
    assert "matplotlib" in caplog.text
    assert math.isfinite(result.metadata["spatialKernelSum"])


def test_bad_arguments_raise_typed_errors(matched):
    from psfmatch.errors import InvalidInputError
    exposure, result, _ = matched
    kernel = result.psfMatchingKernel
    with pytest.raises(InvalidInputError, match=r"expected a PsfMatchResult or a KernelFit .*; got Exposure"):
        display.qa_report(exposure)
    bare = type(kernel)(kernel.basis, kernel.coefficients, kernel.spatial_function, 1.0, None)
    with pytest.raises(InvalidInputError, match=r"field_qa needs the field's box: the kernel has none \(pass bbox=\)"):
        display.field_qa(bare, exposure.getPsf(), demo_reference_psf(), 21)
    with pytest.raises(InvalidInputError, match=r"computeImages needs finite positions; position 1 is \(nan, 2.0\)"):
        kernel.computeImages([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match=r"computeImages needs x and y of the same length \(1-d\); got shapes "
                                                r"\(3,\) and \(2,\)"):
        kernel.computeImages([1, 2, 3], [1, 2])
    np.testing.assert_array_equal(kernel.computeImages([10.0], [20.0])[0], kernel.computeImage((10.0, 20.0)))


def test_plot_qa_without_the_science_psf_is_a_typed_error(mpl, matched):
    from psfmatch.errors import InvalidInputError
    _, result, _ = matched
    with pytest.raises(InvalidInputError, match="plot_qa needs the science PSF: pass the input exposure or "
                                                "science_psf="):
        display.plot_qa(result)
