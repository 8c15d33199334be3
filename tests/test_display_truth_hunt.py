"""Do psfmatch's figures show the truth?  The drawn data, read back from the matplotlib objects, against
inputs whose truth is known.

The exposure is 300 x 180 px with xy0 = (1000, 2000) (not square, parent coordinates not starting at 0); its PSF
is an elliptical Gaussian wider to the right and towards the top (sigma = 1.6 + 0.4 u + 0.15 v) and elongated
along x at the top, along y at the bottom (e1 = 0.2 v), so that a transposed, flipped or shifted panel shows
different numbers.  A second PSF varies along x only, so that its kernel's coefficient maps do too.
"""

import math
import re

import numpy as np
import pytest

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, display
from psfmatch.cells import CandidateStatus, SpatialCellSet
from psfmatch.errors import InvalidInputError
from psfmatch.geom import Box2I
from psfmatch.psf import GaussianPsf, VariableGaussianPsf
from psfmatch.psf.base import pad_or_crop

W, H, X0, Y0 = 300, 180, 1000, 2000
BBOX = Box2I((X0, Y0), (W, H))
FIELD = (X0 - 0.5, X0 + W - 0.5, Y0 - 0.5, Y0 + H - 0.5)  # the field's extent in parent coordinates
PSF_SIZE = 31


@pytest.fixture(scope="module", autouse=True)
def mpl():
    return pytest.importorskip("matplotlib")


def _reference():
    return GaussianPsf(PSF_SIZE, PSF_SIZE, 3.2)


def _match(psf, image=None):
    img = np.random.default_rng(1).normal(size=(H, W)).astype(np.float32) if image is None else image
    exposure = Exposure(img, variance=np.ones((H, W), np.float32), psf=psf, xy0=(X0, Y0))
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 60
    result = ModelPsfMatchTask(config=config).run(exposure, _reference())
    return exposure, result


@pytest.fixture(scope="module")
def varying():
    psf = VariableGaussianPsf(25, 25, BBOX, sigma=(1.6, 0.4, 0.15), e1=(0.0, 0.0, 0.2))
    exposure, result = _match(psf)
    return psf, exposure, result


@pytest.fixture(scope="module")
def x_only():
    psf = VariableGaussianPsf(25, 25, BBOX, sigma=(1.6, 0.4, 0.0))
    exposure, result = _match(psf)
    return psf, exposure, result


def _array(im):
    return np.ma.filled(np.ma.asarray(im.get_array(), dtype=float), np.nan)


def _panels(fig):
    return [ax for ax in fig.get_axes() if ax.get_images() and ax.get_label() != "<colorbar>"]


def _pixel_centres(im):
    """Parent coordinates of the centres of an image's pixels, from its extent (origin lower)."""
    x0, x1, y0, y1 = im.get_extent()
    ny, nx = im.get_array().shape[:2]
    return x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx, y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny


# ---------------------------------------------------------------------------
# the truth of the inputs (what the figures below rely on)


def test_the_inputs_have_the_asymmetries_the_checks_rely_on(varying):
    psf, _, result = varying
    cells = result.kernelCellSet
    assert (cells.nx, cells.ny) == (5, 3)
    assert result.psfMatchingKernel.bbox == BBOX
    left, right = psf.computeShape((X0, Y0 + 90)), psf.computeShape((X0 + W - 1, Y0 + 90))
    bottom, top = psf.computeShape((X0 + 150, Y0)), psf.computeShape((X0 + 150, Y0 + H - 1))
    assert right.fwhm > 1.5 * left.fwhm and top.fwhm > bottom.fwhm
    assert top.e1 > 0.15 and bottom.e1 < -0.15  # elongated along x at the top, along y at the bottom


# ---------------------------------------------------------------------------
# show_candidates


def test_candidate_tiles_are_the_stamps_of_the_candidate_of_their_cell(varying):
    psf, _, result = varying
    cells = result.kernelCellSet
    fig = display.show_candidates(cells, result.psfMatchingKernel)
    science = _panels(fig)[0]
    assert science.images[0].origin == "lower"
    assert [t.get_text() for t in science.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    assert [t.get_text() for t in science.get_yticklabels()] == ["0", "1", "2"]
    assert (science.get_xlabel(), science.get_ylabel()) == ("cell column", "cell row")
    M = _array(science.images[0])
    floor = science.images[0].norm.vmin
    assert science.images[0].norm.vmax == pytest.approx(max(c.science.max() for c in cells.candidates()))
    P, gap = PSF_SIZE, 2
    peaks = np.zeros((cells.ny, cells.nx))
    for n, cell in enumerate(cells.cells):
        j, i = divmod(n, cells.nx)
        (cand,) = cell.candidates
        assert cell.bbox.contains((cand.x, cand.y))
        tile = M[j * (P + gap):j * (P + gap) + P, i * (P + gap):i * (P + gap) + P]
        truth = pad_or_crop(psf.computeKernelImage((cand.x, cand.y)), P, P)
        np.testing.assert_allclose(tile, np.clip(truth / truth.sum(), floor, None), rtol=1e-9, atol=0)
        peaks[j, i] = tile.max()
    # wider to the right and to the top: lower peaks there
    assert np.all(np.diff(peaks, axis=1) < 0) and np.all(np.diff(peaks, axis=0) < 0)


def test_candidate_residual_tiles_and_their_numbers_are_the_candidates_own(varying):
    psf, _, result = varying
    cells, kernel = result.kernelCellSet, result.psfMatchingKernel
    fig = display.show_candidates(cells, kernel)
    _, kern_ax, own_ax, spatial_ax = _panels(fig)
    P, k, gap = PSF_SIZE, kernel.getWidth(), 2
    Msp, Mk = _array(spatial_ax.images[0]), _array(kern_ax.images[0])
    numbers = {tuple(np.round(t.get_position(), 3)): t.get_text() for t in spatial_ax.texts}
    worst = 0.0
    for n, cell in enumerate(cells.cells):
        j, i = divmod(n, cells.nx)
        (cand,) = cell.candidates
        ((stamp,),) = [display.residual_stamps(kernel, psf, _reference(), P, [(cand.x, cand.y)])]
        tile = Msp[j * (P + gap):j * (P + gap) + P, i * (P + gap):i * (P + gap) + P]
        np.testing.assert_allclose(tile, stamp["residual"], rtol=0, atol=1e-3 * np.abs(stamp["residual"]).max())
        ktile = Mk[j * (k + gap):j * (k + gap) + k, i * (k + gap):i * (k + gap) + k]
        np.testing.assert_allclose(ktile, cand.kernel_image / np.sum(cand.kernel_image), rtol=1e-12, atol=1e-15)
        x0, y0 = i * (P + gap) - 0.5, j * (P + gap) - 0.5
        # the number printed on the tile is the candidate's residualMax of the task's QA
        assert numbers[(round(x0 + 1, 3), round(y0 + P - 1, 3))] == f"{cand.qa['residualMax']:.1e}"
        worst = max(worst, np.abs(tile).max())
    # both residual panels share one symmetric scale that holds every residual
    for ax in (own_ax, spatial_ax):
        norm = ax.images[0].norm
        assert norm.vmin == -norm.vmax and norm.vmax >= worst * (1 - 1e-9)


def test_a_bad_candidate_is_outlined_red_at_its_own_cell_only_when_shown(varying):
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    _, _, result = varying
    cells, kernel = result.kernelCellSet, result.psfMatchingKernel
    cand = cells.cells[3].candidates[0]  # column 3, row 0
    status = cand.status
    cand.status = CandidateStatus.BAD
    try:
        for show_bad in (False, True):
            fig = display.show_candidates(cells, kernel, show_bad=show_bad)
            ax = _panels(fig)[0]
            rects = [p for p in ax.patches if isinstance(p, Rectangle)]
            red = [p.get_xy() for p in rects if p.get_edgecolor() == to_rgba(display._STATUS_COLOURS[
                CandidateStatus.BAD])]
            tile = np.ma.getmaskarray(ax.images[0].get_array())[0:PSF_SIZE, 3 * 33:3 * 33 + PSF_SIZE]
            if show_bad:
                assert len(rects) == 15 and red == [(3 * 33 - 0.5, -0.5)] and not tile.any()
            else:
                assert len(rects) == 14 and red == [] and tile.all()
            assert ("1 BAD shown" if show_bad else "1 BAD hidden") in fig._suptitle.get_text()
    finally:
        cand.status = status


# ---------------------------------------------------------------------------
# the kernel mosaic (show_kernel_mosaic, and plot_qa's top row)


def test_kernel_mosaic_tiles_are_the_kernel_at_the_labelled_parent_positions(varying):
    _, _, result = varying
    kernel = result.psfMatchingKernel
    fig = display.show_kernel_mosaic(kernel)
    ax = _panels(fig)[0]
    fig.canvas.draw()
    k = kernel.getWidth()
    xs = np.linspace(X0, X0 + W - 1, 7)
    ys = np.linspace(Y0, Y0 + H - 1, 4)  # 7 columns, rows from the field's shape: round(7 * 180 / 300)
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{x:.0f}" for x in xs]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{y:.0f}" for y in ys]
    M = _array(ax.images[0])
    assert ax.images[0].origin == "lower" and M.shape == (4 * (k + 1) - 1, 7 * (k + 1) - 1)
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            tile = M[j * (k + 1):j * (k + 1) + k, i * (k + 1):i * (k + 1) + k]
            truth = kernel.computeImage((x, y)) / kernel.kernel_sum
            np.testing.assert_allclose(tile, truth, rtol=0, atol=1e-12)


def test_kernel_mosaic_ellipses_follow_the_kernels_shape(varying):
    """The kernel broadens S into R: it is broad where S is narrow (left, bottom) and elongated across the
    science PSF's elongation: along x at the bottom (S along y), along y at the top."""
    from matplotlib.patches import Ellipse

    _, _, result = varying
    fig = display.show_kernel_mosaic(result.psfMatchingKernel)
    ax = _panels(fig)[0]
    ells = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ells) == 28
    grid = np.array(ells, dtype=object).reshape(4, 7)  # row-major from the bottom row
    for e in grid[0]:  # bottom: major axis along x
        assert e.width > e.height and min(abs(e.angle) % 180, 180 - abs(e.angle) % 180) < 1
    for e in grid[-1]:  # top: major axis along y
        assert e.width > e.height and abs(abs(e.angle) % 180 - 90) < 1
    area = np.array([[e.width * e.height for e in row] for row in grid])
    assert np.all(np.diff(area, axis=1) < 0)  # narrower to the right, where S is wider
    k = result.psfMatchingKernel.getWidth()
    centres = np.array([[e.center for e in row] for row in grid])
    np.testing.assert_allclose(centres[..., 0] % (k + 1), (k - 1) / 2, atol=0.05)
    np.testing.assert_allclose(centres[..., 1] % (k + 1), (k - 1) / 2, atol=0.05)


def test_a_kernel_varying_along_x_only_is_drawn_varying_along_x_only(x_only):
    _, _, result = x_only
    kernel = result.psfMatchingKernel
    fig = display.show_kernel_mosaic(kernel)
    mosaic, variation = _panels(fig)[:2]
    k = kernel.getWidth()
    M, V = _array(mosaic.images[0]), _array(variation.images[0])
    tiles = M[:k].reshape(k, -1)  # bottom row
    for j in range(1, 4):  # every row alike
        np.testing.assert_allclose(M[j * (k + 1):j * (k + 1) + k], M[:k], rtol=0, atol=1e-9 * np.nanmax(tiles))
    # the deviation from the kernel at the field's centre: nil in the middle column (x = 1149.5), largest at
    # the sides, and the colour scale symmetric about 0 and just holding it
    middle = V[:, 3 * (k + 1):3 * (k + 1) + k]
    assert np.nanmax(np.abs(middle)) < 1e-9
    left = V[:k, :k]
    assert np.nanmax(np.abs(left)) > 0.1
    norm = variation.images[0].norm
    assert norm.vmin == -norm.vmax == pytest.approx(-np.nanmax(np.abs(V)))
    centre = kernel.computeImage(BBOX.getCenter()) / kernel.kernel_sum
    left_truth = (kernel.computeImage((X0, Y0)) / kernel.kernel_sum - centre) / np.abs(centre).max()
    np.testing.assert_allclose(left, left_truth, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# plot_kernel_spatial_model


def test_spatial_model_discs_are_the_candidates_own_solutions_at_their_parent_positions(varying):
    _, _, result = varying
    kernel, cells = result.psfMatchingKernel, result.kernelCellSet
    fig = display.plot_kernel_spatial_model(kernel, cells)
    cands = list(cells.candidates())
    own = np.array([c.coefficients for c in cands]).T
    cx, cy = np.array([c.x for c in cands]), np.array([c.y for c in cands])
    model = np.asarray(kernel.coefficients) @ kernel.spatial_function.evaluate(cx, cy)
    maps = [ax for ax in _panels(fig) if re.match(r"a\d+:", ax.get_title())]
    assert len(maps) >= 5
    for ax in maps:
        i = int(re.match(r"a(\d+):", ax.get_title()).group(1))
        im = ax.images[0]
        assert im.get_extent() == list(FIELD) and im.origin == "lower"
        (disc,) = ax.collections
        np.testing.assert_array_equal(disc.get_offsets(), np.column_stack([cx, cy]))
        np.testing.assert_array_equal(disc.get_array(), own[i])
        assert disc.norm is im.norm  # the discs on the map's colour scale, which holds both
        assert im.norm.vmin <= min(own[i].min(), np.min(im.get_array()))
        assert im.norm.vmax >= max(own[i].max(), np.max(im.get_array()))
        rms = float(np.sqrt(np.mean((own[i] - model[i]) ** 2)))
        assert re.match(rf"a{i}: rms\(own - model\) {rms:.1e}", ax.get_title())


def test_coefficient_maps_of_a_kernel_varying_along_x_only_vary_along_x_only(x_only):
    _, _, result = x_only
    fig = display.plot_kernel_spatial_model(result.psfMatchingKernel, result.kernelCellSet)
    maps = [ax for ax in _panels(fig) if re.match(r"a\d+:", ax.get_title())]
    assert maps
    for ax in maps:
        G = _array(ax.images[0])
        assert np.ptp(G, axis=0).max() <= 1e-9 * np.ptp(G)  # every row alike: no variation along y
        assert np.ptp(G, axis=1).min() > 1e-3 * np.abs(G).max()  # varying along x (each row)


# ---------------------------------------------------------------------------
# plot_qa


def test_qa_maps_are_the_field_grid_in_parent_coordinates(varying):
    psf, exposure, result = varying
    kernel, cells, md = result.psfMatchingKernel, result.kernelCellSet, result.metadata
    grid = display.field_qa(kernel, psf, _reference(), md["psfSize"], cells=cells)
    fig = display.plot_qa(result, exposure, grid=grid)
    maps = [ax for ax in fig.subfigs[2].get_axes() if ax.get_images()]
    assert len(maps) == 3
    s = grid["summary"]
    for ax, name, worst in zip(maps, ("residualMax", "sizeMismatch", "ellipticityMismatch"),
                               (f"{s['residualMaxWorst']:.2e}", f"{s['sizeMismatchWorst']:+.2e}",
                                f"{s['ellipticityMismatchWorst']:.2e}")):
        im = ax.images[0]
        assert im.origin == "lower" and im.get_extent() == list(FIELD)
        np.testing.assert_array_equal(_array(im), grid[name])
        px, py = _pixel_centres(im)
        np.testing.assert_allclose(px, grid["x"], atol=1e-9)
        np.testing.assert_allclose(py, grid["y"], atol=1e-9)
        assert ax.get_title().endswith(f"worst {worst}")
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x [px]", "y [px]")
        assert ax.get_xlim() == FIELD[:2] and ax.get_ylim() == FIELD[2:]
        offsets = {tuple(p) for c in ax.collections for p in np.asarray(c.get_offsets())}
        assert offsets == {(c.x, c.y) for c in cells.candidates()}
        if name == "residualMax":
            finite = grid[name][grid[name] > 0]
            assert (im.norm.vmin, im.norm.vmax) == (finite.min(), finite.max())
        elif name == "sizeMismatch":
            assert im.norm.vmax == -im.norm.vmin == np.nanmax(np.abs(grid[name]))
        else:
            assert (im.norm.vmin, im.norm.vmax) == (0.0, np.nanmax(grid[name]))


def test_qa_residual_stamps_are_those_at_the_positions_in_their_titles(varying):
    psf, exposure, result = varying
    fig = display.plot_qa(result, exposure)
    stamps = [ax for ax in fig.subfigs[1].get_axes() if ax.get_images()]
    expected = [(X0 + a * (W - 1), Y0 + b * (H - 1)) for a, b in
                ((0.04, 0.96), (0.96, 0.96), (0.5, 0.5), (0.04, 0.04), (0.96, 0.04))]
    assert len(stamps) == len(expected)
    for ax, (x, y) in zip(stamps, expected):
        (truth,) = display.residual_stamps(result.psfMatchingKernel, psf, _reference(), PSF_SIZE, [(x, y)])
        assert ax.get_title() == (f"at ({x:.0f}, {y:.0f})\nmax {truth['residualMax']:.1e}, "
                                  f"size {truth['sizeMismatch']:+.1e}")
        np.testing.assert_array_equal(_array(ax.images[0]), truth["residual"])
        assert ax.images[0].origin == "lower"


def test_qa_summary_prints_the_metadata(varying):
    _, exposure, result = varying
    md = result.metadata
    grid = display.field_qa(result.psfMatchingKernel, exposure.getPsf(), _reference(), md["psfSize"],
                            cells=result.kernelCellSet)
    fig = display.plot_qa(result, exposure, grid=grid)
    (text,) = [t.get_text() for ax in fig.subfigs[0].get_axes() for t in ax.texts]
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines() if line.strip()]
    lines = {row[0]: row[1].split() for row in rows if len(row) == 2}
    assert lines["basis"] == [f"{md['kernelBasisSet']},", f"{md['kernelSize']}x{md['kernelSize']}", "px"]
    assert lines["candidates"][:4] == [str(md["nCandidatesUsed"]), "used", "/", str(md["nCandidatesBuilt"])]
    assert lines["spatial fit"][:2] == ["rank", f"{md['spatialSolutionRank']}/{md['nSpatialUnknowns']},"]
    assert lines["kernel sum"][0] == f"{md['spatialKernelSum']:.7f}"
    cq, bq, gq = md["qa"]["candidates"], md["qa"]["between"], grid["summary"]
    assert lines["max|S*K-R|/R"] == [f"{d['residualMaxWorst']:.1e}" for d in (cq, bq, gq)]
    assert lines["size mismatch"] == [f"{d['sizeMismatchWorst']:+.1e}" for d in (cq, bq, gq)]
    assert lines["kern. shift px"] == [f"{d['kernelShiftWorst']:.1e}" for d in (cq, bq, gq)]
    assert lines["positions"] == [str(cq["n"]), str(bq["n"]), str(gq["n"])]
    assert fig._suptitle.get_text().startswith(f"psfmatch QA: {W}x{H} exposure")


def test_a_grid_of_part_of_the_field_is_drawn_where_it_was_computed(varying):
    psf, exposure, result = varying
    part = Box2I((X0 + 150, Y0 + 90), (150, 90))  # the upper right quarter
    grid = display.field_qa(result.psfMatchingKernel, psf, _reference(), PSF_SIZE, bbox=part)
    try:
        fig = display.plot_qa(result, exposure, grid=grid)
    except InvalidInputError:  # refusing a grid of another box is as good as drawing it right
        return
    for ax in (ax for ax in fig.subfigs[2].get_axes() if ax.get_images()):
        px, py = _pixel_centres(ax.images[0])
        np.testing.assert_allclose(px, grid["x"], atol=1e-6)
        np.testing.assert_allclose(py, grid["y"], atol=1e-6)


# ---------------------------------------------------------------------------
# plot_psf


def test_psf_figure_shows_the_model_where_its_labels_say(varying):
    from matplotlib.patches import Ellipse

    psf = varying[0]
    pos = (1280.0, 2170.0)  # upper right: wide, elongated along x
    fig = display.plot_psf(psf, pos)
    profile = [ax for ax in fig.get_axes() if ax.get_xlabel() == "radius [px]"][0]
    stamp = [ax for ax in _panels(fig) if ax.get_title().startswith("stamp")][0]
    fwhm_map = [ax for ax in _panels(fig) if ax.get_title().startswith("moment FWHM over")][0]
    e_map = [ax for ax in _panels(fig) if ax.get_title().startswith("distortion")][0]
    truth = psf.computeKernelImage(pos)
    im = stamp.images[0]
    assert stamp.get_title().startswith("stamp 25x25 at (1280, 2170)")
    np.testing.assert_array_equal(_array(im), np.clip(truth, im.norm.vmin, None))
    assert im.get_extent() == [-12.5, 12.5, -12.5, 12.5] and im.origin == "lower"
    assert im.norm.vmax == truth.max()
    q = psf.computeShape(pos)
    ells = [p for p in stamp.patches if isinstance(p, Ellipse)]
    assert len(ells) == 2
    for e, nsig in zip(ells, (1, 3)):  # major axis along x: ixx > iyy here
        assert e.angle % 180 == pytest.approx(0, abs=1e-6)
        assert e.width == pytest.approx(2 * nsig * math.sqrt(q.ixx), rel=1e-6)
        assert e.height == pytest.approx(2 * nsig * math.sqrt(q.iyy), rel=1e-6)
    # the maps: the model's FWHM and distortion at each map pixel's centre, in parent coordinates
    for ax, value in ((fwhm_map, lambda s: s.fwhm), (e_map, lambda s: math.hypot(s.e1, s.e2))):
        im = ax.images[0]
        assert im.get_extent() == list(FIELD) and im.origin == "lower"
        px, py = _pixel_centres(im)
        expect = np.array([[value(psf.computeShape((x, y))) for x in px] for y in py])
        np.testing.assert_allclose(_array(im), expect, rtol=1e-9)
        ((star,),) = [line.get_xydata() for line in ax.lines]
        assert tuple(star) == pos
    F = _array(fwhm_map.images[0])
    assert np.all(np.diff(F, axis=1) > 0) and np.all(np.diff(F, axis=0) > 0)  # wider right and up
    # whiskers: along y at the bottom (e1 < 0), along x at the top (e1 > 0)
    quiver = e_map.collections[0]
    U, V = np.asarray(quiver.U).reshape(F.shape), np.asarray(quiver.V).reshape(F.shape)
    assert np.all(np.abs(V[0]) > 100 * np.abs(U[0])) and np.all(np.abs(U[-1]) > 100 * np.abs(V[-1]))
    info = display.psf_summary(psf, pos)
    assert profile.get_title().startswith(f"moment FWHM {info['fwhm']:.3f} px (2.355 sigma)\n|e| {info['e']:.3f}")
    assert info["fwhm"] == pytest.approx(q.fwhm) and info["e"] == pytest.approx(math.hypot(q.e1, q.e2))


def test_psf_stamp_ellipse_sits_on_an_off_centre_psfs_centroid():
    from matplotlib.patches import Ellipse

    class OffCentre:  # 25 wide, 21 tall, centroid (+1.5, -1.0) px from the centre pixel, ixy > 0
        def computeKernelImage(self, position):
            yy, xx = np.mgrid[0:21, 0:25] - np.array([10 - 1.0, 12 + 1.5])[:, None, None]
            g = np.exp(-0.5 * (xx ** 2 * 0.3 - 2 * 0.2 * xx * yy + yy ** 2 * 0.5) / 1.0)
            return g / g.sum()

    fig = display.plot_psf(OffCentre(), (10, 20))
    ax = [ax for ax in _panels(fig) if ax.get_title().startswith("stamp")][0]
    assert ax.get_title().startswith("stamp 25x21 at (10, 20)")
    assert ax.images[0].get_extent() == [-12.5, 12.5, -10.5, 10.5]
    e = [p for p in ax.patches if isinstance(p, Ellipse)][0]
    assert e.center == pytest.approx((1.5, -1.0), abs=1e-3)
    # precision matrix [[0.3, -0.2], [-0.2, 0.5]]: covariance with ixy > 0, major axis up and to the right
    cov = np.linalg.inv([[0.3, -0.2], [-0.2, 0.5]])
    evals, evecs = np.linalg.eigh(cov)
    major = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1])) % 180
    assert 0 < major < 90
    assert e.angle % 180 == pytest.approx(major, abs=1.0)
    assert e.width > e.height


# ---------------------------------------------------------------------------
# show_spatial_cells and show_kernel_basis


def test_spatial_cells_figure_is_in_parent_coordinates():
    from matplotlib.patches import Rectangle

    image = np.tile(np.arange(W, dtype=np.float32), (H, 1))  # value = column
    image[150:160, 20:30] = 1e4
    psf = VariableGaussianPsf(25, 25, BBOX, sigma=(1.6, 0.4, 0.15))
    exposure, result = _match(psf, image)
    exposure.mask[0:10, 0:5] |= exposure.getMask().getPlaneBitMask("BAD")
    cells = result.kernelCellSet
    fig = display.show_spatial_cells(exposure, cells)
    ax = _panels(fig)[0]
    im = ax.images[0]
    assert im.get_extent() == list(FIELD) and im.origin == "lower"
    np.testing.assert_array_equal(_array(im), image)
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert sorted((r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects) == sorted(
        (c.bbox.getMinX() - 0.5, c.bbox.getMinY() - 0.5, c.bbox.getWidth(), c.bbox.getHeight()) for c in cells)
    offsets = {tuple(p) for c in ax.collections for p in np.asarray(c.get_offsets())}
    assert offsets == {(c.x, c.y) for c in cells.candidates()}
    overlay = _array(ax.images[1])
    assert ax.images[1].get_extent() == list(FIELD)
    np.testing.assert_array_equal(np.argwhere(overlay[..., 3] > 0).min(0)[:2], [0, 0])
    np.testing.assert_array_equal(np.argwhere(overlay[..., 3] > 0).max(0)[:2], [9, 4])  # rows 0-9, columns 0-4
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert f"BAD: 50 px ({50 / (W * H):.2%})" in legend and "GOOD (15)" in legend


def test_a_binned_image_is_drawn_where_its_blocks_are():
    width, height = 4100, 40  # binned 3 x 3: 1366 whole blocks, 2 columns left over
    image = np.tile(np.arange(width, dtype=np.float64) + X0, (height, 1))  # value = parent x
    exposure = Exposure(image, variance=np.ones_like(image), psf=GaussianPsf(25, 25, 1.5), xy0=(X0, Y0))
    cells = SpatialCellSet(Box2I((X0, Y0), (width, height)), 1000, 40)
    fig = display.show_spatial_cells(exposure, cells)
    im = _panels(fig)[0].images[0]
    px, _ = _pixel_centres(im)
    drawn = _array(im)[0]
    assert drawn.size == 1366
    np.testing.assert_allclose(px, drawn, atol=0.01)  # each block drawn centred on its own pixels


def test_basis_tiles_are_the_numbered_basis_kernels(varying):
    kernel = varying[2].psfMatchingKernel
    images = kernel.basis.images
    fig = display.show_kernel_basis(kernel.basis)
    ax = fig.get_axes()[0]
    M = _array(ax.images[0])
    n, k = len(images), images.shape[-1]
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    numbers = {t.get_text(): t.get_position() for t in ax.texts if not t.get_text().startswith("sum")}
    assert sorted(numbers, key=int) == [str(m) for m in range(n)]
    for m in range(n):
        x, y = numbers[str(m)]  # top left corner of its tile
        c, r = int(round((x - 0.8 + 0.5) / (k + 2))), int(round((y + 0.8 - k + 0.5) / (k + 2)))
        assert (c, nrow - 1 - r) == (m % ncol, m // ncol)  # read like text: from the top left
        tile = M[r * (k + 2):r * (k + 2) + k, c * (k + 2):c * (k + 2) + k]
        np.testing.assert_allclose(tile, images[m] / np.abs(images[m]).max(), rtol=0, atol=1e-15)
    sums = [t.get_text() for t in ax.texts if t.get_text().startswith("sum")]
    assert sums == ["sum 1"]  # only the first kernel has a non-zero sum
    assert ax.get_title().startswith(f"alard-lupton basis: {n} kernels of {k}x{k}")
