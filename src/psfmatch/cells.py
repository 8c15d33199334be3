"""Spatial cells tiling the exposure and the kernel candidates they hold.

psfmatch differs from LSST here: the cells tile the exposure
itself (LSST grows the box by one cell on every side and evaluates the PSF
outside the exposure).  The exposure's box is split into
``nx = max(1, width // sizeCellX)`` by ``ny = max(1, height // sizeCellY)``
cells of (nearly) equal size, each at least ``sizeCell`` pixels unless the
exposure is smaller; each cell holds one :class:`KernelCandidate`.

Where the candidate sits in its cell (``placement``):

``"spread"`` (default)
    the candidates form a regular grid from edge to edge of the exposure,
    ``x_i = x_min + i (width - 1) / (nx - 1)`` (the centre when ``nx = 1``), so
    the spatial model interpolates everywhere and never extrapolates to the
    corners.  Each candidate still lies in its own cell.  Measured on the demo
    field (sigma 1.6-2.0 px to 2.6 px, order 2): the worst matched-PSF residual
    over the whole field drops from 1.8e-3 to 8e-4 (512 px) and from 1.6e-3 to
    1.1e-3 (1024 px) compared with cell centres.
``"centers"``
    the central pixel of each cell (LSST's choice, on its grown grid).
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInputError
from .geom import Box2I, Point2D, _finite_real, _integral, _scalar

__all__ = ["CandidateStatus", "KernelCandidate", "SpatialCell", "SpatialCellSet", "PLACEMENTS"]

PLACEMENTS = ("spread", "centers")


class CandidateStatus(enum.Enum):
    """Status of a kernel candidate, as LSST's ``SpatialCellCandidate``."""

    GOOD = "GOOD"
    BAD = "BAD"
    UNKNOWN = "UNKNOWN"


def _as_status(status) -> CandidateStatus:
    """``status`` as a :class:`CandidateStatus`: a member, or its name (``"GOOD"``, any case).

    Raises
    ------
    InvalidInputError
        If ``status`` is neither, naming the valid statuses.
    """
    if isinstance(status, CandidateStatus):
        return status
    try:
        return CandidateStatus(status.upper() if isinstance(status, str) else status)
    except (ValueError, TypeError):
        valid = ", ".join(f"CandidateStatus.{s.name}" for s in CandidateStatus)
        names = ", ".join(repr(s.value) for s in CandidateStatus)
        raise InvalidInputError(f"a candidate status must be one of {valid} (or the names {names}); "
                                f"got {status!r}") from None


@dataclass(eq=False)
class KernelCandidate:
    """One pair of PSF stamps (science and reference) at a cell centre, with its own solution and QA.

    Attributes
    ----------
    id : int
    x, y : float
        Parent position.
    science, reference : ndarray or None
        The ``psfSize x psfSize`` stamps (unit sum); None if the PSF failed there.
    status : CandidateStatus
    reason : str
        Why the candidate is BAD.
    coefficients : ndarray or None
        The candidate's own kernel coefficients in the task's basis (first = 1).
    kernel_image : ndarray or None
        Its own (unit-sum) kernel image.
    rank, condition_number : int, float
        Of its least-squares solve.
    solution : {"ORIG", "PCA"}
        Which solution ``coefficients`` and ``kernel_image`` hold, named as afw's
        selectors: the candidate's own (``ORIG``), or its refit on the
        principal components of all the candidates' kernels
        (``usePcaForSpatialKernel``: ``PCA``).  psfmatch keeps one.
    qa : dict
        The spatial kernel's quality at this candidate (:func:`psfmatch.qa.match_quality`):
        ``residualMax``, ``residualRms`` (of science (*) kernel - reference, relative
        to the reference peak), ``sizeMismatch``, ``ellipticityMismatch``,
        ``kernelNegativeFraction``, ``centroidShift``, ``apertureFluxMismatch``, ``kernelShift``
        (with ``kernelShiftDx``, ``kernelShiftDy``: how far the kernel moves a star), and ``illPosedDeficit``
        (:func:`psfmatch.diagnostics.check_ill_posed`) when the fit surveyed the PSFs.
    """

    id: int
    x: float
    y: float
    science: np.ndarray | None = None
    reference: np.ndarray | None = None
    status: CandidateStatus = CandidateStatus.UNKNOWN
    reason: str = ""
    coefficients: np.ndarray | None = None
    kernel_image: np.ndarray | None = None
    rank: int = 0
    condition_number: float = float("nan")
    qa: dict = field(default_factory=dict)
    solution: str = "ORIG"

    #: afw's solution selectors (``KernelCandidate.ORIG``...), taken by :meth:`getKernelImage` and
    #: :meth:`getKernelSum`; ``RECENT`` is the one kept.
    ORIG = "ORIG"
    PCA = "PCA"
    RECENT = "RECENT"

    def getXCenter(self) -> float:
        return self.x

    def getYCenter(self) -> float:
        return self.y

    def getPosition(self) -> Point2D:
        return Point2D(self.x, self.y)

    def getStatus(self) -> CandidateStatus:
        return self.status

    def __post_init__(self):
        for name in ("x", "y"):
            v = _scalar(getattr(self, name))  # (np.array(5.0) is kept as 5.0)
            if not _finite_real(v):
                raise InvalidInputError(f"a KernelCandidate's {name} must be a finite number (its parent pixel "
                                        f"coordinate); got {v!r}")
            setattr(self, name, v)
        self.status = _as_status(self.status)

    def setStatus(self, status: CandidateStatus, reason: str = "") -> None:
        """Set the status (a :class:`CandidateStatus` or its name, e.g. ``"BAD"``) and why.

        Raises
        ------
        InvalidInputError
            If ``status`` is not a status, naming the valid ones.
        """
        self.status = _as_status(status)
        self.reason = reason

    def getId(self) -> int:
        return self.id

    def _check_solution(self, which, call) -> None:
        """Accept afw's selector ``which`` (None, ``RECENT`` or the kept solution's), else InvalidInputError."""
        if which is None:
            return
        name = getattr(which, "name", which)  # (an enum member, or its name)
        if not isinstance(name, str) or name.upper() not in ("ORIG", "PCA", "RECENT"):
            raise InvalidInputError(f"KernelCandidate.{call}: the solution must be KernelCandidate.ORIG, PCA or "
                                    f"RECENT (afw's selectors) or None; got {which!r}")
        name = name.upper()
        if name not in ("RECENT", self.solution):
            raise InvalidInputError(
                f"KernelCandidate.{call}({name}): this candidate keeps only its {self.solution} solution ("
                + ("its refit on the principal components, usePcaForSpatialKernel" if self.solution == "PCA" else
                   "its own; no PCA basis was used") + f"); call {call}() or {call}(KernelCandidate.{self.solution})")

    def getKernelImage(self, which=None) -> np.ndarray | None:
        """The candidate's (unit-sum) kernel image; ``which``: afw's selector (see :attr:`solution`)."""
        self._check_solution(which, "getKernelImage")
        return self.kernel_image

    def getKernelSum(self, which=None) -> float:
        """The sum of :meth:`getKernelImage` (NaN without a solution); ``which`` as there."""
        self._check_solution(which, "getKernelSum")
        return float("nan") if self.kernel_image is None else float(self.kernel_image.sum())

    def getKsum(self, which=None) -> float:
        """afw's name of :meth:`getKernelSum`."""
        self._check_solution(which, "getKsum")
        return self.getKernelSum()

    def to_dict(self) -> dict:
        """A strict-JSON mapping (non-finite numbers become None)."""
        def num(v):
            v = float(v)
            return v if np.isfinite(v) else None
        return {"id": self.id, "x": self.x, "y": self.y, "status": self.status.value, "reason": self.reason,
                "rank": int(self.rank), "conditionNumber": num(self.condition_number),
                **{k: num(v) for k, v in self.qa.items()}}


@dataclass(eq=False)
class SpatialCell:
    """A rectangle of the exposure and its candidates."""

    label: str
    bbox: Box2I
    candidates: list = field(default_factory=list)

    def getBBox(self) -> Box2I:
        return self.bbox

    def getLabel(self) -> str:
        return self.label

    def __iter__(self):
        return iter(self.candidates)

    def __len__(self):
        return len(self.candidates)

    def size(self) -> int:
        return len(self.candidates)

    def empty(self) -> bool:
        return not self.candidates


#: The finest division of the intervals between candidate coordinates (and the exposure's edges) that
#: :meth:`SpatialCellSet.between_positions` makes when asked for more positions than the midpoints give.
MAX_BETWEEN_DIVISIONS = 16


class SpatialCellSet:
    """A grid of :class:`SpatialCell` tiling ``bbox``.

    Parameters
    ----------
    bbox : Box2I
        The exposure's box.
    sizeCellX, sizeCellY : int
        Nominal cell size; the box is split into ``max(1, width // sizeCellX)``
        columns (likewise rows) of nearly equal width.
    """

    def __init__(self, bbox: Box2I, sizeCellX: int, sizeCellY: int, placement: str = "spread"):
        if not isinstance(bbox, Box2I):
            raise InvalidInputError(f"a SpatialCellSet tiles a Box2I (the exposure's getBBox()); got "
                                    f"{type(bbox).__name__} {bbox!r}")
        if bbox.isEmpty():
            raise InvalidInputError(f"cannot tile an empty box {bbox!r}")
        for name, size in (("sizeCellX", sizeCellX), ("sizeCellY", sizeCellY)):
            if not (_integral(size) and int(_scalar(size)) >= 1):
                raise InvalidInputError(f"{name} must be a whole number of pixels >= 1; got {size!r}")
        if placement not in PLACEMENTS:
            raise InvalidInputError(f"candidate placement must be one of {PLACEMENTS}; got {placement!r}")
        self.bbox = bbox
        self.placement = placement
        self.sizeCellX, self.sizeCellY = int(sizeCellX), int(sizeCellY)
        self.nx = max(1, bbox.getWidth() // self.sizeCellX)
        self.ny = max(1, bbox.getHeight() // self.sizeCellY)
        xe = bbox.getMinX() + np.round(np.linspace(0, bbox.getWidth(), self.nx + 1)).astype(int)
        ye = bbox.getMinY() + np.round(np.linspace(0, bbox.getHeight(), self.ny + 1)).astype(int)
        self.x_edges, self.y_edges = xe, ye
        self._edge_lists = (xe.tolist(), ye.tolist())  # plain ints: bisect on them is cheap per candidate
        self.cells = []
        for j in range(self.ny):
            for i in range(self.nx):
                box = Box2I.from_corners(xe[i], ye[j], xe[i + 1] - 1, ye[j + 1] - 1)
                self.cells.append(SpatialCell(f"Cell {i}x{j}", box))

    def getBBox(self) -> Box2I:
        return self.bbox

    def getCellList(self) -> list:
        return self.cells

    def _candidate_axes(self):
        b = self.bbox
        if self.placement == "centers":
            xs = [float(self.x_edges[i] + (self.x_edges[i + 1] - self.x_edges[i]) // 2) for i in range(self.nx)]
            ys = [float(self.y_edges[j] + (self.y_edges[j + 1] - self.y_edges[j]) // 2) for j in range(self.ny)]
            return xs, ys
        xs = [b.getMinX() + (b.getWidth() - 1) / 2.0] if self.nx == 1 else \
            [float(v) for v in np.linspace(b.getMinX(), b.getMaxX(), self.nx)]
        ys = [b.getMinY() + (b.getHeight() - 1) / 2.0] if self.ny == 1 else \
            [float(v) for v in np.linspace(b.getMinY(), b.getMaxY(), self.ny)]
        return xs, ys

    def candidate_positions(self) -> list:
        """The candidate position of each cell, in cell order (see ``placement`` in the module doc)."""
        xs, ys = self._candidate_axes()
        return [Point2D(x, y) for y in ys for x in xs]

    #: LSST-style name of :meth:`candidate_positions`.
    cell_centers = candidate_positions

    def between_positions(self, max_positions=None) -> list:
        """Held-out QA positions: every point of the grid of candidate coordinates, their midpoints
        and the exposure's edges (so corners and edges are checked too), except the candidates.

        With ``max_positions``, at most that many: the exposure's corners (where the spatial model is
        least constrained), then the points midway between candidates along both axes (the farthest
        from them: the centres of four candidates), then the others, each group evenly spaced
        through the list (row by row) when it cannot be taken whole.  When the
        midpoints give fewer than ``max_positions``, all of them are taken and each interval between
        neighbouring coordinates is divided further, in 4, 8, then :data:`MAX_BETWEEN_DIVISIONS` parts,
        the points of each finer lattice added (evenly spaced, row by row) only once the coarser ones
        are all in: a denser check of a small exposure (``qaPositionsPerCandidate`` above about 2)
        always includes every point of the coarser lattices.  The list is row by row.

        Raises
        ------
        InvalidInputError
            If ``max_positions`` is neither None nor a whole number.
        """
        if max_positions is not None and not _integral(max_positions):
            raise InvalidInputError(f"between_positions' max_positions must be a whole number of positions, or "
                                    f"None for all of them; got {max_positions!r}")
        xs, ys = self._candidate_axes()
        # a fit asks twice (its ill-posed check, then its QA): the points depend only on the geometry, so the
        # last answer is kept, keyed by it (0.9 ms of a 1024 px fit), and handed out as new Point2D objects
        b = self.bbox
        key = (b.getMinX(), b.getMinY(), b.getMaxX(), b.getMaxY(), tuple(xs), tuple(ys),
               None if max_positions is None else int(max_positions))
        memo = getattr(self, "_between_memo", None)
        if memo is None or memo[0] != key:
            memo = (key, [(p.x, p.y) for p in self._between_positions(xs, ys, max_positions)])
            self._between_memo = memo
        return [Point2D(x, y) for x, y in memo[1]]

    def _between_positions(self, xs, ys, max_positions):
        """:meth:`between_positions` computed (``xs``, ``ys``: the candidate coordinates)."""
        b = self.bbox
        cand_x, cand_y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)

        def axis(v, lo, hi, parts):
            pts = np.array(sorted(set([float(lo)] + list(v) + [float(hi)])))
            # (a (parts - i) + c i) / parts: exactly the coarser lattice's value where i / parts is one of its fractions
            fine = [(pts[:-1] * (parts - i) + pts[1:] * i) / parts for i in range(1, parts)]
            return np.unique(np.concatenate(fine + [pts]))

        def lattice(parts):
            ax = axis(xs, b.getMinX(), b.getMaxX(), parts)
            ay = axis(ys, b.getMinY(), b.getMaxY(), parts)
            gx, gy = np.meshgrid(ax, ay)  # row by row: y outer, x inner
            gx, gy = gx.ravel(), gy.ravel()
            keep = ~(np.isin(gx, cand_x) & np.isin(gy, cand_y))
            return gx[keep], gy[keep], ax, ay

        gx, gy, ax, ay = lattice(2)
        if max_positions is None:
            return [Point2D(float(x), float(y)) for x, y in zip(gx, gy)]
        m = max(0, int(max_positions))
        if len(gx) >= m:
            corner = np.flatnonzero(np.isin(gx, (ax[0], ax[-1])) & np.isin(gy, (ay[0], ay[-1])))[:m]
            # then the points midway between candidates along both axes, the farthest from them (the centre
            # of four candidates), where the spatial model interpolates least well; then the others
            edges_x = np.array(sorted({float(b.getMinX()), float(b.getMaxX())} | set(map(float, xs))))
            edges_y = np.array(sorted({float(b.getMinY()), float(b.getMaxY())} | set(map(float, ys))))
            inner = np.flatnonzero(~np.isin(gx, edges_x) & ~np.isin(gy, edges_y))
            idx = list(corner)
            for group in (np.setdiff1d(inner, corner), np.setdiff1d(np.arange(len(gx)), np.union1d(corner, inner))):
                need = m - len(idx)
                if need <= 0:
                    break
                if need < len(group):
                    group = group[np.round(np.linspace(0, len(group) - 1, need)).astype(int)]
                idx += list(group)
            return [Point2D(float(gx[i]), float(gy[i])) for i in sorted(idx)]  # row by row
        chosen = set(zip(gx.tolist(), gy.tolist()))  # every point of the midpoints' lattice
        parts = 2
        while len(chosen) < m and parts < MAX_BETWEEN_DIVISIONS:
            parts *= 2
            fx, fy, _, _ = lattice(parts)
            new = [(x, y) for x, y in zip(fx.tolist(), fy.tolist()) if (x, y) not in chosen]  # row by row
            need = m - len(chosen)
            if need < len(new):
                new = [new[i] for i in np.round(np.linspace(0, len(new) - 1, need)).astype(int)]
            chosen.update(new)
        return [Point2D(x, y) for y, x in sorted((y, x) for x, y in chosen)]

    def smaller_cells_remedy(self, order) -> str:
        """The advice for a grid too coarse for a spatial model of ``order``: the cell sizes that give it
        ``order + 1`` cells along each axis that lacks them (cells of 16 px at least), e.g.
        ``"smaller cells (sizeCellX <= 85, sizeCellY <= 85: 3 cells along each axis)"``."""
        b = self.bbox
        short = [f"{name} <= {extent // (order + 1)}" for name, n, extent in
                 (("sizeCellX", self.nx, b.getWidth()), ("sizeCellY", self.ny, b.getHeight()))
                 if n < order + 1 and extent // (order + 1) >= 16]
        return (f"smaller cells ({', '.join(short)}: {order + 1} cells along each axis)" if short
                else "smaller cells")

    def cell_index(self, x, y) -> int:
        """Index of the cell holding the pixel nearest ``(x, y)``, or -1 outside the box (or at NaN).

        Raises
        ------
        InvalidInputError
            If ``x`` or ``y`` is not a number.
        """
        try:
            if not (math.isfinite(x) and math.isfinite(y)):
                return -1
        except TypeError:  # (checked here, not before: this runs once per candidate)
            raise InvalidInputError(f"cell_index takes a position's x and y as numbers; got ({x!r}, {y!r})") from None
        except OverflowError:  # an integer beyond the float range: far outside
            return -1
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        xe, ye = self._edge_lists
        if not (xe[0] <= xi < xe[-1] and ye[0] <= yi < ye[-1]):
            return -1
        return (bisect.bisect_right(ye, yi) - 1) * self.nx + bisect.bisect_right(xe, xi) - 1

    def insertCandidate(self, candidate: KernelCandidate) -> None:
        """Put ``candidate`` in the cell containing its position.

        Raises
        ------
        InvalidInputError
            If ``candidate`` is not a :class:`KernelCandidate`, or lies outside the box.
        """
        if not isinstance(candidate, KernelCandidate):
            raise InvalidInputError(f"insertCandidate takes a KernelCandidate, as in KernelCandidate(id, x, y); got "
                                    f"{type(candidate).__name__} {candidate!r}")
        idx = self.cell_index(candidate.x, candidate.y)
        if idx < 0:
            raise InvalidInputError(f"candidate at ({candidate.x}, {candidate.y}) lies outside {self.bbox!r}")
        self.cells[idx].candidates.append(candidate)

    def candidates(self, status=None):
        """All candidates (optionally only those with ``status``), in cell order.

        Parameters
        ----------
        status : CandidateStatus or str, optional
            A status or its name (``"GOOD"``).

        Raises
        ------
        InvalidInputError
            If ``status`` is not a status, naming the valid ones.
        """
        wanted = None if status is None else _as_status(status)  # checked now, not at the first candidate
        return (cand for cell in self.cells for cand in cell.candidates if wanted is None or cand.status == wanted)

    def __iter__(self):
        return iter(self.cells)

    def __len__(self):
        return len(self.cells)

    def __repr__(self):
        return f"SpatialCellSet({self.bbox!r}, {self.nx}x{self.ny} cells)"
