"""Pictures and reports of a PSF match: the QA figure, the QA report, and the debug displays.

Two groups of functions live here.

QA a person can look at
    :func:`field_qa` evaluates the spatial kernel's match quality on a grid over
    the whole field; :func:`qa_report` gathers it with the task's metadata into
    a JSON-serializable mapping (:func:`write_qa_json` writes it); :func:`plot_qa`
    draws one figure: the kernel across the field, residual stamps at a few
    positions, and maps of the residual, the size mismatch and the ellipticity
    mismatch.  :func:`psf_summary`, :func:`psf_variation` and :func:`plot_psf`
    describe one PSF model.
Debug displays (LSST's, see :mod:`psfmatch.debug`)
    :func:`show_spatial_cells`, :func:`show_candidates`, :func:`show_kernel_basis`,
    :func:`show_kernel_mosaic` and :func:`plot_kernel_spatial_model`, called by
    :func:`debug_displays` from the task when the switches are set.

The numbers need numpy only.  The figures need matplotlib (``pip install
'psfmatch[plot]'``), imported inside the functions that draw.  They are built as
:class:`matplotlib.figure.Figure` objects, without pyplot, so they never change
the caller's backend or global state, and are returned for saving
(:func:`save_figure`, atomic) or showing.  Debug figures go to the screen when
one is available (``DISPLAY``, ``WAYLAND_DISPLAY`` or an interactive
``MPLBACKEND``), else to PNG files (see :func:`debug_displays`).

Conventions: images are drawn with ``origin="lower"`` and parent pixel
coordinates on the axes; residuals are ``(S (*) K - R) / max R`` with ``S`` the
science PSF, ``K`` the unit-sum kernel and ``R`` the reference PSF.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys

import numpy as np

from .cells import CandidateStatus, SpatialCellSet
from .errors import InvalidInputError, MissingDependencyError, PsfEvaluationError
from .geom import Box2I, Point2D, _scalar, as_point
from .image import MaskedImage
from .kernel import LinearCombinationKernel
from .psf.base import as_psf, model_domain, pad_or_crop
from .qa import QA_DTYPE, match_quality, matched_stamps, summarize

__all__ = [
    "QA_FIELDS",
    "field_qa",
    "residual_stamps",
    "qa_report",
    "write_qa_json",
    "json_safe",
    "psf_summary",
    "psf_variation",
    "plot_qa",
    "plot_psf",
    "show_spatial_cells",
    "show_candidates",
    "show_kernel_basis",
    "show_kernel_mosaic",
    "plot_kernel_spatial_model",
    "debug_displays",
    "save_figure",
    "has_screen",
]

log = logging.getLogger(__name__)

#: The per-position QA quantities of :func:`psfmatch.qa.match_quality`.
QA_FIELDS = ("residualMax", "residualRms", "sizeMismatch", "ellipticityMismatch", "kernelNegativeFraction",
             "centroidShift", "apertureFluxMismatch", "kernelShift")

_INSTALL_HINT = "psfmatch's figures need matplotlib: pip install 'psfmatch[plot]' (or pip install matplotlib)"

# colours of candidates by status (LSST's: cyan GOOD, yellow UNKNOWN, red BAD)
_STATUS_COLOURS = {CandidateStatus.GOOD: "#00e5ff", CandidateStatus.UNKNOWN: "#ffd700",
                   CandidateStatus.BAD: "#ff2a2a"}

# mask plane colours (close to afwDisplay's, made distinct)
_MASK_COLOURS = {"BAD": "#e41a1c", "SAT": "#4daf4a", "INTRP": "#a6d854", "CR": "#ff33cc", "EDGE": "#ffd92f",
                 "DETECTED": "#377eb8", "DETECTED_NEGATIVE": "#00ced1", "SUSPECT": "#b15928",
                 "NO_DATA": "#ff7f00"}
_EXTRA_COLOURS = ["#984ea3", "#66c2a5", "#e78ac3", "#8da0cb", "#fc8d62", "#a65628"]

_DEFAULT_MASK_TRANSPARENCY = 60.0

# a relative spread of values below which plot_kernel_spatial_model draws a coefficient as constant
_FLAT = 1e-6

# the narrowest panel of show_kernel_mosaic [in]: a tall field gets fewer rows instead of narrower panels
_MOSAIC_MIN_SIDE = 3.0

# the most tiles along a side of a kernel mosaic (LSST shows 7): beyond, the tiles are too small to see
# and the kernels realized for them fill the memory
_MOSAIC_MAX_SIDE = 50


# ---------------------------------------------------------------------------
# numbers (numpy only)


def _is_count(value, minimum=1) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``minimum``."""
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= minimum)


def _count(value, name, minimum=1, maximum=None) -> int:
    """``value`` as an int when it is an integer from ``minimum`` to ``maximum`` (no upper bound when None),
    else an :class:`InvalidInputError`."""
    if not _is_count(value, minimum):
        raise InvalidInputError(f"{name} must be an integer of at least {minimum}; got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(f"{name} must be at most {maximum}; got {value!r}")
    return int(value)


def _grid_arg(value, name, maximum=None) -> tuple:
    """A grid size ``(columns, rows)`` of positive integers (each at most ``maximum`` when given), else an
    :class:`InvalidInputError` naming it."""
    try:
        ncol, nrow = value
    except (TypeError, ValueError):
        ncol = nrow = None
    if not (_is_count(ncol) and _is_count(nrow)):
        raise InvalidInputError(f"{name} must be two positive integers (columns, rows); got {value!r}")
    if maximum is not None and max(ncol, nrow) > maximum:
        raise InvalidInputError(f"{name} must be at most {maximum} along each side; got {value!r}")
    return int(ncol), int(nrow)


def _describe(value) -> str:
    """``value`` for an error message: its type, with the shape of an array, and its repr when short."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 60 else type(value).__name__


def _check_kernel(kernel, name):
    """An :class:`InvalidInputError` unless ``kernel`` is a :class:`LinearCombinationKernel`."""
    if not isinstance(kernel, LinearCombinationKernel):
        raise InvalidInputError(f"{name} must be a LinearCombinationKernel (result.psfMatchingKernel or "
                                f"fit.kernel); got {_describe(kernel)}")


def _check_cells(cells, name):
    """An :class:`InvalidInputError` unless ``cells`` is a :class:`SpatialCellSet`."""
    if not isinstance(cells, SpatialCellSet):
        raise InvalidInputError(f"{name} must be a SpatialCellSet (result.kernelCellSet or fit.cellSet); got "
                                f"{_describe(cells)}")


def _check_box(bbox, name):
    """An :class:`InvalidInputError` unless ``bbox`` is a non-empty :class:`~psfmatch.geom.Box2I`."""
    if not isinstance(bbox, Box2I) or bbox.isEmpty():
        raise InvalidInputError(f"{name} must be a non-empty Box2I (e.g. exposure.getBBox(), or Box2I((x0, y0), "
                                f"(width, height))); got {_describe(bbox)}")


def _points(positions, name) -> list:
    """``positions`` (a non-empty sequence of ``(x, y)`` pairs) as a list of :class:`Point2D`."""
    if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
        raise InvalidInputError(f"{name} must be a list of (x, y) pairs, e.g. [(100, 200)]; got "
                                f"{_describe(positions)}")
    points = []
    for i, p in enumerate(positions):
        try:
            points.append(as_point(p, f"{name}[{i}]"))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{exc}: positions is a list of (x, y) pairs (one position is [(x, y)])") \
                from None
    if not points:
        raise InvalidInputError(f"{name} is empty: give at least one (x, y) pair")
    return points


def _products(result, exposure=None, science_psf=None, what="the QA"):
    """Kernel, cell set, metadata, science PSF, reference PSF, stamp size and box of a match.

    ``result`` is a :class:`~psfmatch.task.PsfMatchResult` or a :class:`~psfmatch.task.KernelFit`;
    ``exposure`` anything with ``getPsf`` (the input exposure); ``what`` names the caller in errors.
    """
    if hasattr(result, "psfMatchingKernel"):
        kernel, cells, md = result.psfMatchingKernel, result.kernelCellSet, result.metadata
        ref = result.psfMatchedExposure.getPsf()
    elif hasattr(result, "kernel") and hasattr(result, "cellSet"):
        kernel, cells, md, ref = result.kernel, result.cellSet, result.metadata, result.referencePsf
    else:
        raise InvalidInputError(f"expected a PsfMatchResult or a KernelFit (what ModelPsfMatchTask.run or fitKernel "
                                f"return); got {type(result).__name__}")
    if science_psf is None and exposure is not None and not callable(getattr(exposure, "getPsf", None)):
        raise InvalidInputError(f"{what}: exposure must be the input Exposure (anything with getPsf()); got "
                                f"{_describe(exposure)}: pass the Exposure itself, or its PSF as science_psf=")
    sci = science_psf if science_psf is not None else (exposure.getPsf() if exposure is not None else None)
    psf_size = int(md.get("psfSize") or getattr(result, "psfSize", 0) or 0)
    if not psf_size:
        psf_size = max(ref.computeKernelImage(kernel.bbox.getCenter()).shape)
    bbox = kernel.bbox if kernel.bbox is not None else cells.getBBox()
    return kernel, cells, md, (None if sci is None else as_psf(sci)), as_psf(ref), psf_size, bbox


def _stamps(sci, ref, psf_size, xs, ys):
    """Science and reference stamps (``psf_size`` square, unit sum) at positions; ``ok`` where both worked."""
    n = len(xs)
    S = np.zeros((n, psf_size, psf_size))
    R = np.zeros((n, psf_size, psf_size))
    ok = np.zeros(n, dtype=bool)
    from .progress import progress_bar
    for i in progress_bar(range(n), desc="QA positions", total=n):
        p = Point2D(float(xs[i]), float(ys[i]))
        try:
            s = pad_or_crop(sci.computeKernelImage(p), psf_size, psf_size)
            r = ref.computeKernelImage(p)
        except PsfEvaluationError as exc:
            log.debug("QA: PSF not evaluated at (%.1f, %.1f): %s", p.x, p.y, exc)
            continue
        if r.shape != (psf_size, psf_size):
            r = pad_or_crop(r, psf_size, psf_size)
        if not (s.sum() > 0 and r.sum() > 0):
            continue
        S[i], R[i], ok[i] = s / s.sum(), r / r.sum(), True
    return S, R, ok


def _grid_shape(bbox, cells=None, n=None):
    """Grid of QA positions: four per cell along the longer side, 16 to 32 per side, square pixels."""
    w, h = bbox.getWidth(), bbox.getHeight()
    if n is None:
        base = 4 * max(getattr(cells, "nx", 4), getattr(cells, "ny", 4))
        n = int(np.clip(base, 16, 32))
    if w >= h:
        return int(n), max(2, int(round(n * h / w)))
    return max(2, int(round(n * w / h))), int(n)


def field_qa(kernel, science_psf, reference_psf, psf_size, bbox=None, *, shape=None, cells=None) -> dict:
    """Match quality of the spatial kernel on a regular grid of positions over the field.

    At each grid position the science PSF ``S`` and the reference ``R`` are
    realized on ``psf_size`` stamps and :func:`psfmatch.qa.match_quality` is
    evaluated with the unit-sum kernel ``K`` there.

    Parameters
    ----------
    kernel : LinearCombinationKernel
    science_psf, reference_psf : PSF models
    psf_size : int
        Stamp size (the task's ``metadata["psfSize"]``), a positive odd integer.
    bbox : Box2I, optional
        The field (default: the kernel's box).
    shape : (int, int), optional
        Number of positions ``(nx, ny)``; by default four per cell along the longer side, 16 to 32.
    cells : SpatialCellSet, optional
        Used only for the default grid density.

    Returns
    -------
    dict
        ``x`` (nx,) and ``y`` (ny,) pixel positions of the grid columns and rows,
        ``shape`` ``[ny, nx]``, ``box`` ``[x0, y0, width, height]`` (the box the
        grid covers, where :func:`plot_qa` draws it), one ``(ny, nx)`` array per :data:`QA_FIELDS`
        (NaN where a PSF could not be evaluated), and ``summary``
        (:func:`psfmatch.qa.summarize` of the grid).
    """
    _check_kernel(kernel, "field_qa: kernel")
    if not (_is_count(psf_size) and psf_size % 2 == 1):
        raise InvalidInputError(f"field_qa: psf_size must be a positive odd integer (the stamp size, "
                                f"metadata['psfSize']); got {psf_size!r}")
    if bbox is not None:
        _check_box(bbox, "field_qa: bbox")
    bbox = bbox if bbox is not None else kernel.bbox
    if bbox is None:
        raise InvalidInputError("field_qa needs the field's box: the kernel has none (pass bbox=)")
    nx, ny = _grid_arg(shape, "field_qa: shape") if shape is not None else _grid_shape(bbox, cells)
    w, h = bbox.getWidth(), bbox.getHeight()
    xs = bbox.getMinX() - 0.5 + (np.arange(nx) + 0.5) * w / nx
    ys = bbox.getMinY() - 0.5 + (np.arange(ny) + 0.5) * h / ny
    X, Y = np.meshgrid(xs, ys)
    S, R, ok = _stamps(as_psf(science_psf), as_psf(reference_psf), psf_size, X.ravel(), Y.ravel())
    out = {"x": xs, "y": ys, "shape": [int(ny), int(nx)], "box": [int(bbox.getMinX()), int(bbox.getMinY()), int(w), int(h)]}
    for name in QA_FIELDS:
        out[name] = np.full(nx * ny, np.nan)
    if np.any(ok):
        K = kernel.computeImages(X.ravel()[ok], Y.ravel()[ok]) / kernel.kernel_sum
        q = match_quality(S[ok], R[ok], K)
        for name in QA_FIELDS:
            out[name][ok] = q[name]
        out["summary"] = summarize(q)
    else:
        out["summary"] = {"n": 0}
    for name in QA_FIELDS:
        out[name] = out[name].reshape(ny, nx)
    return out


def residual_stamps(kernel, science_psf, reference_psf, psf_size, positions) -> list:
    """``(S (*) K - R) / max R`` on the reference stamp at each position, with its QA numbers.

    Parameters
    ----------
    kernel : LinearCombinationKernel
    science_psf, reference_psf : PSF models
    psf_size : int
        Stamp size (the task's ``metadata["psfSize"]``).
    positions : list of (x, y)
        Where to evaluate (at least one position).

    Returns
    -------
    list of dict
        One per position where both PSFs could be evaluated: ``x``, ``y``,
        ``residual`` (``psf_size`` square) and the :data:`QA_FIELDS` values.
    """
    _check_kernel(kernel, "residual_stamps: kernel")
    points = _points(positions, "residual_stamps: positions")
    xs = np.array([p.x for p in points])
    ys = np.array([p.y for p in points])
    S, R, ok = _stamps(as_psf(science_psf), as_psf(reference_psf), psf_size, xs, ys)
    if not np.any(ok):
        return []
    K = kernel.computeImages(xs[ok], ys[ok]) / kernel.kernel_sum
    m = matched_stamps(S[ok], K, QA_DTYPE)  # the precision of match_quality, so the numbers agree
    h = K.shape[-1] // 2
    D = (m[:, h:h + psf_size, h:h + psf_size] - R[ok]) / R[ok].max(axis=(1, 2))[:, None, None]
    q = match_quality(S[ok], R[ok], K)
    out = []
    for n, i in enumerate(np.flatnonzero(ok)):
        d = {"x": float(xs[i]), "y": float(ys[i]), "residual": D[n]}
        d.update({name: float(q[name][n]) for name in QA_FIELDS})
        out.append(d)
    return out


def json_safe(obj):
    """``obj`` with numpy scalars and arrays turned into Python numbers and lists, NaN and inf into None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "to_dict"):
        return json_safe(obj.to_dict())
    if hasattr(obj, "value") and hasattr(obj, "name"):  # enums
        return json_safe(obj.value)
    return str(obj)


def qa_report(result, exposure=None, *, science_psf=None, grid=None, grid_shape=None) -> dict:
    """Everything needed to judge a match, as a JSON-serializable mapping.

    Parameters
    ----------
    result : PsfMatchResult or KernelFit
    exposure : Exposure, optional
        The *input* exposure (its PSF is the science PSF); needed for the field grid.
    science_psf : PSF model, optional
        Instead of ``exposure``.
    grid : dict, optional
        A :func:`field_qa` result to reuse (computed here otherwise, when a science PSF is known).
    grid_shape : (int, int), optional
        Passed to :func:`field_qa`.

    Returns
    -------
    dict
        ``qa`` (the metadata's ``qa`` entry: worst and median values at the
        candidates and between them), ``grid`` (the field grid, if computed),
        ``candidates`` (each candidate's position, status and QA), ``metadata``
        (the task's full metadata) and ``psfmatchVersion``.  NaN and inf become null.
    """
    from . import __version__

    kernel, cells, md, sci, ref, psf_size, bbox = _products(result, exposure, science_psf, "qa_report")
    if grid is not None and not isinstance(grid, dict):
        raise InvalidInputError(f"qa_report: grid must be a dict (what field_qa returns) or None; got "
                                f"{_describe(grid)}")
    if grid is None and sci is not None:
        grid = field_qa(kernel, sci, ref, psf_size, bbox, shape=grid_shape, cells=cells)
    report = {
        "psfmatchVersion": __version__,
        "bbox": bbox.to_dict(),
        "qa": md.get("qa", {}),
        "candidates": [c.to_dict() for c in cells.candidates()],
        "metadata": md,
    }
    if grid is not None:
        report["grid"] = {k: v for k, v in grid.items()}
    return json_safe(report)


def write_qa_json(report, path, *, overwrite=False):
    """Write a :func:`qa_report` mapping to ``path`` as JSON, atomically (temporary file + rename).

    NaN and inf are written as null (strict JSON).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    OutputNotWritableError
        If the directory of ``path`` does not accept the file (no permission,
        a read-only or full file system); an ``OSError`` naming the output.
    """
    from .io.fits import as_path, atomic_write

    path = as_path(path, "write_qa_json: path", '"qa.json"')
    text = json.dumps(json_safe(report), indent=1, allow_nan=False)
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
    return path


def psf_summary(psf, position=None) -> dict:
    """Size and shape of a PSF model at ``position`` (its average position by default).

    Parameters
    ----------
    psf : PSF model
    position : (x, y) or Point2D, optional
        Where to evaluate it.

    Returns
    -------
    dict
        ``x``, ``y``, ``width``, ``height`` (stamp), ``fwhm`` and ``sigma``
        (adaptive-moment determinant radius, pixels), ``ixx``, ``iyy``, ``ixy``,
        ``e1``, ``e2``, ``e`` (distortion), ``centroidX``/``centroidY`` (offset
        from the centre pixel), ``edgeFluxFraction`` (flux in the outermost ring
        of pixels: large values mean a truncated PSF), ``spatiallyVarying``.
    """
    p = as_psf(psf)
    pos = p.getAveragePosition() if position is None else as_point(position, "psf_summary: position")
    img = p.computeKernelImage(pos)
    q = p.computeShape(pos)
    edge = np.ones(img.shape, dtype=bool)
    edge[1:-1, 1:-1] = False
    return {"x": float(pos[0]), "y": float(pos[1]), "width": int(img.shape[1]), "height": int(img.shape[0]),
            "fwhm": q.fwhm, "sigma": q.sigma, "ixx": q.ixx, "iyy": q.iyy, "ixy": q.ixy, "e1": q.e1, "e2": q.e2,
            "e": float(np.hypot(q.e1, q.e2)), "centroidX": q.x, "centroidY": q.y,
            "edgeFluxFraction": float(img[edge].sum() / img.sum()),
            "spatiallyVarying": bool(p.isSpatiallyVarying())}


def psf_variation(psf, bbox, n=5) -> dict:
    """Range of a PSF model's FWHM and ellipticity over an ``n x n`` grid spanning ``bbox``.

    Parameters
    ----------
    psf : PSF model
    bbox : Box2I
        The region (e.g. the model's domain or the exposure's box).
    n : int
        Positions along each side, at least 1.

    Returns
    -------
    dict
        ``n`` (positions evaluated), ``fwhmMin``, ``fwhmMax``, ``eMax``.

    Raises
    ------
    InvalidInputError
        If ``bbox`` is not a non-empty Box2I or ``n`` not a positive integer.
    """
    p = as_psf(psf)
    _check_box(bbox, "psf_variation: bbox")
    n = _count(n, "psf_variation: n")
    xs, ys = _grid_positions(bbox, n, n)
    fwhm, e = [], []
    for y in ys:
        for x in xs:
            try:
                q = p.computeShape((x, y))
            except PsfEvaluationError:
                continue
            fwhm.append(q.fwhm)
            e.append(float(np.hypot(q.e1, q.e2)))
    if not fwhm:
        return {"n": 0}
    return {"n": len(fwhm), "fwhmMin": float(min(fwhm)), "fwhmMax": float(max(fwhm)), "eMax": float(max(e))}


# ---------------------------------------------------------------------------
# matplotlib plumbing


def _mpl():
    """matplotlib, or :class:`~psfmatch.errors.MissingDependencyError` (an ``ImportError``) with the install hint."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(_INSTALL_HINT) from None
    return matplotlib


def has_screen() -> bool:
    """Whether figures can be shown on screen (else they are written to files).

    ``MPLBACKEND`` wins when set (a non-interactive backend such as ``agg``
    means no screen); otherwise a screen exists on macOS and Windows, and
    elsewhere when ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set.
    """
    backend = os.environ.get("MPLBACKEND", "").strip().lower()
    if backend:
        return not _is_file_backend(backend)
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _is_file_backend(name: str) -> bool:
    name = name.lower()
    return name in {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"} or name.endswith("backend_agg")


def _figure(figsize, fig=None, layout="constrained"):
    """A new Figure (not registered with pyplot), or ``fig`` cleared and resized."""
    _mpl()
    from matplotlib.figure import Figure

    if fig is not None:
        fig.clf()
        fig.set_size_inches(*figsize)
        fig.set_layout_engine(layout)
        return fig
    return Figure(figsize=figsize, layout=layout)


def figure_format(path, what="figure", fmt=None) -> str:
    """The image format of a figure file (``fmt``, else its extension, else PNG), checked before any work.

    Raises
    ------
    MissingDependencyError
        Without matplotlib.
    InvalidInputError
        For a ``path`` that is not a file name (``str`` or ``os.PathLike``), a format matplotlib does not
        write, or ``pgf`` without the TeX engine it runs.
    """
    import shutil

    from .errors import InvalidInputError, MissingDependencyError

    try:
        import matplotlib
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise MissingDependencyError(f"{what} needs matplotlib: pip install 'psfmatch[plot]'") from None
    from .io.fits import as_path

    path = as_path(path, "figure_format: path", '"qa.png"')
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".") or "png").lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise InvalidInputError(f"{what} {path}: unknown figure format {fmt!r}; use one of "
                                f"{', '.join(sorted(known))}")
    if fmt == "pgf":
        tex = matplotlib.rcParams.get("pgf.texsystem", "xelatex")
        if shutil.which(tex) is None:
            raise InvalidInputError(f"{what} {path}: the pgf format runs {tex}, which is not installed; "
                                    "use pdf or svg")
    return fmt


def save_figure(fig, path, *, dpi=110, fmt=None, overwrite=False):
    """Save ``fig`` to ``path`` atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or path-like
    dpi : float, "figure" or None
        Resolution: a positive finite number, ``"figure"`` for the figure's own, or None for
        matplotlib's ``rcParams["savefig.dpi"]``.
    fmt : str, optional
        ``"png"``, ``"pdf"``, ``"svg"``...; by default the file extension (else PNG).
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    OutputNotWritableError
        If the directory of ``path`` does not accept the file (no permission,
        a read-only or full file system); an ``OSError`` naming the output.
    InvalidInputError
        If ``fig`` is not a Figure, ``path`` not a file name, ``dpi`` not a positive finite number, or the
        format not one matplotlib writes here (see ``figure_format``).
    """
    from .io.fits import as_path, atomic_write

    path = as_path(path, "save_figure: path", '"qa.png"')
    fmt = figure_format(path, "figure", fmt)
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise InvalidInputError(f"save_figure: fig must be a matplotlib Figure (what plot_qa and the other "
                                f"display functions return); got {_describe(fig)}")
    dpi = _scalar(dpi)
    if not (dpi is None or (isinstance(dpi, str) and dpi == "figure")
            or (isinstance(dpi, (int, float, np.integer, np.floating)) and not isinstance(dpi, (bool, np.bool_))
                and math.isfinite(dpi) and dpi > 0)):
        raise InvalidInputError(f"save_figure: dpi must be a positive finite number (dots per inch, e.g. 110), "
                                f"'figure' or None (matplotlib's savefig.dpi); got {dpi!r}")
    with atomic_write(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, facecolor="white")
    return path


def _sym_limit(arrays, floor=1e-12):
    vals = [np.nanmax(np.abs(a)) for a in arrays if a is not None and np.any(np.isfinite(a))]
    return max(max(vals) if vals else 0.0, floor)


def _mosaic(tiles, ncol, nrow, tile_shape, gap=1):
    """Place ``tiles[(i, j)]`` (column i, row j from the bottom) on a NaN canvas with ``gap``-pixel gutters."""
    th, tw = tile_shape
    M = np.full((nrow * (th + gap) - gap, ncol * (tw + gap) - gap), np.nan)
    for (i, j), t in tiles.items():
        if t is None:
            continue
        M[j * (th + gap):j * (th + gap) + th, i * (tw + gap):i * (tw + gap) + tw] = t
    return M


def _tile_centre(i, j, tile_shape, gap=1):
    th, tw = tile_shape
    return i * (tw + gap) + (tw - 1) / 2.0, j * (th + gap) + (th - 1) / 2.0


def _cmap(name, bad="#d9d9d9"):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=bad)


def _plain_label(text) -> str:
    """A tick label without its mathtext markup, about as long as it is drawn (``$10^{-3}$`` -> ``10-3``)."""
    for old, new in (("\\mathdefault", ""), ("\\times", "x"), ("$", ""), ("{", ""), ("}", ""), ("^", "")):
        text = text.replace(old, new)
    return text


def _spaced_locator(candidates, norm, fontsize):
    """A tick locator for a colour bar: ``candidates`` in order of preference, each kept only when its
    label clears the labels already kept.

    The space a label needs is measured when the ticks are drawn (after the layout), from the colour
    bar's length and the labels' font size: so a short or horizontal colour bar gets fewer ticks
    instead of overlapping labels (matplotlib's locators for asinh and logarithmic scales label
    ticks that nearly coincide, e.g. 0 and 1e-4 on an asinh stretch).  ``norm`` maps a value to its
    position along the bar (0 to 1).
    """
    from matplotlib.ticker import Locator

    class SpacedLocator(Locator):
        def __call__(self):
            axis = self.axis
            ax = axis.axes
            along_x = axis is ax.xaxis
            length = ax.bbox.width if along_x else ax.bbox.height
            size = fontsize * ax.figure.dpi / 72.0
            fmt = axis.get_major_formatter()
            kept, where = [], []
            for v in candidates:
                f = float(norm(v))
                if not (math.isfinite(f) and -1e-9 <= f <= 1 + 1e-9):
                    continue
                if along_x:  # the labels' widths: each needs half its width on either side
                    need = lambda u: (0.62 * len(_plain_label(fmt.format_ticks([u])[0])) + 0.6) * size / 2
                    if all(abs(f - g) * length >= need(v) + need(u) for g, u in zip(where, kept)):
                        kept.append(v)
                        where.append(f)
                elif all(abs(f - g) * length >= 1.5 * size for g in where):  # superscripts make labels tall
                    kept.append(v)
                    where.append(f)
            return sorted(kept)

    return SpacedLocator()


def _decade_candidates(lo, hi, linear_width=None):
    """Tick values in order of preference for a logarithmic (``lo > 0``) or symmetric asinh scale.

    Log: the decades, then 2x and 5x, then the other multiples.  Asinh (``-hi .. hi``, linear within
    ``linear_width`` of 0): 0, then +-1eN from the largest decade down to a tenth of ``linear_width``.
    """
    top = math.floor(math.log10(hi))
    if linear_width is not None:
        bottom = math.floor(math.log10(max(linear_width / 10.0, hi * 1e-12)))
        return [0.0] + [s * 10.0 ** e for e in range(top, bottom - 1, -1) for s in (1.0, -1.0)]
    decades = range(math.floor(math.log10(lo)), top + 1)
    return [m * 10.0 ** e for group in ((1,), (2, 5), (3, 4, 6, 7, 8, 9)) for m in group for e in decades]


def _log_colorbar_ticks(cb, norm, fontsize=7):
    """Label a logarithmic colour bar with ticks whose labels do not overlap (decades first)."""
    from matplotlib.ticker import NullFormatter

    axis = cb.ax.xaxis if cb.orientation == "horizontal" else cb.ax.yaxis
    axis.set_major_locator(_spaced_locator(_decade_candidates(norm.vmin, norm.vmax), norm, fontsize))
    axis.set_minor_formatter(NullFormatter())


def _asinh_colorbar_ticks(cb, norm, fontsize=7):
    """Label a symmetric asinh colour bar (0 and +-decades) with labels that do not overlap."""
    axis = cb.ax.xaxis if cb.orientation == "horizontal" else cb.ax.yaxis
    axis.set_major_locator(_spaced_locator(_decade_candidates(None, norm.vmax, norm.linear_width), norm, fontsize))


def _distinct_formatter(centre=0.0):
    """A tick formatter in ``%g`` style with just the significant digits that tell the ticks apart.

    Unlike matplotlib's default it writes no separate offset or multiplier text (``1e-6`` at the end
    of an axis, which collides with the axis label), and unlike a fixed ``%.2g`` it never labels two
    ticks alike nor rounds one (1.75 is not 1.8), with up to 17 significant digits (which tell any
    two doubles apart).  With ``centre`` it labels the deviation of each tick from ``centre`` (short
    labels for ticks that differ in their 8th digit; the caller names the centre, e.g. in the axis
    label).
    """
    from matplotlib.ticker import Formatter

    class DistinctFormatter(Formatter):
        ticks = ()

        def set_locs(self, locs):
            self.ticks = tuple(locs)

        def __call__(self, x, pos=None):
            locs = np.asarray([v for v in self.ticks if np.isfinite(v)], dtype=float) - centre
            x = x - centre
            scale = float(np.abs(locs).max()) if locs.size else abs(x)
            values = np.unique(locs)
            step = float(np.diff(values).min()) if values.size > 1 else math.inf
            # zero, but for rounding (of a tick or of its difference from the centre)
            if abs(x) <= max(1e-9 * scale, 1e-6 * step if values.size > 1 else 0.0):
                return "0"
            for digits in range(2, 18):  # each label distinct, and its tick to a thousandth of a step
                if len({f"{v:.{digits}g}" for v in values}) == values.size and \
                        all(abs(float(f"{v:.{digits}g}") - v) <= 1e-3 * step for v in values):
                    break
            return f"{x:.{digits}g}"

    return DistinctFormatter()


def _short_ticks(axis, lo, hi, label=None, *, fontsize=8, nbins=4):
    """Label ``axis`` (values from ``lo`` to ``hi``) with at most ``nbins`` ticks whose labels are short.

    Ticks that would need more than 4 significant digits to differ (a range narrow for its
    magnitude: -0.00519631378 and -0.00519631376) are labelled as their deviations from a round
    centre value ``c``.  Returns ``c`` as text (None for plain labels), for the caller to name; with
    ``label``, the axis label is ``label``, or ``label - c`` with ``(c = ...)`` under it.
    """
    from matplotlib.ticker import MaxNLocator

    span, size = hi - lo, max(abs(lo), abs(hi))
    if not (np.isfinite(span) and 0 < span < 1e-3 * size):
        axis.set_major_locator(MaxNLocator(nbins))
        axis.set_major_formatter(_distinct_formatter())
        if label:
            axis.set_label_text(label, fontsize=fontsize)
        return None
    unit = 10.0 ** math.floor(math.log10(span))
    centre = round(0.5 * (lo + hi) / unit) * unit
    text = f"{centre:.{math.floor(math.log10(abs(centre) / unit)) + 1}g}"

    class OffsetLocator(MaxNLocator):  # round deviations from the centre (1e-10, not 1.1e-10)
        def tick_values(self, vmin, vmax):
            return super().tick_values(vmin - centre, vmax - centre) + centre

    axis.set_major_locator(OffsetLocator(nbins))
    axis.set_major_formatter(_distinct_formatter(centre))
    if label:
        axis.set_label_text(f"{label} - c\n(c = {text})", fontsize=fontsize)
    return text


def _tile_ticks(axis, centres, labels, fontsize=7):
    """Tick a mosaic's tiles at ``centres`` with ``labels``: every tile, or every n-th tile where the
    labels of neighbouring tiles would overlap.

    The room is measured when the ticks are drawn (after the layout), from the axis length: a tall
    mosaic of many small tiles gets a label on every few rows instead of labels over each other.
    """
    from matplotlib.ticker import FuncFormatter, Locator

    centres = np.asarray(centres, dtype=float)
    labels = list(labels)

    class TileLocator(Locator):
        def __call__(self):
            ax = self.axis.axes
            along_x = self.axis is ax.xaxis
            length = ax.bbox.width if along_x else ax.bbox.height
            lo, hi = self.axis.get_view_interval()
            size = fontsize * ax.figure.dpi / 72.0
            if along_x:  # horizontal labels need their width, plus a gap
                need = (0.62 * max((len(t) for t in labels), default=1) + 0.8) * size
            else:
                need = 1.5 * size
            pitch = abs(centres[1] - centres[0]) * length / max(abs(hi - lo), 1e-300) if len(centres) > 1 else 1.0
            step = max(1, int(math.ceil(need / max(pitch, 1e-300))))
            return centres[::step]

    def label(v, pos=None):
        return labels[int(np.argmin(np.abs(centres - v)))] if len(centres) else ""

    axis.set_major_locator(TileLocator())
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_tick_params(labelsize=fontsize)


def _wrap(text, width_in, fontsize):
    """``text`` wrapped (each of its lines) to about ``width_in`` inches at ``fontsize`` points."""
    import textwrap

    chars = max(12, int(width_in * 72.0 / (0.6 * fontsize)))
    return "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, width=chars) or [""]))


def _fmt_pos(v):
    return f"{v:.0f}"


def _grid_positions(bbox, ncol, nrow, inset=0.0):
    """``ncol x nrow`` positions spread over ``bbox`` (pixel centres of the outermost at ``inset`` from the edges)."""
    x0, x1 = bbox.getMinX() + inset, bbox.getMaxX() - inset
    y0, y1 = bbox.getMinY() + inset, bbox.getMaxY() - inset
    xs = np.linspace(x0, x1, ncol) if ncol > 1 else np.array([(x0 + x1) / 2])
    ys = np.linspace(y0, y1, nrow) if nrow > 1 else np.array([(y0 + y1) / 2])
    return xs, ys


def _kernel_grid(kernel, bbox, ncol, nrow):
    xs, ys = _grid_positions(bbox, ncol, nrow)
    X, Y = np.meshgrid(xs, ys)
    imgs = kernel.computeImages(X.ravel(), Y.ravel()) / kernel.kernel_sum
    return xs, ys, imgs.reshape(nrow, ncol, *imgs.shape[1:])


def _tick_tiles(ax, xs, ys, k):
    """Label the tiles of a kernel mosaic (``k x k`` tiles at positions ``xs``, ``ys``) with their positions."""
    _tile_ticks(ax.xaxis, [_tile_centre(i, 0, (k, k))[0] for i in range(len(xs))], [_fmt_pos(x) for x in xs])
    _tile_ticks(ax.yaxis, [_tile_centre(0, j, (k, k))[1] for j in range(len(ys))], [_fmt_pos(y) for y in ys])


def _draw_kernel_variation(ax, kernel, bbox, imgs, xs, ys, title):
    """``[K(x) - K(centre)] / max K(centre)`` for the mosaic's kernels ``imgs`` (nrow, ncol, k, k) at the
    positions ``xs``, ``ys`` (from :func:`_draw_kernel_mosaic`), on ``ax``; returns the image."""
    from matplotlib.colors import TwoSlopeNorm

    nrow, ncol, k = imgs.shape[0], imgs.shape[1], imgs.shape[-1]
    centre = kernel.computeImage(bbox.getCenter()) / kernel.kernel_sum
    dev = (imgs - centre) / np.abs(centre).max()
    tiles = {(i, j): dev[j, i] for j in range(nrow) for i in range(ncol)}
    vlim = _sym_limit([dev])
    im = ax.imshow(_mosaic(tiles, ncol, nrow, (k, k)), origin="lower", cmap=_cmap("PuOr_r", "white"),
                   norm=TwoSlopeNorm(0.0, -vlim, vlim), interpolation="nearest")
    _tick_tiles(ax, xs, ys, k)
    ax.set_xlabel("x of the kernel position [px]")
    ax.set_title(title, fontsize=10)
    if vlim <= 1e-9:  # a constant kernel (spatial order 0): an empty panel and a colour bar of +-1e-12 say nothing
        sf = kernel.spatial_function
        why = "spatial order 0" if sf is None or getattr(sf, "order", None) == 0 else "no measurable variation"
        ax.text(0.5, 0.5, f"the kernel is the same over the whole field\n({why}: |deviation| < 1e-9)",
                ha="center", va="center", fontsize=9, transform=ax.transAxes,
                bbox={"facecolor": "white", "edgecolor": "0.6", "alpha": 0.9})
        return None
    return im


def _draw_kernel_mosaic(ax, kernel, bbox, ncol, nrow, *, ellipses=False, title=None):
    """The unit-sum kernel on an ``ncol x nrow`` grid spanning ``bbox``, one tile per position."""
    from matplotlib.colors import AsinhNorm
    from matplotlib.patches import Ellipse

    from .moments import adaptive_moments

    xs, ys, imgs = _kernel_grid(kernel, bbox, ncol, nrow)
    k = imgs.shape[-1]
    tiles = {(i, j): imgs[j, i] for j in range(nrow) for i in range(ncol)}
    M = _mosaic(tiles, ncol, nrow, (k, k))
    vmax = _sym_limit([imgs])
    im = ax.imshow(M, origin="lower", cmap=_cmap("RdBu_r", "white"),
                   norm=AsinhNorm(linear_width=vmax * 0.02, vmin=-vmax, vmax=vmax), interpolation="nearest")
    ax.set_aspect("equal")
    _tick_tiles(ax, xs, ys, k)
    ax.set_xlabel("x of the kernel position [px]")
    ax.set_ylabel("y [px]")
    if ellipses:
        ixx, iyy, ixy, xc, yc, ok = adaptive_moments(imgs.reshape(-1, k, k))
        for n in range(nrow * ncol):
            j, i = divmod(n, ncol)
            if not ok[n]:
                continue
            cx, cy = _tile_centre(i, j, (k, k))
            cov = np.array([[ixx[n], ixy[n]], [ixy[n], iyy[n]]])
            evals, evecs = np.linalg.eigh(cov)
            angle = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1]))
            ax.add_patch(Ellipse((cx + xc[n], cy + yc[n]), 2 * 2 * np.sqrt(evals[1]), 2 * 2 * np.sqrt(evals[0]),
                                 angle=angle, fill=False, ec="black", lw=0.7))
            ax.plot(cx + xc[n], cy + yc[n], "+", color="black", ms=4, mew=0.7)
    if title:
        ax.set_title(title, fontsize=10)
    return im, xs, ys, imgs


def _overlay_candidates(ax, cells, show_bad=True, size=30, legend=True, lw=1.2, halo=False):
    """Circles at the candidates, coloured by status (cyan GOOD, yellow UNKNOWN, red BAD).

    With ``halo`` the markers are black on a white halo (readable on any colour map).
    """
    handles = []
    for status in (CandidateStatus.GOOD, CandidateStatus.UNKNOWN, CandidateStatus.BAD):
        if status == CandidateStatus.BAD and not show_bad:
            continue
        pts = [(c.x, c.y) for c in cells.candidates(status)]
        if not pts:
            continue
        x, y = np.array(pts).T
        marker = "x" if status == CandidateStatus.BAD else "o"
        colour = _STATUS_COLOURS[status]
        if halo:
            hk = {"facecolors": "none", "edgecolors": "white"} if marker == "o" else {"c": "white"}
            ax.scatter(x, y, s=size, marker=marker, linewidths=lw + 1.6, **hk)
            colour = "black" if status != CandidateStatus.BAD else "#d40000"
        kw = {"facecolors": "none", "edgecolors": colour} if marker == "o" else {"c": colour}
        h = ax.scatter(x, y, s=size, marker=marker, linewidths=lw, label=f"{status.value} ({len(pts)})", **kw)
        handles.append(h)
    if legend and handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.7, title="candidates",
                  title_fontsize=7)
    return handles


def _draw_cells(ax, cells, colour="white", lw=0.6, alpha=0.6):
    from matplotlib.patches import Rectangle

    for cell in cells:
        b = cell.bbox
        ax.add_patch(Rectangle((b.getMinX() - 0.5, b.getMinY() - 0.5), b.getWidth(), b.getHeight(), fill=False,
                               ec=colour, lw=lw, alpha=alpha))


def _field_extent(bbox):
    return (bbox.getMinX() - 0.5, bbox.getMaxX() + 0.5, bbox.getMinY() - 0.5, bbox.getMaxY() + 0.5)


# ---------------------------------------------------------------------------
# the QA figure


def _grid_extent(grid, bbox):
    """The extent of a :func:`field_qa` map: the box it was computed on (its ``"box"``; for a grid without one,
    from the spacing of its ``x`` and ``y``), which may be part of the field ``bbox``."""
    if "box" in grid:
        x0, y0, w, h = (float(v) for v in grid["box"])
        return (x0 - 0.5, x0 - 0.5 + w, y0 - 0.5, y0 - 0.5 + h)
    edges = []
    for key, lo, hi in (("x", bbox.getMinX(), bbox.getMaxX()), ("y", bbox.getMinY(), bbox.getMaxY())):
        v = np.asarray(grid.get(key, ()), dtype=float)
        if v.size > 1:
            step = (v[-1] - v[0]) / (v.size - 1)
            edges += [v[0] - step / 2, v[-1] + step / 2]
        else:
            edges += [lo - 0.5, hi + 0.5]
    return tuple(edges)


def _qa_map(fig, ax, grid, name, bbox, cells, *, title, cmap, norm, label, fmt=None):
    wide = bbox.getWidth() > 1.3 * bbox.getHeight()
    Z = grid[name]
    # drawn where it was computed (field_qa's bbox= may be part of the field), in the field's frame
    im = ax.imshow(Z, origin="lower", extent=_grid_extent(grid, bbox), cmap=_cmap(cmap), norm=norm,
                   interpolation="nearest", aspect="equal")
    _draw_cells(ax, cells, colour="0.3", lw=0.5, alpha=0.5)
    _overlay_candidates(ax, cells, size=22, legend=False, lw=0.9, halo=True)
    ax.set_xlim(bbox.getMinX() - 0.5, bbox.getMaxX() + 0.5)
    ax.set_ylim(bbox.getMinY() - 0.5, bbox.getMaxY() + 0.5)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    ax.tick_params(labelsize=7)
    from matplotlib.colors import LogNorm

    if wide:  # a colour bar beside a wide map would be much taller than it
        from matplotlib.ticker import MaxNLocator

        cb = fig.colorbar(im, ax=ax, location="bottom", shrink=0.9, format=fmt, pad=0.02)
        if not isinstance(norm, LogNorm):
            cb.ax.xaxis.set_major_locator(MaxNLocator(4))
    else:
        cb = fig.colorbar(im, ax=ax, shrink=0.9, format=fmt)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(which="both", labelsize=7)
    if isinstance(norm, LogNorm):
        _log_colorbar_ticks(cb, norm)
    return im



def _summary_lines(md, grid):
    def g(d, k, f="{:.2e}"):
        v = d.get(k)
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f.format(v)

    k = md.get("kernelSize")
    lines = [
        f"basis        {md.get('kernelBasisSet')}, {k}x{k} px",
        f"spatial      {md.get('spatialModelType')} order {md.get('spatialKernelOrder')}"
        + (f" (asked {md.get('spatialKernelOrderRequested')})"
           if md.get("spatialKernelOrderRequested") != md.get("spatialKernelOrder") else ""),
        f"PSF stamps   {md.get('psfSize')} px",
        f"candidates   {md.get('nCandidatesUsed')} used / {md.get('nCandidatesBuilt')} built,"
        f" {md.get('nCandidatesRejected')} rejected",
        f"spatial fit  rank {md.get('spatialSolutionRank')}/{md.get('nSpatialUnknowns')},"
        f" cond {g(md, 'spatialConditionNum', '{:.2g}')}",
        f"kernel sum   {g(md, 'spatialKernelSum', '{:.7f}')} at centre",
        "",
        "worst over        cand.     between   grid",
    ]
    qa = md.get("qa", {})
    cq, bq = qa.get("candidates", {}), qa.get("between", {})
    gq = (grid or {}).get("summary", {})
    rows = [("max|S*K-R|/R", "residualMaxWorst", "{:.1e}"), ("rms /max R", "residualRmsWorst", "{:.1e}"),
            ("size mismatch", "sizeMismatchWorst", "{:+.1e}"), ("ellip. mism.", "ellipticityMismatchWorst", "{:.1e}"),
            ("kernel neg.", "kernelNegativeFractionWorst", "{:.1e}"),
            ("centroid [px]", "centroidShiftWorst", "{:.1e}"), ("aperture flux", "apertureFluxMismatchWorst", "{:.1e}"),
            ("kern. shift px", "kernelShiftWorst", "{:.1e}")]
    for label, key, f in rows:
        lines.append(f"{label:<14s} {g(cq, key, f):>9s} {g(bq, key, f):>9s} {g(gq, key, f):>9s}")
    lines.append(f"{'positions':<14s} {cq.get('n', 0):>9d} {bq.get('n', 0):>9d} {gq.get('n', 0):>9d}")
    import textwrap

    for note in md.get("notes", []):
        lines.append("")
        lines.extend(textwrap.wrap("note: " + note, width=46, subsequent_indent="  "))
    return lines


def plot_qa(result, exposure=None, *, science_psf=None, grid=None, positions=None, kernel_grid=(5, 5), fig=None,
            title=None):
    """One figure to judge a PSF match.

    Top row: the unit-sum kernel across the field, its variation relative to the
    field centre, and a summary of the numbers.  Middle row: residual stamps
    ``(S (*) K - R) / max R`` at the four corners and the centre of the field.
    Bottom row: maps over the field of the residual, the size mismatch and the
    ellipticity mismatch (:func:`field_qa`), with the candidates marked
    (circles GOOD, crosses BAD).

    Parameters
    ----------
    result : PsfMatchResult or KernelFit
    exposure : Exposure, optional
        The *input* exposure (its PSF is the science PSF).
    science_psf : PSF model, optional
        Instead of ``exposure``.
    grid : dict, optional
        A :func:`field_qa` result to reuse.
    positions : list of (x, y), optional
        Where to show residual stamps (default: corners and centre).
    kernel_grid : (int, int)
        Columns and rows of the kernel mosaic (each at most 50).
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared); a new one otherwise.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm

    ncol, nrow = _grid_arg(kernel_grid, "plot_qa: kernel_grid", _MOSAIC_MAX_SIDE)
    kernel, cells, md, sci, ref, psf_size, bbox = _products(result, exposure, science_psf, "plot_qa")
    if sci is None:
        raise InvalidInputError("plot_qa needs the science PSF: pass the input exposure or science_psf=")
    if grid is not None:
        if not isinstance(grid, dict):
            raise InvalidInputError(f"plot_qa: grid must be a dict (what field_qa returns) or None; got "
                                    f"{_describe(grid)}")
        missing = [key for key in ("shape", "residualMax", "sizeMismatch", "ellipticityMismatch") if key not in grid]
        if missing:
            raise InvalidInputError(f"plot_qa: grid lacks {', '.join(missing)}: pass what field_qa returns, or None")
    if positions is not None:
        positions = _points(positions, "plot_qa: positions")
    if grid is None:
        grid = field_qa(kernel, sci, ref, psf_size, bbox, cells=cells)
    if positions is None:
        fx = [0.04, 0.96, 0.5, 0.04, 0.96]
        fy = [0.96, 0.96, 0.5, 0.04, 0.04]
        positions = [(bbox.getMinX() + a * (bbox.getWidth() - 1), bbox.getMinY() + b * (bbox.getHeight() - 1))
                     for a, b in zip(fx, fy)]
    stamps = residual_stamps(kernel, sci, ref, psf_size, positions)

    maps = 0.45 + 0.6 * min(1.0, bbox.getHeight() / bbox.getWidth())  # the maps' row follows the field's shape
    fig = _figure((15, 13.5 - 4.5 * (1.05 - maps)), fig)
    k = kernel.getWidth()
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=[1.25, 0.72, maps], hspace=0.02)

    # --- top: kernel mosaic, variation, summary
    ax_k, ax_v, ax_t = top.subplots(1, 3, width_ratios=[1, 1, 0.85])
    im, xs, ys, imgs = _draw_kernel_mosaic(ax_k, kernel, bbox, ncol, nrow,
                                           title=f"matching kernel K across the field ({ncol}x{nrow}, unit sum)")
    cb = top.colorbar(im, ax=ax_k, shrink=0.85)
    cb.set_label("K (asinh stretch)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    _asinh_colorbar_ticks(cb, im.norm)
    im2 = _draw_kernel_variation(ax_v, kernel, bbox, imgs, xs, ys,
                                 "spatial variation: [K(x) - K(centre)] / max K(centre)")
    if im2 is not None:
        cb = top.colorbar(im2, ax=ax_v, shrink=0.85)
        cb.set_label("deviation / max K(centre)", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    ax_t.axis("off")
    ax_t.text(0.0, 1.0, "\n".join(_summary_lines(md, grid)), va="top", ha="left", family="monospace",
              fontsize=8.3, transform=ax_t.transAxes)
    ax_t.set_title("summary (worst values)", fontsize=10, loc="left")

    # --- middle: residual stamps
    n = max(1, len(stamps))
    axs = np.atleast_1d(middle.subplots(1, n))
    rl = _sym_limit([s["residual"] for s in stamps])
    norm = TwoSlopeNorm(0.0, -rl, rl)
    im3 = None
    for ax, s in zip(axs, stamps):
        im3 = ax.imshow(s["residual"], origin="lower", cmap=_cmap("RdBu_r"), norm=norm, interpolation="nearest")
        ax.set_title(f"at ({s['x']:.0f}, {s['y']:.0f})\nmax {s['residualMax']:.1e}, "
                     f"size {s['sizeMismatch']:+.1e}", fontsize=8.5)
        ax.set_xticks([])
        ax.set_yticks([])
    if im3 is not None:
        # "%.1e" labels: matplotlib's default puts a multiplier (1e-8) above the bar for small residuals
        cb = middle.colorbar(im3, ax=list(axs), shrink=0.9, pad=0.01, format="%.1e")
        cb.set_label("(S*K - R) / max R", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    else:
        axs[0].axis("off")
        axs[0].text(0.5, 0.5, "no position where both PSFs could be evaluated", ha="center")
    middle.suptitle("matched-PSF residual stamps (science PSF convolved with the kernel, minus the reference)",
                    fontsize=10)

    # --- bottom: maps
    ax1, ax2, ax3 = bottom.subplots(1, 3)
    rm = grid["residualMax"]
    finite = rm[np.isfinite(rm) & (rm > 0)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1e-6, 1e-5)
    if hi <= lo * 1.01:
        lo, hi = lo / 2, hi * 2
    gs = grid.get("summary", {})
    _qa_map(bottom, ax1, grid, "residualMax", bbox, cells, cmap="magma", norm=LogNorm(lo, hi),
            title=f"residual max|S*K - R| / max R\nworst {gs.get('residualMaxWorst', float('nan')):.2e}",
            label="max |S*K - R| / max R")
    sl = _sym_limit([grid["sizeMismatch"]])
    _qa_map(bottom, ax2, grid, "sizeMismatch", bbox, cells, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -sl, sl),
            title=f"size mismatch sigma(S*K)/sigma(R) - 1\nworst {gs.get('sizeMismatchWorst', float('nan')):+.2e}",
            label="fractional size mismatch", fmt="%.1e")
    el = grid["ellipticityMismatch"]
    emax = float(np.nanmax(el)) if np.any(np.isfinite(el)) else 1.0
    _qa_map(bottom, ax3, grid, "ellipticityMismatch", bbox, cells, cmap="viridis",
            norm=Normalize(0.0, max(emax, 1e-12)),
            title=f"ellipticity mismatch |e(S*K) - e(R)|\nworst {gs.get('ellipticityMismatchWorst', float('nan')):.2e}",
            label="|delta e|", fmt="%.1e")
    bottom.suptitle(f"match quality of the spatial kernel over the field ({grid['shape'][1]}x{grid['shape'][0]} "
                    "positions; circles: candidates, x: rejected; lines: cells)", fontsize=10)

    if title is None:
        title = (f"psfmatch QA: {bbox.getWidth()}x{bbox.getHeight()} exposure, {md.get('kernelBasisSet')} kernel "
                 f"{k}x{k}, spatial order {md.get('spatialKernelOrder')}")
    fig.suptitle(title, fontsize=13, weight="bold")
    return fig


# ---------------------------------------------------------------------------
# PSF inspection


def plot_psf(psf, position=None, *, bbox=None, fig=None, title=None):
    """The PSF stamp at ``position`` (log stretch, with its adaptive-moment ellipse), its radial
    profile, and, for a spatially varying model with a known domain, maps of its FWHM and ellipticity.

    Parameters
    ----------
    psf : PSF model
    position : (x, y), optional
        Default: the model's average position.
    bbox : Box2I, optional
        Domain for the maps (default: ``psf.getBBox()`` when the model has one).
    fig : Figure, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Ellipse

    p = as_psf(psf)
    if position is not None:
        position = as_point(position, "plot_psf: position")
    if bbox is not None:
        _check_box(bbox, "plot_psf: bbox")
    info = psf_summary(p, position)
    pos = (info["x"], info["y"])
    img = p.computeKernelImage(pos)
    if bbox is None:
        bbox = model_domain(psf)  # (None for a model without a domain: no maps)
    varying = info["spatiallyVarying"] and isinstance(bbox, Box2I)
    ncols = 4 if varying else 2
    aspect = bbox.getWidth() / bbox.getHeight() if varying else 1.0
    cb_kw = {}
    if aspect > 2.5:  # an elongated field: its maps get a row each, the full width, colour bars below
        fig = _figure((10.0, 5.0 + 2 * (9.0 / aspect + 1.4)), fig)
        gs = fig.add_gridspec(3, 2, height_ratios=[4.4, 9.0 / aspect + 1.4, 9.0 / aspect + 1.4])
        axs = [fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :]),
               fig.add_subplot(gs[2, :])]
        cb_kw = {"location": "bottom", "aspect": 40}
    else:
        fig = _figure((4.2 * ncols, 4.6), fig)
        axs = fig.subplots(1, ncols)
    ax = axs[0]
    h, w = img.shape
    ext = (-(w // 2) - 0.5, w // 2 + 0.5, -(h // 2) - 0.5, h // 2 + 0.5)
    vmin = max(img.max() * 1e-5, 1e-12)
    # a true logarithmic norm (not a log stretch of a linear one): the colour bar then gets decade ticks
    im = ax.imshow(np.clip(img, vmin, None), origin="lower", extent=ext, cmap=_cmap("viridis"),
                   norm=LogNorm(vmin=vmin, vmax=img.max()), interpolation="nearest")
    cov = np.array([[info["ixx"], info["ixy"]], [info["ixy"], info["iyy"]]])
    evals, evecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1]))
    for nsig in (1, 3):
        ax.add_patch(Ellipse((info["centroidX"], info["centroidY"]), 2 * nsig * np.sqrt(evals[1]),
                             2 * nsig * np.sqrt(evals[0]), angle=angle, fill=False, ec="white", lw=0.8, ls="--"))
    ax.set_title(f"stamp {w}x{h} at ({pos[0]:.0f}, {pos[1]:.0f})\n1 and 3 sigma moment ellipses", fontsize=9)
    ax.set_xlabel("dx [px]")
    ax.set_ylabel("dy [px]")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("flux fraction per pixel (log)", fontsize=8)
    cb.ax.tick_params(labelsize=7)

    ax = axs[1]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w // 2 - info["centroidX"], yy - h // 2 - info["centroidY"]).ravel()
    v = img.ravel() / img.max()
    ax.semilogy(r, np.clip(v, 1e-7, None), ".", ms=3, color="C0", label="pixels")
    rr = np.linspace(0, r.max(), 200)
    ax.semilogy(rr, np.exp(-0.5 * rr ** 2 / info["sigma"] ** 2), "-", color="C1", lw=1,
                label=f"Gaussian sigma={info['sigma']:.2f}")
    ax.axhline(0.5, color="0.5", lw=0.7, ls=":")
    ax.axvline(info["fwhm"] / 2, color="0.5", lw=0.7, ls=":")
    ax.set_ylim(1e-6, 1.5)
    ax.set_xlabel("radius [px]")
    ax.set_ylabel("value / peak")
    ax.legend(fontsize=7)
    ax.set_title(f"moment FWHM {info['fwhm']:.3f} px (2.355 sigma)\n|e| {info['e']:.3f}, "
                 f"outermost-ring flux {info['edgeFluxFraction']:.1e}", fontsize=9)

    if varying:
        nx, ny = _grid_shape(bbox, n=12)
        xs = bbox.getMinX() - 0.5 + (np.arange(nx) + 0.5) * bbox.getWidth() / nx
        ys = bbox.getMinY() - 0.5 + (np.arange(ny) + 0.5) * bbox.getHeight() / ny
        F = np.full((ny, nx), np.nan)
        E1, E2 = np.full_like(F, np.nan), np.full_like(F, np.nan)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                try:
                    q = p.computeShape((x, y))
                except PsfEvaluationError:
                    continue
                F[j, i], E1[j, i], E2[j, i] = q.fwhm, q.e1, q.e2
        im = axs[2].imshow(F, origin="lower", extent=_field_extent(bbox), cmap=_cmap("viridis"),
                           interpolation="nearest")
        axs[2].set_title("moment FWHM over the field [px]\n(star: the stamp's position)", fontsize=9)
        cb = fig.colorbar(im, ax=axs[2], shrink=0.8, **cb_kw)
        cb.set_label("moment FWHM [px]", fontsize=8)
        E = np.hypot(E1, E2)
        im = axs[3].imshow(E, origin="lower", extent=_field_extent(bbox), cmap=_cmap("magma"),
                           interpolation="nearest")
        X, Y = np.meshgrid(xs, ys)
        ang = 0.5 * np.arctan2(E2, E1)
        # the longest whisker 0.8 of a map pixel's shorter side (in data units: the map pixels of an
        # elongated field are not square, and whiskers scaled to the axes' width crossed them)
        step = min(bbox.getWidth() / nx, bbox.getHeight() / ny)
        emax = float(np.nanmax(E)) if np.any(np.isfinite(E)) else 0.0
        axs[3].quiver(X, Y, E * np.cos(ang), E * np.sin(ang), headwidth=0, headlength=0, headaxislength=0,
                      pivot="middle", color="white", angles="xy", scale_units="xy",
                      scale=emax / (0.8 * step) if emax > 0 else 1.0, width=0.003 if aspect > 2.5 else None)
        axs[3].set_title("distortion |e| and orientation (whiskers)", fontsize=9)
        cb = fig.colorbar(im, ax=axs[3], shrink=0.8, **cb_kw)
        cb.set_label("|e| (distortion)", fontsize=8)
        for ax in axs[2:]:
            ax.plot(pos[0], pos[1], "*", color="red", ms=11, mec="white", mew=0.8)
            ax.set_xlabel("x [px]")
            ax.set_ylabel("y [px]")
            ax.tick_params(labelsize=7)
    fig.suptitle(title or f"PSF model {getattr(p, 'name', type(psf).__name__)}", fontsize=11, weight="bold")
    return fig


# ---------------------------------------------------------------------------
# debug displays (LSST's lsstDebug displays, working)


def _bin_image(image, mask, max_side=2048):
    """Block-average the image and OR the mask so that neither side exceeds ``max_side``.

    A block's mean is that of its finite pixels, NaN where it has none (computed from sums and
    counts, so that an all-NaN block raises no warning; numpy's ``nanmean`` warns there).
    """
    h, w = image.shape
    f = int(math.ceil(max(h, w) / max_side))
    if f <= 1:
        return image, mask, 1
    H, W = (h // f) * f, (w // f) * f
    blocks = image[:H, :W].reshape(H // f, f, W // f, f)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    count = finite.sum(axis=(1, 3))
    img = np.full(total.shape, np.nan)
    np.divide(total, count, out=img, where=count > 0)
    m = np.bitwise_or.reduce(np.bitwise_or.reduce(mask[:H, :W].reshape(H // f, f, W // f, f), axis=3), axis=1)
    return img, m, f


def _transparency(value):
    """LSST's maskTransparency (percent, 0 opaque .. 100 invisible); unset (False) means the default 60."""
    if value is False or value is None:
        return _DEFAULT_MASK_TRANSPARENCY
    return float(np.clip(float(value), 0.0, 100.0))


def show_spatial_cells(exposure, cells, *, mask_transparency=_DEFAULT_MASK_TRANSPARENCY, show_bad=True, ax=None,
                       title="Image to be convolved", fig=None):
    """The exposure with its mask planes, the spatial cells and the kernel candidates.

    The image is shown with an asinh stretch between its 0.5 and 99.8
    percentiles; each mask plane that is set somewhere is overlaid in its own
    colour with ``mask_transparency`` percent transparency (LSST's convention:
    0 opaque, 100 invisible); cells are outlined; candidates are circles,
    cyan GOOD, yellow UNKNOWN, and red crosses for BAD (LSST's colours).

    Parameters
    ----------
    exposure : Exposure
    cells : SpatialCellSet
    mask_transparency : float
        Percent, from 0 (opaque) to 100 (invisible).
    show_bad : bool
    ax : matplotlib Axes, optional
        Draw into these axes (the legends then go inside them); else a figure of the image's shape
        is made, with the legends and the colour bar beside the image (below it for a wide one).
    title : str
    fig : matplotlib.figure.Figure, optional
        Without ``ax``: draw into this figure (cleared and resized) instead of a new one.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    from astropy.visualization import AsinhStretch, ImageNormalize
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    if not isinstance(exposure, MaskedImage):
        raise InvalidInputError(f"show_spatial_cells: exposure must be an Exposure (or a MaskedImage); got "
                                f"{_describe(exposure)}")
    _check_cells(cells, "show_spatial_cells: cells")
    mask_transparency = _scalar(mask_transparency)
    if (isinstance(mask_transparency, (bool, np.bool_))
            or not isinstance(mask_transparency, (int, float, np.integer, np.floating))
            or not 0 <= mask_transparency <= 100):
        raise InvalidInputError(f"show_spatial_cells: mask_transparency must be a number from 0 (opaque) to 100 "
                                f"(invisible), in percent; got {mask_transparency!r}")
    bb = exposure.getBBox()
    aspect = bb.getWidth() / bb.getHeight()
    wide = aspect >= 1.3
    own_figure = ax is None
    img, mbits, f = _bin_image(np.asarray(exposure.image, dtype=np.float64), exposure.mask)
    if own_figure:
        if wide:  # the image 10 in wide; below it its label, the colour bar and the legends
            fig = _figure((11.0, max(3.6, 10.0 / aspect + 2.9)), fig)
        else:  # the image 9.4 in tall; beside it the colour bar and the legends
            fig = _figure((max(7.0, 9.4 * aspect + 4.6), 10.6), fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, [0.5, 99.8]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    bbox = exposure.getBBox()
    # a binned image covers the blocks it averaged: the last w % f columns and h % f rows are left out
    x0, y0 = bbox.getMinX() - 0.5, bbox.getMinY() - 0.5
    ext = (x0, x0 + f * img.shape[1], y0, y0 + f * img.shape[0])
    im = ax.imshow(img, origin="lower", extent=ext, cmap=_cmap("gray", "#3a3a3a"),
                   norm=ImageNormalize(vmin=lo, vmax=hi, stretch=AsinhStretch(0.05)), interpolation="nearest")
    field = _field_extent(bbox)  # the axes show the whole field (the binned image may stop short of its far edges)
    ax.set_xlim(*field[:2])
    ax.set_ylim(*field[2:])
    alpha = 1.0 - mask_transparency / 100.0
    planes = exposure.getMask().getMaskPlaneDict()
    rgba = np.zeros(mbits.shape + (4,), dtype=np.float32)
    legend = []
    extra = iter(_EXTRA_COLOURS * 4)
    for name, bit in sorted(planes.items(), key=lambda kv: kv[1]):
        value = np.int32(exposure.getMask().getPlaneBitMask(name))  # bit 31 is the int32 sign bit
        sel = (mbits & value) != 0
        if not np.any(sel):
            continue
        colour = _MASK_COLOURS.get(name) or next(extra)
        rgba[sel] = to_rgba(colour, alpha)
        npix = int(np.count_nonzero((exposure.mask & value) != 0))
        legend.append(Patch(facecolor=to_rgba(colour, max(alpha, 0.35)), edgecolor=colour,
                            label=f"{name}: {npix} px ({npix / exposure.mask.size:.2%})"))
    if alpha > 0 and legend:
        ax.imshow(rgba, origin="lower", extent=ext, interpolation="nearest")
    _draw_cells(ax, cells, colour="#7fff7f", lw=0.8, alpha=0.8)
    handles = _overlay_candidates(ax, cells, show_bad=show_bad, size=60, legend=False, lw=1.5)
    mask_title = f"mask planes ({mask_transparency:.0f}% transparent)"
    common = {"fontsize": 8, "framealpha": 0.75, "title_fontsize": 8}
    if own_figure:
        # legends outside the image (inside, on a strip, they covered it and each other) and a colour bar
        # along its longer side, in a figure of the image's shape
        fig.legend(handles=handles, loc="outside lower left" if wide else "outside right upper", title="candidates",
                   **common)
        if legend:
            fig.legend(handles=legend, loc="outside lower right" if wide else "outside right lower", title=mask_title,
                       **common)
    else:  # the caller's axes: the legends inside it, one above the other
        leg1 = ax.legend(handles=handles, loc="upper right", title="candidates", **common)
        if legend:
            ax.add_artist(leg1)
            ax.legend(handles=legend, loc="lower right", title=mask_title, **common)
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    sub = f"{len(cells)} cells of {cells.sizeCellX}x{cells.sizeCellY} px" + (f", shown binned {f}x{f}" if f > 1 else "")
    ax.set_title(f"{title}\n{sub}", fontsize=11)
    if own_figure and wide:
        cb = fig.colorbar(im, ax=ax, location="bottom", shrink=0.6, pad=0.02, aspect=40)
    else:
        cb = fig.colorbar(im, ax=ax, shrink=0.7, pad=0.02)
    cb.set_label("pixel value (asinh stretch, 0.5-99.8 percentiles)", fontsize=8)
    cb.ax.tick_params(labelsize=8)
    # the stretch crowds the high values: round values, from the low end, as far as their labels clear each other
    from matplotlib.ticker import MaxNLocator

    candidates = list(MaxNLocator(12).tick_values(lo, hi))
    axis = cb.ax.xaxis if cb.orientation == "horizontal" else cb.ax.yaxis
    axis.set_major_locator(_spaced_locator(candidates, lambda v: float(im.norm(v)), 8))
    return fig


def _candidate_grid(cells, show_bad):
    """Map each candidate to (column, row) of its cell; drop BAD ones unless ``show_bad``."""
    out = []
    for idx, cell in enumerate(cells.cells):
        j, i = divmod(idx, cells.nx)
        for cand in cell.candidates:
            if cand.status == CandidateStatus.BAD and not show_bad:
                continue
            out.append((i, j, cand))
    return out


def show_candidates(cells, kernel, *, show_bad=False, max_side=16, fig=None):
    """Candidate stamps, their kernels and their residuals, laid out as the cells are.

    Four mosaics with one tile per candidate (placed at its cell's column and
    row): the science PSF ``S`` (log stretch), the candidate's own kernel, the
    residual of its own kernel ``(S (*) K_own - R) / max R`` and the residual of
    the spatial kernel at its position.  Tile outlines show the status (cyan
    GOOD, red BAD).  Large grids are subsampled to ``max_side`` tiles per side.

    Parameters
    ----------
    cells : SpatialCellSet
        The fitted cells (``result.kernelCellSet``).
    kernel : LinearCombinationKernel
        The spatial kernel (``result.psfMatchingKernel``).
    show_bad : bool
        Include rejected candidates.
    max_side : int
        Most tiles per side.
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared); a new one otherwise.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    from matplotlib.colors import AsinhNorm, LogNorm, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    _check_cells(cells, "show_candidates: cells")
    _check_kernel(kernel, "show_candidates: kernel")
    max_side = _count(max_side, "show_candidates: max_side")
    entries = _candidate_grid(cells, show_bad)
    si = max(1, int(math.ceil(cells.nx / max_side)))
    sj = max(1, int(math.ceil(cells.ny / max_side)))
    entries = [(i // si, j // sj, c) for i, j, c in entries if i % si == 0 and j % sj == 0]
    ncol = (cells.nx + si - 1) // si
    nrow = (cells.ny + sj - 1) // sj
    with_stamps = [(i, j, c) for i, j, c in entries if c.science is not None and c.reference is not None]
    # the four mosaics in a 2 x 2 grid, or stacked (a wide grid of cells) or side by side (a tall one),
    # in a figure of their shape, so that they fill it and their colour bars are as long as they are
    shape = ncol / nrow
    title_width = 13.0  # [in], the room of a panel's title: wrapped to it in the side-by-side layout
    if shape > 2.5:
        fig = _figure((13, 4 * (10.4 / shape + 1.0) + 0.8), fig)
        axs = fig.subplots(4, 1)
    elif shape < 0.4:
        fig = _figure((4 * (9.5 * shape + 1.6), 12.0), fig)
        axs = fig.subplots(1, 4)
        title_width = 9.5 * shape + 1.3
    else:
        fig = _figure((13, float(np.clip(2 * 5.4 / shape + 2.2, 5.0, 13.0))), fig)
        axs = fig.subplots(2, 2).ravel()
    if not with_stamps:
        for ax in axs:
            ax.axis("off")
        axs[0].text(0.5, 0.5, "no candidate has stamps", ha="center")
        return fig
    P = with_stamps[0][2].science.shape[0]
    k = kernel.getWidth()
    sci = {(i, j): c.science for i, j, c in with_stamps}
    S = np.array([c.science for _, _, c in with_stamps])
    R = np.array([c.reference for _, _, c in with_stamps])
    xs = np.array([c.x for _, _, c in with_stamps])
    ys = np.array([c.y for _, _, c in with_stamps])
    Ksp = kernel.computeImages(xs, ys) / kernel.kernel_sum
    h = k // 2
    peak = R.max(axis=(1, 2))[:, None, None]
    res_sp = (matched_stamps(S, Ksp)[:, h:h + P, h:h + P] - R) / peak
    own, res_own = {}, {}
    for n, (i, j, c) in enumerate(with_stamps):
        res_own[(i, j)] = None
        if c.kernel_image is not None:
            Ko = np.asarray(c.kernel_image, dtype=float)
            own[(i, j)] = Ko / Ko.sum()
            ko = Ko.shape[0] // 2
            res_own[(i, j)] = (matched_stamps(S[n:n + 1], own[(i, j)][None])[0, ko:ko + P, ko:ko + P] - R[n]) / peak[n]
    res_sp_t = {(i, j): res_sp[n] for n, (i, j, _) in enumerate(with_stamps)}

    fs = float(np.clip(60.0 / max(ncol, nrow), 4.0, 8.0))
    numbers = max(ncol, nrow) <= 10  # beyond 10 tiles a side the numbers would be too small to read
    note = "\n(number: max |residual|)" if numbers else "\n(max |residual| numbers only up to 10 x 10 tiles)"

    def draw(ax, tiles, shape, norm, cmap, title, label, annotate=False):
        M = _mosaic(tiles, ncol, nrow, shape, gap=2)
        im = ax.imshow(M, origin="lower", cmap=_cmap(cmap, "white"), norm=norm, interpolation="nearest")
        for i, j, c in entries:
            x0, y0 = i * (shape[1] + 2) - 0.5, j * (shape[0] + 2) - 0.5
            colour = "#00b8cc" if c.status == CandidateStatus.GOOD else _STATUS_COLOURS[c.status]
            ax.add_patch(Rectangle((x0, y0), shape[1], shape[0], fill=False, lw=0.6, ec=colour))
            t = tiles.get((i, j))
            if t is None:
                ax.text(x0 + shape[1] / 2, y0 + shape[0] / 2, c.status.value, ha="center", va="center",
                        color=colour, fontsize=fs)
            elif annotate and numbers:
                ax.text(x0 + 1, y0 + shape[0] - 1, f"{np.abs(t).max():.1e}", ha="left", va="top",
                        color="0.25", fontsize=fs)
        ax.set_xticks([_tile_centre(i, 0, shape, gap=2)[0] for i in range(ncol)],
                      [str(i * si) for i in range(ncol)], fontsize=6)
        ax.set_yticks([_tile_centre(0, j, shape, gap=2)[1] for j in range(nrow)],
                      [str(j * sj) for j in range(nrow)], fontsize=6)
        ax.set_xlabel("cell column")
        ax.set_ylabel("cell row")
        ax.set_title(_wrap(title, title_width, 10), fontsize=10)
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(which="both", labelsize=7)
        if isinstance(norm, AsinhNorm):
            _asinh_colorbar_ticks(cb, norm)
        elif isinstance(norm, LogNorm):
            _log_colorbar_ticks(cb, norm)

    smax = S.max()
    # a true logarithmic norm (decade ticks on the colour bar); the zero padding drawn at its floor
    draw(axs[0], {key: np.clip(v, smax * 1e-5, None) for key, v in sci.items()}, (P, P),
         LogNorm(vmin=smax * 1e-5, vmax=smax), "viridis", f"science PSF stamps S ({P}x{P})", "S (log)")
    kl = _sym_limit(list(own.values()))
    draw(axs[1], own, (k, k), AsinhNorm(linear_width=kl * 0.02, vmin=-kl, vmax=kl), "RdBu_r",
         "each candidate's own kernel (unit sum)", "K (asinh stretch)")
    rl = _sym_limit([v for v in res_own.values() if v is not None] + [res_sp])
    draw(axs[2], res_own, (P, P), TwoSlopeNorm(0.0, -rl, rl), "RdBu_r",
         "residual of its own kernel (S*K_own - R) / max R" + note, "residual / max R", annotate=True)
    draw(axs[3], res_sp_t, (P, P), TwoSlopeNorm(0.0, -rl, rl), "RdBu_r",
         "residual of the spatial kernel (S*K(x) - R) / max R" + note, "residual / max R", annotate=True)
    n_bad = sum(1 for c in cells.candidates(CandidateStatus.BAD))
    sub = "" if si == sj == 1 else f", every {si}x{sj} cell shown"
    fig.suptitle(_wrap(f"kernel candidates: {len(with_stamps)} shown"
                       + (f", {n_bad} BAD {'shown' if show_bad else 'hidden (showBadCandidates)'}" if n_bad else "")
                       + sub + "; outline cyan GOOD, red BAD", fig.get_figwidth() - 0.4, 13), fontsize=12,
                 weight="bold")
    return fig


def show_kernel_basis(basis, *, max_kernels=100, fig=None):
    """Mosaic of the basis kernels, each scaled to its own maximum absolute value, labelled by index.

    Parameters
    ----------
    basis : KernelBasis or array_like, shape (n, height, width)
        The basis (``kernel.basis``), or a non-empty stack of images.
    max_kernels : int
        Show at most the first ``max_kernels``.
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared); a new one otherwise.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    from matplotlib.colors import TwoSlopeNorm

    try:
        images = np.asarray(getattr(basis, "images", basis), dtype=np.float64)
    except (TypeError, ValueError):
        images = None
    if images is None or images.ndim != 3 or 0 in images.shape:
        raise InvalidInputError(f"show_kernel_basis: basis must be a KernelBasis (e.g. kernel.basis) or a "
                                f"non-empty stack of 2-d images, shape (n, height, width); got "
                                f"{_describe(basis if images is None else images)}")
    n_all = len(images)
    images = images[:_count(max_kernels, "show_kernel_basis: max_kernels")]
    n = len(images)
    kh, k = images.shape[1:]  # height, width
    ncol = int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    scaled = images / np.maximum(np.abs(images).max(axis=(1, 2)), 1e-300)[:, None, None]
    tiles = {}
    for m in range(n):
        r, c = divmod(m, ncol)
        tiles[(c, nrow - 1 - r)] = scaled[m]
    side = max(6.0, min(13.0, 1.1 * ncol + 2))
    fig = _figure((side + 1.2, side * nrow / ncol + 0.9), fig)
    ax = fig.add_subplot()
    im = ax.imshow(_mosaic(tiles, ncol, nrow, (kh, k), gap=2), origin="lower", cmap=_cmap("RdBu_r", "white"),
                   norm=TwoSlopeNorm(0.0, -1.0, 1.0), interpolation="nearest")
    sums = images.sum(axis=(1, 2))
    for m in range(n):
        r, c = divmod(m, ncol)
        x0, y0 = c * (k + 2) - 0.5, (nrow - 1 - r) * (kh + 2) - 0.5
        ax.text(x0 + 0.8, y0 + kh - 0.8, f"{m}", color="black", fontsize=7, va="top", ha="left")
        if abs(sums[m]) > 1e-6:
            ax.text(x0 + k - 0.8, y0 + 0.8, f"sum {sums[m]:.2g}", color="black", fontsize=6, va="bottom", ha="right")
    ax.set_xticks([])
    ax.set_yticks([])
    desc = getattr(basis, "description", {}) or {}
    kind = getattr(basis, "kind", "")
    import textwrap

    extra = ", ".join(f"{key}={val}" for key, val in desc.items() if len(str(val)) < 60)
    extra = "\n".join(textwrap.wrap(extra, width=int(12 * side)))
    ax.set_title(f"{kind} basis: {n_all} kernels of {k}x{kh}" + (f" (first {n} shown)" if n < n_all else "")
                 + "; each scaled to its max |value|; 'sum': non-zero sums"
                 + (f"\n{extra}" if extra else ""), fontsize=9)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("each kernel / its max |value|", fontsize=8)
    return fig


def show_kernel_mosaic(kernel, bbox=None, *, ncol=7, nrow=None, fig=None):
    """The spatial kernel realized on an ``ncol x nrow`` grid across the field (LSST: 7 x N).

    Each tile is the unit-sum kernel at the labelled position, with its
    adaptive-moment centroid (+) and 2-sigma ellipse; a second panel shows the
    deviation from the kernel at the field centre, which makes the spatial
    variation visible.  Without ``nrow``, the rows follow the field's shape, at
    most as many as fit a 9.5 in tall panel at least 3 in wide (a tall field
    gets fewer rows than its shape asks for, not tiles too small to see).

    Parameters
    ----------
    kernel : LinearCombinationKernel
    bbox : Box2I, optional
        The field (default: the kernel's box).
    ncol, nrow : int, optional
        Tiles across and up the field, each from 1 to 50 (``nrow`` by default from the field's shape).
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared); a new one otherwise.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    _check_kernel(kernel, "show_kernel_mosaic: kernel")
    ncol = _count(ncol, "show_kernel_mosaic: ncol", maximum=_MOSAIC_MAX_SIDE)
    if bbox is not None:
        _check_box(bbox, "show_kernel_mosaic: bbox")
    bbox = bbox if bbox is not None else kernel.bbox
    if bbox is None:
        raise InvalidInputError("show_kernel_mosaic needs the field's box: the kernel has none (pass bbox=)")
    if nrow is None:
        nrow = max(1, int(round(ncol * bbox.getHeight() / bbox.getWidth())))
        nrow = min(nrow, max(ncol, int(9.5 * ncol / _MOSAIC_MIN_SIDE)), _MOSAIC_MAX_SIDE)
    else:
        nrow = _count(nrow, "show_kernel_mosaic: nrow", maximum=_MOSAIC_MAX_SIDE)
    # the figure follows the mosaic's shape (nrow x ncol square tiles), so that the panels fill it and
    # the colour bars are as tall as the panels: 3 to 6.2 in wide and at most 9.5 in tall per panel (taller
    # only for more rows than that asked for by hand)
    side = max(_MOSAIC_MIN_SIDE, min(6.2, 9.5 * ncol / nrow))
    width = 2 * side + 2.6
    fig = _figure((width, side * nrow / ncol + 1.5), fig)
    ax1, ax2 = fig.subplots(1, 2)
    title = _wrap("K(x), unit sum, with centroid (+) and 2-sigma moment ellipse", side + 0.8, 10)
    im, xs, ys, imgs = _draw_kernel_mosaic(ax1, kernel, bbox, ncol, nrow, ellipses=True, title=title)
    cb = fig.colorbar(im, ax=ax1, shrink=0.9)
    cb.set_label("K (asinh stretch)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    _asinh_colorbar_ticks(cb, im.norm)
    im2 = _draw_kernel_variation(ax2, kernel, bbox, imgs, xs, ys,
                                 _wrap("[K(x) - K(centre)] / max K(centre)", side + 0.8, 10))
    if im2 is not None:
        cb = fig.colorbar(im2, ax=ax2, shrink=0.9)
        cb.set_label("deviation / max K(centre)", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    fig.suptitle(_wrap(f"spatial kernel across the field: {kernel!r}", width - 0.4, 10.5), fontsize=10,
                 weight="bold")
    return fig


def plot_kernel_spatial_model(kernel, cells, *, show_bad=False, max_terms=15, fig=None):
    """The spatial model of each kernel coefficient against the candidates' own solutions.

    One map per basis coefficient ``a_i(x, y)`` (the first is fixed to 1 and
    not shown), with each candidate drawn as a disc coloured by its own
    solution on the same colour scale: a disc that stands out from the map
    is a candidate the spatial model does not follow.  The last panel plots the
    own solutions against the model at the candidates for all coefficients.
    With more than ``max_terms`` coefficients, those varying most are shown.

    Parameters
    ----------
    kernel : LinearCombinationKernel
    cells : SpatialCellSet
        The cells it was fitted on, with the candidates' own solutions.
    show_bad : bool
        Include rejected candidates.
    max_terms : int
        Most coefficient maps shown.
    fig : matplotlib.figure.Figure, optional
        Draw into this figure (cleared); a new one otherwise.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _mpl()
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    _check_kernel(kernel, "plot_kernel_spatial_model: kernel")
    _check_cells(cells, "plot_kernel_spatial_model: cells")
    max_terms = _count(max_terms, "plot_kernel_spatial_model: max_terms")
    bbox = kernel.bbox if kernel.bbox is not None else cells.getBBox()
    coeffs = np.asarray(kernel.coefficients)
    nb = coeffs.shape[0]
    statuses = (CandidateStatus.GOOD, CandidateStatus.BAD) if show_bad else (CandidateStatus.GOOD,)
    cands = [c for c in cells.candidates() if c.status in statuses and c.coefficients is not None
             and len(c.coefficients) == nb]

    def model_at(x, y):
        x = np.atleast_1d(np.asarray(x, float))
        y = np.atleast_1d(np.asarray(y, float))
        F = np.ones((1, x.size)) if kernel.spatial_function is None else kernel.spatial_function.evaluate(x, y)
        return coeffs @ F  # (nb, n)

    # the model at the centres of the map's pixels, as drawn over the field's extent; 48 along the longer
    # side and at least 8 along the shorter one (an order-2 variation across a strip shows)
    nx, ny = (max(8, n) for n in _grid_shape(bbox, n=48))
    gx = bbox.getMinX() - 0.5 + (np.arange(nx) + 0.5) * bbox.getWidth() / nx
    gy = bbox.getMinY() - 0.5 + (np.arange(ny) + 0.5) * bbox.getHeight() / ny
    GX, GY = np.meshgrid(gx, gy)
    G = model_at(GX.ravel(), GY.ravel()).reshape(nb, *GX.shape)
    cx = np.array([c.x for c in cands])
    cy = np.array([c.y for c in cands])
    own = np.array([c.coefficients for c in cands]).T if cands else np.zeros((nb, 0))  # (nb, n)
    mod = model_at(cx, cy) if cands else np.zeros((nb, 0))
    idx = np.arange(1, nb)
    size = np.abs(G[idx]).reshape(len(idx), G[0].size).max(axis=1, initial=0.0)
    if own.shape[1]:
        size = np.maximum(size, np.abs(own[idx]).max(axis=1))
    negligible = idx[size <= 1e-6 * max(float(size.max(initial=0.0)), 1e-300)]
    idx = idx[size > 1e-6 * max(float(size.max(initial=0.0)), 1e-300)]
    if len(idx) > max_terms:
        spread = np.ptp(G[idx].reshape(len(idx), -1), axis=1) + (np.ptp(own[idx], axis=1) if own.shape[1] else 0)
        idx = np.sort(idx[np.argsort(spread)[::-1][:max_terms]])
    npanel = len(idx) + 1
    ncol = min(6, max(2, int(math.ceil(math.sqrt(npanel * 1.3)))))
    nrow = int(math.ceil(npanel / ncol))
    # a fixed grid (no layout engine): constrained layout is slow with dozens of colour bars
    fig = _figure((3.1 * ncol + 0.3, 2.7 * nrow + 0.9), fig, layout=None)
    axs = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
    top = 1.0 - 0.55 / fig.get_figheight()
    # margins in inches: the y labels on the left, the last column's colour-bar labels on the right
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=1.0 - 0.6 / fig.get_figwidth(),
                        bottom=0.55 / fig.get_figheight(), top=top - 0.35 / fig.get_figheight(),
                        wspace=0.55, hspace=0.45)
    ext = _field_extent(bbox)
    for ax, i in zip(axs, idx):
        vals = [G[i].ravel()] + ([own[i]] if own.shape[1] else [])
        lo = min(float(np.min(v)) for v in vals)
        hi = max(float(np.max(v)) for v in vals)
        # constant (spatial order 0), or constant but for rounding (a constant PSF fitted with a higher order):
        # ticks 1e-7 apart in a relative sense would need 8 or more digits each to differ
        flat = hi - lo <= _FLAT * max(abs(lo), abs(hi), 1e-300)
        if flat:
            mid = 0.5 * (lo + hi)
            lo, hi = mid - max(abs(mid), 1e-300) * 1e-6, mid + max(abs(mid), 1e-300) * 1e-6
        norm = Normalize(lo, hi)
        im = ax.imshow(G[i], origin="lower", extent=ext, cmap=_cmap("viridis"), norm=norm,
                       interpolation="bilinear", aspect="auto")
        if own.shape[1]:
            ec = ["red" if c.status == CandidateStatus.BAD else "white" for c in cands]
            ax.scatter(cx, cy, c=own[i], cmap=_cmap("viridis"), norm=norm, s=40, edgecolors=ec, linewidths=1.0)
            rms = float(np.sqrt(np.mean((own[i] - mod[i]) ** 2)))
            ax.set_title(f"a{i}: rms(own - model) {rms:.1e}", fontsize=8)
        else:
            ax.set_title(f"a{i}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.yaxis.set_major_locator(MaxNLocator(3))
        cb = fig.colorbar(im, ax=ax, fraction=0.06, pad=0.03)
        if flat:  # one tick, at the value (several ticks would all read alike)
            cb.set_ticks([0.5 * (lo + hi)])
            cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        else:
            centre = _short_ticks(cb.ax.yaxis, lo, hi)
            if centre is not None:  # the colour bar's ticks are deviations from the centre value
                ax.set_title(f"{ax.get_title()}\ncolour bar: a{i} - c, c = {centre}", fontsize=8)
        cb.ax.tick_params(labelsize=6)
    ax = axs[len(idx)]
    if not len(idx):
        ax.axis("off")
        ax.text(0.5, 0.5, "no coefficient to show: the kernel is its first\nbasis kernel alone (fixed by the sum)"
                if nb == 1 else "every coefficient beyond the first is negligible", ha="center", va="center",
                fontsize=9, transform=ax.transAxes)
    elif own.shape[1]:
        for i in idx:
            ax.plot(mod[i], own[i], ".", ms=4)
        lim = [min(mod[idx].min(), own[idx].min()), max(mod[idx].max(), own[idx].max())]
        ax.plot(lim, lim, "k-", lw=0.7)
        ax.set_title("all shown coefficients (one colour each)", fontsize=8)
        ax.tick_params(labelsize=6)
        # short labels and no multiplier text (1e-6) colliding with the axis label
        _short_ticks(ax.xaxis, *lim, "spatial model at the candidate")
        _short_ticks(ax.yaxis, *lim, "candidate's own solution")
    else:
        ax.axis("off")
    for ax in axs[len(idx) + 1:]:
        ax.axis("off")
    sf = kernel.spatial_function
    spatial = "constant" if sf is None else f"{sf.kind} order {sf.order}"
    more = f"; the {len(idx)} most varying of {nb - 1} shown" if len(idx) + len(negligible) < nb - 1 else ""
    if len(negligible):
        more += f"; {len(negligible)} negligible (|a| < 1e-6 max) not shown"
    fig.suptitle(f"spatial model of the kernel coefficients ({spatial}) vs the {len(cands)} candidates' own "
                 f"solutions (discs){more}", fontsize=10, weight="bold")
    return fig


# --- the hook ------------------------------------------------------------


def _output_folder():
    from . import debug

    return debug.get_output_dir()


def _debug_display(name, exposure, fit, screen, transparency, show_bad):
    """One display of :func:`debug_displays` (on a new figure when there is a screen)."""
    fig = None
    if screen:
        import matplotlib.pyplot as plt
        fig = plt.figure()
    if name == "spatial-cells":
        fig = show_spatial_cells(exposure, fit.cellSet, mask_transparency=transparency, fig=fig)
    elif name == "candidates":
        fig = show_candidates(fit.cellSet, fit.kernel, show_bad=show_bad, fig=fig)
    elif name == "kernel-basis":
        fig = show_kernel_basis(fit.kernel.basis, fig=fig)
    elif name == "kernel-mosaic":
        fig = show_kernel_mosaic(fit.kernel, fig=fig)
    else:
        fig = plot_kernel_spatial_model(fit.kernel, fit.cellSet, show_bad=show_bad, fig=fig)
    return fig


def debug_displays(exposure, fit) -> list:
    """Draw the displays switched on in :mod:`psfmatch.debug` for a fitted kernel.

    Called by :meth:`ModelPsfMatchTask.run <psfmatch.task.ModelPsfMatchTask.run>`
    after the kernel fit, before the convolution.  Switches are looked up now,
    with ``psfmatch.debug.Info("psfmatch.task")`` and
    ``psfmatch.debug.Info("psfmatch.solve")``.  Figures go to the screen when
    there is one (:func:`has_screen`, and matplotlib could start an interactive
    backend) and no output folder was set with
    :func:`psfmatch.debug.set_output_dir`; otherwise each is written as
    ``psfmatch-debug-NNN-<display>.png`` in that folder (default: the current
    directory), ``NNN`` being :data:`psfmatch.debug.frame`, moved past the
    highest number of such files already there, so that the figures of an
    earlier run are never replaced.  Without matplotlib a warning is logged and
    nothing is drawn; a display that fails to draw, or a folder that cannot be
    made or written, is a warning too: a figure never aborts the match it
    illustrates.

    Returns
    -------
    list of str
        The files written (empty when shown on screen or when nothing is switched on).
    """
    from . import debug

    task = debug.Info("psfmatch.task")
    solve = debug.Info("psfmatch.solve")
    wanted = []
    if task.display and task.displaySpatialCells:
        wanted.append("spatial-cells")
    if solve.display:
        for switch, name in (("displayCandidates", "candidates"), ("displayKernelBasis", "kernel-basis"),
                             ("displayKernelMosaic", "kernel-mosaic"),
                             ("plotKernelSpatialModel", "kernel-spatial-model")):
            if getattr(solve, switch):
                wanted.append(name)
    if not wanted:
        return []
    try:
        _mpl()
    except ImportError as exc:
        log.warning("debug displays skipped: %s", exc)
        return []
    folder = _output_folder()
    screen = folder is None and has_screen()
    if screen:
        import matplotlib
        import matplotlib.pyplot  # noqa: F401  (resolves the backend: Agg when no window can open)

        backend = matplotlib.get_backend()
        if _is_file_backend(backend):
            # e.g. a DISPLAY inherited from an ssh session or a container, with no server or toolkit behind it
            log.warning("debug displays: no window can open (matplotlib's backend is %r): writing them to files "
                        "instead", backend)
            screen = False
    show_bad = bool(solve.showBadCandidates)
    transparency = _transparency(task.maskTransparency)
    figs = []
    for name in wanted:
        try:
            figs.append((name, _debug_display(name, exposure, fit, screen, transparency, show_bad)))
        except Exception as exc:  # a figure must never abort the match it illustrates
            log.warning("debug display %r skipped: %s: %s", name, type(exc).__name__, exc)
    if screen:
        import matplotlib.pyplot as plt
        for name, fig in figs:
            manager = getattr(fig.canvas, "manager", None)
            if manager is not None:
                manager.set_window_title(f"psfmatch debug: {name}")
        plt.show()
        for _, fig in figs:
            plt.close(fig)
        return []
    folder = folder or os.getcwd()
    written = []
    # writing is guarded like drawing: a folder that does not take the files costs the figures, not the match
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        log.warning("debug displays not written: cannot make the folder %r (%s); give a writable directory to "
                    "psfmatch.debug.set_output_dir or --debug-dir", folder, exc.strerror or exc)
        return written
    for name, fig in figs:
        try:
            path = _save_debug_figure(fig, folder, name)
        except OSError as exc:  # the folder takes no file: the other figures would fail alike
            log.warning("debug displays not written: folder %r does not take them (%s: %s); give a writable "
                        "directory to psfmatch.debug.set_output_dir or --debug-dir", folder, type(exc).__name__, exc)
            break
        except Exception as exc:  # matplotlib draws while saving
            log.warning("debug display %r skipped: %s: %s", name, type(exc).__name__, exc)
            continue
        log.info("debug display %s written to %s", name, path)
        written.append(path)
    return written


def _save_debug_figure(fig, folder, name, tries=100) -> str:
    """Write ``fig`` as ``folder/psfmatch-debug-NNN-<name>.png``, ``NNN`` past every number used there.

    An existing file is never replaced: a file that appears under the chosen name meanwhile (another
    process writing into the same folder) moves the figure to the next number.
    """
    from . import debug
    from .errors import OutputExistsError

    for _ in range(tries):
        path = os.path.join(folder, f"psfmatch-debug-{debug.next_frame(folder):03d}-{name}.png")
        try:
            return save_figure(fig, path)
        except OutputExistsError:
            continue
    raise OutputExistsError(f"debug display {name!r}: no free psfmatch-debug-NNN name found in {folder!r} after "
                            f"{tries} tries (other processes writing there)")
