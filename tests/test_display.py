"""QA report and figures (issue 5): numbers agree with the task's metadata; figures render; writes are atomic."""

import json
import math
import os
import re
import sys
import warnings

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


# ---------------------------------------------------------------------------
# the spatial-model display, typed errors for grid sizes and a missing matplotlib, binning


def _spatial_model_maps(fig, kernel):
    """Per coefficient map of plot_kernel_spatial_model: (drawn values, the model at the drawn pixel centres)."""
    out = []
    for ax in fig.get_axes():
        title = ax.get_title()
        if not (title.startswith("a") and ax.get_images()):
            continue
        i = int(title.split(":")[0][1:])
        im = ax.get_images()[0]
        G = np.asarray(im.get_array())
        ny, nx = G.shape
        x0, x1, y0, y1 = im.get_extent()
        X, Y = np.meshgrid(x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx, y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny)
        model = (kernel.coefficients @ kernel.spatial_function.evaluate(X.ravel(), Y.ravel()))[i].reshape(ny, nx)
        out.append((G, model, (x0, x1, y0, y1)))
    return out


def test_spatial_model_maps_are_drawn_where_they_were_computed(mpl, matched):
    """Each map pixel shows the model at that pixel's centre (it was computed on a grid spanning the outermost
    pixel centres and drawn over the full extent: shifted by up to half a grid step), and a strip gets enough
    rows to show an order-2 variation in y (it had 2-3)."""
    from psfmatch.geom import Box2I
    _, result, _ = matched
    kernel = result.psfMatchingKernel
    assert kernel.spatial_function.order == 2
    strip = type(kernel)(kernel.basis, kernel.coefficients, kernel.spatial_function, kernel.kernel_sum,
                         Box2I((0, 0), (256, 16)))
    for k, field in ((kernel, (-0.5, 255.5, -0.5, 255.5)), (strip, (-0.5, 255.5, -0.5, 15.5))):
        maps = _spatial_model_maps(display.plot_kernel_spatial_model(k, result.kernelCellSet), k)
        assert maps
        for G, model, extent in maps:
            assert extent == field
            assert G.shape[0] >= 8 and G.shape[1] >= 8
            span = model.max() - model.min()
            assert span > 0
            np.testing.assert_allclose(G, model, rtol=0, atol=1e-9 * span)


def test_grid_sizes_are_checked(mpl, matched, grid):
    from psfmatch.errors import InvalidInputError
    exposure, result, fit = matched
    kernel = result.psfMatchingKernel
    for ncol in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match=rf"show_kernel_mosaic: ncol must be an integer of at least 1; "
                                                    rf"got {ncol!r}"):
            display.show_kernel_mosaic(kernel, ncol=ncol)
    with pytest.raises(InvalidInputError, match=r"show_kernel_mosaic: nrow must be an integer of at least 1; got 0"):
        display.show_kernel_mosaic(kernel, ncol=3, nrow=0)
    for value in ((0, 0), (5,), 5, (5, -1), (5.0, 5)):
        with pytest.raises(InvalidInputError, match=r"plot_qa: kernel_grid must be two positive integers "
                                                    rf"\(columns, rows\); got {re.escape(repr(value))}"):
            display.plot_qa(result, exposure, grid=grid, kernel_grid=value)
    with pytest.raises(InvalidInputError, match=r"field_qa: shape must be two positive integers \(columns, rows\); "
                                                r"got \(0, 4\)"):
        display.field_qa(kernel, exposure.getPsf(), demo_reference_psf(), 21, shape=(0, 4))
    with pytest.raises(InvalidInputError, match=r"field_qa: shape must be two positive integers"):
        display.qa_report(result, exposure, grid_shape=(-2, 3))
    with pytest.raises(InvalidInputError, match=r"show_kernel_basis: max_kernels must be an integer of at least 1; "
                                                r"got 0"):
        display.show_kernel_basis(fit.kernel.basis, max_kernels=0)
    with pytest.raises(InvalidInputError, match=r"show_candidates: max_side must be an integer of at least 1; got 0"):
        display.show_candidates(result.kernelCellSet, kernel, max_side=0)
    with pytest.raises(InvalidInputError, match=r"plot_kernel_spatial_model: max_terms must be an integer of at "
                                                r"least 1; got -1"):
        display.plot_kernel_spatial_model(kernel, result.kernelCellSet, max_terms=-1)
    # numpy integers are integers; a 1 x 1 grid is a grid
    fig = display.show_kernel_mosaic(kernel, ncol=np.int64(2), nrow=np.int32(1))
    assert fig.get_axes()
    small = display.field_qa(kernel, exposure.getPsf(), demo_reference_psf(), 21, shape=(1, 1))
    assert small["shape"] == [1, 1]


def test_every_figure_without_matplotlib_is_a_missing_dependency_error(matched, monkeypatch):
    from psfmatch.errors import MissingDependencyError, PsfMatchError
    exposure, result, fit = matched
    kernel, cells = result.psfMatchingKernel, result.kernelCellSet
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    calls = {"plot_qa": lambda: display.plot_qa(result, exposure),
             "plot_psf": lambda: display.plot_psf(exposure.getPsf()),
             "show_spatial_cells": lambda: display.show_spatial_cells(exposure, cells),
             "show_candidates": lambda: display.show_candidates(cells, kernel),
             "show_kernel_basis": lambda: display.show_kernel_basis(kernel.basis),
             "show_kernel_mosaic": lambda: display.show_kernel_mosaic(kernel),
             "plot_kernel_spatial_model": lambda: display.plot_kernel_spatial_model(kernel, cells)}
    for name, call in calls.items():
        with pytest.raises(MissingDependencyError, match=r"need matplotlib: pip install 'psfmatch\[plot\]'") as info:
            call()
        assert isinstance(info.value, ImportError) and isinstance(info.value, PsfMatchError), name


def test_binning_an_image_with_an_empty_block_raises_no_warning():
    """A block with no finite pixel is NaN, silently (nanmean warned 'Mean of empty slice', an error under
    -W error, and the spatial-cells display was then skipped); the others are the means of their finite pixels."""
    import warnings

    rng = np.random.default_rng(3)
    image = rng.normal(size=(12, 9))
    image[0:3, 0:3] = np.nan                  # a whole block
    image[3, 4] = np.nan                      # one pixel of a block
    image[8, 8] = np.inf                      # not finite: left out like NaN
    mask = np.zeros(image.shape, np.int32)
    mask[5, 1] = 4
    before = image.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, m, f = display._bin_image(image, mask, max_side=4)
    assert f == 3 and img.shape == (4, 3) and m.shape == (4, 3)
    assert np.isnan(img[0, 0])
    blocks = image.reshape(4, 3, 3, 3).transpose(0, 2, 1, 3).reshape(4, 3, 9)
    for j in range(4):
        for i in range(3):
            if (j, i) != (0, 0):
                b = blocks[j, i]
                assert img[j, i] == pytest.approx(b[np.isfinite(b)].mean(), rel=1e-12)
    assert m[1, 0] == 4 and np.count_nonzero(m) == 1
    np.testing.assert_array_equal(image, before)


# ---------------------------------------------------------------------------
# layout: no overlapping tick labels or texts, nothing cut at the figure's edge (issue: figures of strips,
# constant kernels and real fields had colliding colour-bar labels, legends over the image, clipped titles)


def _drawn_tick_labels(axis):
    """The tick labels matplotlib draws on ``axis`` (those inside its view interval)."""
    lo, hi = sorted(axis.get_view_interval())
    tol = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    out = []
    for ticks, locs in ((axis.get_major_ticks(), axis.get_majorticklocs()),
                        (axis.get_minor_ticks(), axis.get_minorticklocs())):
        for tick, loc in zip(ticks, locs):
            out += [t for t in (tick.label1, tick.label2)
                    if t.get_visible() and t.get_text().strip() and lo - tol <= loc <= hi + tol]
    return out


def _layout_problems(fig):
    """Overlapping tick labels of one axis, overlapping texts around the panels, texts beyond the figure."""
    import itertools

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    problems, ticks, tick_ids, inner = [], [], set(), set()
    for ax in fig.get_axes():
        inner.update(id(t) for t in ax.texts)  # drawn on the data on purpose (tile numbers, notes)
        for axis in (ax.xaxis, ax.yaxis):
            tick_ids.update(id(t) for t in axis.get_ticklabels(which="both"))
            if not (ax.get_visible() and ax.axison):
                continue
            labels = _drawn_tick_labels(axis)
            ticks += labels
            for a, b in itertools.combinations(labels, 2):
                if a.get_window_extent(renderer).padded(-0.5).overlaps(b.get_window_extent(renderer).padded(-0.5)):
                    problems.append(f"tick labels {a.get_text()!r} and {b.get_text()!r} overlap")
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in tick_ids]
    texts += ticks
    width, height = fig.bbox.width, fig.bbox.height
    for t in texts:
        b = t.get_window_extent(renderer)
        if b.x0 < -1 or b.y0 < -1 or b.x1 > width + 1 or b.y1 > height + 1:
            problems.append(f"{t.get_text()!r} reaches beyond the figure")
    around = [t for t in texts if id(t) not in inner]
    for a, b in itertools.combinations(around, 2):
        if a.get_window_extent(renderer).padded(-0.5).overlaps(b.get_window_extent(renderer).padded(-0.5)):
            problems.append(f"{a.get_text()!r} and {b.get_text()!r} overlap")
    return problems


@pytest.fixture(scope="module")
def strip_fit():
    """A 4096 x 256 exposure (a strip) and its kernel fit."""
    exposure = make_demo_exposure((4096, 256), seed=4)
    with warnings.catch_warnings():
        # its two rows of cells fit the variation along x, linear along y: no lowered order, no residual warning
        warnings.simplefilter("error")
        fit = ModelPsfMatchTask(config=ModelPsfMatchConfig()).fitKernel(exposure.getPsf(), demo_reference_psf(),
                                                                        exposure.getBBox())
    return exposure, fit


@pytest.fixture(scope="module")
def constant_fit():
    """A 512 x 512 exposure with a constant PSF: a constant kernel (spatial order 0)."""
    from psfmatch import Exposure

    demo = make_demo_exposure(512, seed=2)
    exposure = Exposure(demo.image, demo.mask, demo.variance, psf=GaussianPsf(21, 21, 1.7))
    fit = ModelPsfMatchTask(config=ModelPsfMatchConfig()).fitKernel(exposure.getPsf(), demo_reference_psf(),
                                                                    exposure.getBBox())
    assert fit.metadata["spatialKernelOrder"] == 0
    return exposure, fit


def test_figures_of_a_strip_have_readable_labels(mpl, strip_fit):
    """On a 4096 x 256 strip, the residual map's horizontal logarithmic colour bar labelled 4e-4, 6e-4, 1e-3,
    2e-3, 3e-3, 4e-3, 6e-3 on top of each other; the asinh colour bar of the kernel mosaic labelled 1e-3, 0 and
    -1e-3 over each other; the spatial-cells legends lay over each other and over the image."""
    exposure, fit = strip_fit
    figures = {"plot_qa": display.plot_qa(fit, science_psf=exposure.getPsf()),
               "show_kernel_mosaic": display.show_kernel_mosaic(fit.kernel),
               "show_spatial_cells": display.show_spatial_cells(exposure, fit.cellSet),
               "plot_psf": display.plot_psf(exposure.getPsf(), bbox=exposure.getBBox()),
               "show_candidates": display.show_candidates(fit.cellSet, fit.kernel)}
    for name, fig in figures.items():
        assert _layout_problems(fig) == [], name
    # the legends of the spatial cells are beside the image, not on it
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures["show_spatial_cells"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.canvas.draw()
    image_ax = fig.get_axes()[0]
    assert len(fig.legends) == 2
    for legend in fig.legends:
        assert not legend.get_window_extent(renderer).overlaps(image_ax.get_window_extent(renderer))
    assert not fig.legends[0].get_window_extent(renderer).overlaps(fig.legends[1].get_window_extent(renderer))


def test_figures_of_a_constant_kernel_have_readable_labels(mpl, constant_fit):
    """A constant kernel: the asinh colour bars labelled 1e-4, 0 and -1e-4 over each other, the PSF profile's
    title was cut at the figure's edge, the spatial model's scatter plot wrote its multiplier (1e-6) over its
    axis label and its colour bars four identical labels (5.3e-06) each."""
    exposure, fit = constant_fit
    figures = {"plot_qa": display.plot_qa(fit, science_psf=exposure.getPsf()),
               "plot_psf": display.plot_psf(exposure.getPsf()),
               "show_candidates": display.show_candidates(fit.cellSet, fit.kernel),
               "show_kernel_mosaic": display.show_kernel_mosaic(fit.kernel),
               "plot_kernel_spatial_model": display.plot_kernel_spatial_model(fit.kernel, fit.cellSet)}
    for name, fig in figures.items():
        assert _layout_problems(fig) == [], name
    fig = figures["plot_kernel_spatial_model"]
    for ax in fig.get_axes():
        labels = [t.get_text() for t in _drawn_tick_labels(ax.yaxis)]
        assert len(labels) == len(set(labels)), labels
        assert ax.yaxis.get_offset_text().get_text() == "" and ax.xaxis.get_offset_text().get_text() == ""
    # the variation panel says that the kernel does not vary, instead of an empty map with a +-1e-12 colour bar
    fig = figures["plot_qa"]
    panel = next(ax for ax in fig.get_axes() if ax.get_title().startswith("spatial variation"))
    assert any(t.get_text().startswith("the kernel is the same over the whole field") for t in panel.texts)
    labels = [ax.get_ylabel() for ax in fig.get_axes()]
    assert "deviation / max K(centre)" not in labels  # no colour bar for it


@pytest.mark.parametrize("shape", [(512, 4096), (256, 4096), (4096, 512)])
def test_figures_of_tall_fields_have_readable_labels(mpl, shape):
    """A tall field: the kernel mosaic's rows followed the field's shape (112 rows of 7 tiles for 256 x 4096) in a
    figure at most 11 in tall, so its y tick labels lay over each other (26 overlaps), and a 512 x 4096 field got
    5 in wide panels whose titles reached beyond the figure and over each other; the candidates' four side-by-side
    panels wrote their long titles over each other.  Now: at most as many rows as tiles of 0.3 in fit, the labels
    of every few rows where they would overlap, titles wrapped to their panels."""
    import warnings

    exposure = make_demo_exposure(shape, seed=4, n_stars=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the spatial order lowered, a residual above qaMaxResidual
        fit = ModelPsfMatchTask().fitKernel(exposure.getPsf(), demo_reference_psf(), exposure.getBBox())
    fig = display.show_kernel_mosaic(fit.kernel)
    assert _layout_problems(fig) == []
    assert fig.get_size_inches()[1] <= 11.0 + 1e-9        # a page, not the 60-120 in of a figure per row
    ax = fig.get_axes()[0]
    k = fit.kernel.getWidth()
    nrow = (ax.get_images()[0].get_array().shape[0] + 1) // (k + 1)
    assert ax.get_window_extent().height / fig.dpi / nrow >= 0.3  # tiles one can see
    # the rows kept span the field (a wide field: one row, at its middle)
    labels = [int(t.get_text()) for t in _drawn_tick_labels(ax.yaxis)]
    assert labels == [shape[1] // 2] if nrow == 1 else (labels[0] == 0 and labels[-1] > 0.75 * (shape[1] - 1))
    assert _layout_problems(display.show_candidates(fit.cellSet, fit.kernel)) == []


@pytest.fixture(scope="module", params=[1.7, 2.0])
def constant_order2_fit(request):
    """A constant Gaussian PSF fitted with spatial order 2 (autoKernel off, as LSST sets it): coefficients that
    are constant but for rounding (relative spreads of 1e-8 for sigma 1.7 and up to 1e-6 for sigma 2.0)."""
    from psfmatch.geom import Box2I

    config = ModelPsfMatchConfig()
    config.autoKernel = False
    fit = ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(21, 21, request.param), demo_reference_psf(),
                                                     Box2I((0, 0), (1024, 1024)))
    assert fit.metadata["spatialKernelOrder"] == 2
    return fit


def test_spatial_model_of_a_constant_psf_with_spatial_order_2(mpl, constant_order2_fit):
    """The colour bars labelled 0.21799306, 0.217993061, 0.217993061, ... (alike) and, next to the scatter plot,
    -0.00519631378 (12 characters, over its axis label): nearly constant maps have one tick at their value, the
    others short labels of the deviation from a value the panel's title names."""
    fit = constant_order2_fit
    fig = display.plot_kernel_spatial_model(fit.kernel, fit.cellSet)
    assert _layout_problems(fig) == []
    for ax in fig.get_axes():
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t.get_text() for t in _drawn_tick_labels(axis)]
            assert len(labels) == len(set(labels)), labels
            assert all(len(t) <= 8 for t in labels), labels
    maps = [ax for ax in fig.get_axes() if ax.get_title().startswith("a") and ax.get_images()]
    assert maps
    for ax in maps:
        cbar = ax.get_images()[0].colorbar
        drawn = _drawn_tick_labels(cbar.ax.yaxis)
        labels = [float(t.get_text()) for t in drawn]
        locs = np.array([t.get_position()[1] for t in drawn])
        values = ax.get_images()[0].get_array()
        centre = re.search(r"colour bar: a\d+ - c, c = (\S+)$", ax.get_title())
        if centre is None:  # constant but for rounding: one tick, at the value
            assert len(labels) == 1
            assert labels[0] == pytest.approx(float(np.mean(values)), rel=5e-3)
        else:  # the labels are the ticks' deviations from c
            assert len(labels) >= 2
            np.testing.assert_allclose(np.array(labels) + float(centre.group(1)), locs, rtol=0,
                                       atol=0.01 * np.ptp(locs))


def test_tick_labels_tell_close_ticks_apart():
    """_distinct_formatter stopped at 9 significant digits: ticks over [1, 1 + 1e-8] read 1, 1, 1, 1.00000001,
    1.00000001.  Each label now differs and reads back as its tick (1.75 is not 1.8); with a centre, labels are
    the deviations."""
    from matplotlib.ticker import MaxNLocator

    for lo, hi in ((1.0, 1.0 + 1e-8), (1.0, 1.0 + 5e-8), (5.3e-6, 5.3e-6 * (1 + 3e-8)), (-0.2, 0.3), (1.0, 1.75)):
        locs = MaxNLocator(4).tick_values(lo, hi)
        f = display._distinct_formatter()
        f.set_locs(locs)
        labels = [f(v) for v in locs]
        assert len(set(labels)) == len(set(locs.tolist())), labels
        np.testing.assert_allclose([float(t) for t in labels], locs, rtol=0, atol=1e-3 * np.ptp(locs))
    locs = MaxNLocator(4).tick_values(-0.00519631380, -0.00519631374)
    f = display._distinct_formatter(centre=-0.0051963138)
    f.set_locs(locs)
    labels = [f(v) for v in locs]
    assert all(len(t) <= 6 for t in labels), labels
    np.testing.assert_allclose([float(t) - 0.0051963138 for t in labels], locs, rtol=0, atol=1e-3 * np.ptp(locs))


def test_scatter_ticks_of_a_narrow_range_are_short(mpl):
    """Ticks of a range narrow for its magnitude (-0.00519631378 and -0.00519631376) are labelled as deviations
    from a centre that the axis label names; an ordinary range keeps plain labels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot()
    lo, hi = -0.00519631380, -0.00519631370
    ax.plot([lo, hi], [lo, hi])
    display._short_ticks(ax.xaxis, lo, hi, "spatial model")
    display._short_ticks(ax.yaxis, -0.2, 0.3, "own solution")
    ax.set_ylim(-0.2, 0.3)
    ax.tick_params(labelsize=6)  # as in plot_kernel_spatial_model
    fig.subplots_adjust(left=0.3, bottom=0.3, right=0.85)
    assert _layout_problems(fig) == []
    drawn = _drawn_tick_labels(ax.xaxis)
    labels = [t.get_text() for t in drawn]
    assert len(labels) >= 2 and all(len(t) <= 6 for t in labels), labels
    centre = float(re.fullmatch(r"spatial model - c\n\(c = (\S+)\)", ax.get_xlabel()).group(1))
    np.testing.assert_allclose([float(t) + centre for t in labels], [t.get_position()[0] for t in drawn], rtol=0,
                               atol=1e-15)
    assert ax.get_ylabel() == "own solution"
    drawn = _drawn_tick_labels(ax.yaxis)
    assert len(drawn) >= 2 and all(float(t.get_text()) == pytest.approx(t.get_position()[1], abs=1e-12) for t in drawn)


def test_colour_bars_are_labelled(mpl, matched, grid):
    exposure, result, _ = matched
    fig = display.plot_qa(result, exposure, grid=grid)
    assert "deviation / max K(centre)" in [ax.get_ylabel() for ax in fig.get_axes()]
    fig = display.plot_psf(exposure.getPsf(), bbox=exposure.getBBox())
    labels = [ax.get_ylabel() for ax in fig.get_axes()]
    assert "moment FWHM [px]" in labels and "|e| (distortion)" in labels
    assert _layout_problems(fig) == []


# ---------------------------------------------------------------------------
# every argument is checked at entry: a typed error naming it and the form that works


def test_qa_arguments_are_checked(mpl, matched, grid, tmp_path):
    """The image array instead of the Exposure, a grid that is not field_qa's, one position instead of a list of
    them, a tuple instead of a box, n=0, a negative stamp size: each an InvalidInputError naming the argument
    (they escaped as AttributeError, TypeError, IndexError or numpy's ValueError, or were silently taken)."""
    from psfmatch.errors import InvalidInputError
    exposure, result, fit = matched
    kernel, sci, ref = result.psfMatchingKernel, exposure.getPsf(), result.psfMatchedExposure.getPsf()
    for call, name in ((display.plot_qa, "plot_qa"), (display.qa_report, "qa_report")):
        with pytest.raises(InvalidInputError, match=rf"{name}: exposure must be the input Exposure \(anything with "
                                                    r"getPsf\(\)\); got an array of shape \(256, 256\): pass the "
                                                    r"Exposure itself, or its PSF as science_psf="):
            call(result, exposure.image)
    # the PSF given as science_psf: the exposure's own model is not needed (a MaskedImage will do)
    assert display.qa_report(result, exposure.getMaskedImage(), science_psf=sci)["metadata"] is not None
    with pytest.raises(InvalidInputError, match=r"plot_qa: grid must be a dict \(what field_qa returns\) or None; "
                                                r"got list \[1, 2\]"):
        display.plot_qa(result, exposure, grid=[1, 2])
    with pytest.raises(InvalidInputError, match=r"plot_qa: grid lacks residualMax: pass what field_qa returns"):
        display.plot_qa(result, exposure, grid={k: v for k, v in grid.items() if k != "residualMax"})
    with pytest.raises(InvalidInputError, match=r"qa_report: grid must be a dict \(what field_qa returns\) or None; "
                                                r"got str 'grid'"):
        display.qa_report(result, exposure, grid="grid")
    with pytest.raises(InvalidInputError, match=r"plot_qa: positions\[0\] must be a point with .x and .y or an "
                                                r"\(x, y\) pair; got 100: positions is a list of \(x, y\) pairs "
                                                r"\(one position is \[\(x, y\)\]\)"):
        display.plot_qa(result, exposure, grid=grid, positions=[100, 100])
    for positions in ([], 7):
        with pytest.raises(InvalidInputError, match=r"plot_qa: positions (is empty: give at least one \(x, y\) "
                                                    r"pair|must be a list of \(x, y\) pairs, e.g. \[\(100, 200\)\]; "
                                                    r"got int 7)"):
            display.plot_qa(result, exposure, grid=grid, positions=positions)
    with pytest.raises(InvalidInputError, match=r"residual_stamps: positions\[1\] must be finite"):
        display.residual_stamps(kernel, sci, ref, 21, [(1, 2), (np.nan, 3)])
    for size in (-3, 0, 20, 21.0, True):
        with pytest.raises(InvalidInputError, match=rf"field_qa: psf_size must be a positive odd integer \(the "
                                                    rf"stamp size, metadata\['psfSize'\]\); got {size!r}"):
            display.field_qa(kernel, sci, ref, size)
    with pytest.raises(InvalidInputError, match=r"field_qa: kernel must be a LinearCombinationKernel "
                                                r"\(result.psfMatchingKernel or fit.kernel\); got KernelBasis"):
        display.field_qa(kernel.basis, sci, ref, 21)
    gauss = GaussianPsf(21, 21, 2.0)
    for call, name in ((display.psf_summary, "psf_summary"), (display.plot_psf, "plot_psf")):
        with pytest.raises(InvalidInputError, match=rf"{name}: position must be a point with .x and .y or an "
                                                    r"\(x, y\) pair; got \[\]"):
            call(gauss, [])
        with pytest.raises(InvalidInputError, match=rf"{name}: position must be a point .*; got 100"):
            call(gauss, 100)
    box = r"must be a non-empty Box2I \(e.g. exposure.getBBox\(\), or Box2I\(\(x0, y0\), \(width, height\)\)\)"
    with pytest.raises(InvalidInputError, match=rf"psf_variation: bbox {box}; got tuple \(0, 0, 100, 100\)"):
        display.psf_variation(gauss, (0, 0, 100, 100))
    for n in (0, -3, float("nan"), 2.0):
        with pytest.raises(InvalidInputError, match=rf"psf_variation: n must be an integer of at least 1; "
                                                    rf"got {re.escape(repr(n))}"):
            display.psf_variation(gauss, exposure.getBBox(), n=n)
    with pytest.raises(InvalidInputError, match=r"plot_qa: kernel_grid must be at most 50 along each side; "
                                                r"got \(51, 5\)"):
        display.plot_qa(result, exposure, grid=grid, kernel_grid=(51, 5))
    # the forms that work: a Point2D, numpy pairs, an (n, 2) array of positions
    from psfmatch.geom import Point2D
    assert display.psf_summary(gauss, Point2D(3.0, 4.0))["x"] == 3.0
    assert display.psf_variation(gauss, exposure.getBBox(), n=np.int64(2))["n"] == 4
    stamps = display.residual_stamps(kernel, sci, ref, 21, np.array([[10.0, 20.0], [200.0, 100.0]]))
    assert [(s["x"], s["y"]) for s in stamps] == [(10.0, 20.0), (200.0, 100.0)]


def test_debug_display_arguments_are_checked(mpl, matched):
    """The kernel instead of its basis, an empty stack, a tuple box, a list of cells, a transparency as text, a
    huge mosaic: typed errors naming the argument (ZeroDivisionError, TypeError, AttributeError, or running out
    of memory before)."""
    from psfmatch.errors import InvalidInputError
    exposure, result, fit = matched
    kernel, cells = result.psfMatchingKernel, result.kernelCellSet
    basis = r"show_kernel_basis: basis must be a KernelBasis \(e.g. kernel.basis\) or a non-empty stack of 2-d images"
    with pytest.raises(InvalidInputError, match=rf"{basis}, shape \(n, height, width\); got an array of shape \(0,\)"):
        display.show_kernel_basis(np.array([]))
    with pytest.raises(InvalidInputError, match=rf"{basis}, .*; got LinearCombinationKernel"):
        display.show_kernel_basis(kernel)
    with pytest.raises(InvalidInputError, match=rf"{basis}, .*; got an array of shape \(5, 5\)"):
        display.show_kernel_basis(np.ones((5, 5)))
    with pytest.raises(InvalidInputError, match=r"show_kernel_mosaic: bbox must be a non-empty Box2I .*; "
                                                r"got tuple \(0, 0, 256, 256\)"):
        display.show_kernel_mosaic(kernel, (0, 0, 256, 256))
    with pytest.raises(InvalidInputError, match=r"show_kernel_mosaic: ncol must be at most 50; got 10000000"):
        display.show_kernel_mosaic(kernel, ncol=10 ** 7)
    with pytest.raises(InvalidInputError, match=r"show_kernel_mosaic: nrow must be at most 50; got 51"):
        display.show_kernel_mosaic(kernel, ncol=2, nrow=51)
    lck = r"must be a LinearCombinationKernel \(result.psfMatchingKernel or fit.kernel\); got NoneType None"
    scs = r"must be a SpatialCellSet \(result.kernelCellSet or fit.cellSet\); got"
    with pytest.raises(InvalidInputError, match=rf"show_kernel_mosaic: kernel {lck}"):
        display.show_kernel_mosaic(None)
    with pytest.raises(InvalidInputError, match=rf"show_candidates: kernel {lck}"):
        display.show_candidates(cells, None)
    with pytest.raises(InvalidInputError, match=rf"show_candidates: cells {scs} list"):
        display.show_candidates(cells.getCellList(), kernel)
    with pytest.raises(InvalidInputError, match=rf"plot_kernel_spatial_model: kernel {lck}"):
        display.plot_kernel_spatial_model(None, cells)
    with pytest.raises(InvalidInputError, match=rf"plot_kernel_spatial_model: cells {scs} NoneType None"):
        display.plot_kernel_spatial_model(kernel, None)
    with pytest.raises(InvalidInputError, match=rf"show_spatial_cells: cells {scs} list"):
        display.show_spatial_cells(exposure, cells.getCellList())
    with pytest.raises(InvalidInputError, match=r"show_spatial_cells: exposure must be an Exposure \(or a "
                                                r"MaskedImage\); got an array of shape \(256, 256\)"):
        display.show_spatial_cells(exposure.image, cells)
    for value in ("60", -1, 101, float("nan"), True):
        with pytest.raises(InvalidInputError, match=r"show_spatial_cells: mask_transparency must be a number from 0 "
                                                    rf"\(opaque\) to 100 \(invisible\), in percent; got "
                                                    rf"{re.escape(repr(value))}"):
            display.show_spatial_cells(exposure, cells, mask_transparency=value)
    # a stack of images that are not square is a basis to show: tiles of their own shape
    fig = display.show_kernel_basis(np.ones((3, 5, 7)))
    assert fig.get_axes()[0].get_images()[0].get_array().shape == (2 * 5 + 2, 2 * 7 + 2)
    assert "3 kernels of 7x5" in fig.get_axes()[0].get_title()


def test_output_arguments_are_checked(mpl, tmp_path):
    """No figure, a dpi of 0 or NaN, no path: typed errors before anything is written (AttributeError,
    matplotlib's ValueError or os.fspath's TypeError before)."""
    from psfmatch.errors import InvalidInputError
    fig = display.plot_psf(GaussianPsf(21, 21, 2.0))
    path = tmp_path / "f.png"
    with pytest.raises(InvalidInputError, match=r"save_figure: fig must be a matplotlib Figure \(what plot_qa and "
                                                r"the other display functions return\); got NoneType None"):
        display.save_figure(None, path)
    for dpi in (0, -5, float("nan"), float("inf"), "high", True):
        with pytest.raises(InvalidInputError, match=r"save_figure: dpi must be a positive finite number \(dots per "
                                                    r"inch, e.g. 110\), 'figure' or None \(matplotlib's savefig.dpi\); "
                                                    rf"got {re.escape(repr(dpi))}"):
            display.save_figure(fig, path, dpi=dpi)
    name = r"must be a file path \(str or os.PathLike\); got None; pass the file's name, e.g. "
    with pytest.raises(InvalidInputError, match=rf"save_figure: path {name}\"qa.png\" or a pathlib.Path"):
        display.save_figure(fig, None)
    with pytest.raises(InvalidInputError, match=rf"figure_format: path {name}\"qa.png\""):
        display.figure_format(None)
    with pytest.raises(InvalidInputError, match=rf"write_qa_json: path {name}\"qa.json\""):
        display.write_qa_json({"a": 1}, None)
    with pytest.raises(InvalidInputError, match=r"save_figure: path must be a file path \(str or os.PathLike\); got "
                                                r"int 3"):
        display.save_figure(fig, 3)
    # a bytes path is a path (os.fspath's), for the format as for the file
    display.save_figure(fig, os.fsencode(tmp_path / "b.png"))
    os.remove(tmp_path / "b.png")
    assert os.listdir(tmp_path) == []
    # the forms that work: numpy numbers (0-d arrays too), the figure's own resolution, matplotlib's default
    display.save_figure(fig, path, dpi=np.float32(50))
    display.save_figure(fig, tmp_path / "g.png", dpi="figure")
    display.save_figure(fig, tmp_path / "h.png", dpi=None)
    display.save_figure(fig, tmp_path / "i.png", dpi=np.array(50))
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g.png", "h.png", "i.png"]
