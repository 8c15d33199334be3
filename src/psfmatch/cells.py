"""Spatial cells tiling the exposure and the kernel candidates they hold.

psfmatch differs from LSST here (SPEC section 4): the cells tile the exposure
itself (LSST grows the box by one cell on every side and evaluates the PSF
outside the exposure).  The exposure's box is split into
``nx = max(1, width // sizeCellX)`` by ``ny = max(1, height // sizeCellY)``
cells of (nearly) equal size, each at least ``sizeCell`` pixels unless the
exposure is smaller; each cell holds one :class:`KernelCandidate` at its
central pixel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInputError
from .geom import Box2I, Point2D

__all__ = ["CandidateStatus", "KernelCandidate", "SpatialCell", "SpatialCellSet"]


class CandidateStatus(enum.Enum):
    """Status of a kernel candidate, as LSST's ``SpatialCellCandidate``."""

    GOOD = "GOOD"
    BAD = "BAD"
    UNKNOWN = "UNKNOWN"


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
    qa : dict
        ``residualMax``, ``residualRms`` (of science (*) spatial kernel - reference,
        relative to the reference peak), ``sizeMismatch``, ``ellipticityMismatch``,
        and the same for its own solution under ``ownResidualMax`` etc.
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

    def getXCenter(self) -> float:
        return self.x

    def getYCenter(self) -> float:
        return self.y

    def getPosition(self) -> Point2D:
        return Point2D(self.x, self.y)

    def getStatus(self) -> CandidateStatus:
        return self.status

    def setStatus(self, status: CandidateStatus, reason: str = "") -> None:
        self.status = CandidateStatus(status)
        self.reason = reason

    def getId(self) -> int:
        return self.id

    def getKernelImage(self) -> np.ndarray | None:
        return self.kernel_image

    def getKernelSum(self) -> float:
        return float("nan") if self.kernel_image is None else float(self.kernel_image.sum())

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

    def __init__(self, bbox: Box2I, sizeCellX: int, sizeCellY: int):
        if bbox.isEmpty():
            raise InvalidInputError(f"cannot tile an empty box {bbox!r}")
        if sizeCellX < 1 or sizeCellY < 1:
            raise InvalidInputError(f"cell sizes must be positive; got {sizeCellX} x {sizeCellY}")
        self.bbox = bbox
        self.sizeCellX, self.sizeCellY = int(sizeCellX), int(sizeCellY)
        self.nx = max(1, bbox.getWidth() // self.sizeCellX)
        self.ny = max(1, bbox.getHeight() // self.sizeCellY)
        xe = bbox.getMinX() + np.round(np.linspace(0, bbox.getWidth(), self.nx + 1)).astype(int)
        ye = bbox.getMinY() + np.round(np.linspace(0, bbox.getHeight(), self.ny + 1)).astype(int)
        self.x_edges, self.y_edges = xe, ye
        self.cells = []
        for j in range(self.ny):
            for i in range(self.nx):
                box = Box2I.from_corners(xe[i], ye[j], xe[i + 1] - 1, ye[j + 1] - 1)
                self.cells.append(SpatialCell(f"Cell {i}x{j}", box))

    def getBBox(self) -> Box2I:
        return self.bbox

    def getCellList(self) -> list:
        return self.cells

    def cell_centers(self) -> list:
        """Integer centre pixel of each cell, in cell order."""
        return [Point2D(float(c.bbox.getMinX() + c.bbox.getWidth() // 2),
                        float(c.bbox.getMinY() + c.bbox.getHeight() // 2)) for c in self.cells]

    def between_positions(self) -> list:
        """Interior cell corners (points half-way between four candidates) and edge midpoints between two."""
        pts = []
        xs = self.x_edges[1:-1].astype(float) - 0.5
        ys = self.y_edges[1:-1].astype(float) - 0.5
        cx = [float(c.x) for c in self.cell_centers()[: self.nx]]
        cy = [float(self.cell_centers()[j * self.nx].y) for j in range(self.ny)]
        for y in ys:
            for x in xs:
                pts.append(Point2D(float(x), float(y)))
        for y in cy:
            for x in xs:
                pts.append(Point2D(float(x), y))
        for y in ys:
            for x in cx:
                pts.append(Point2D(x, float(y)))
        return pts

    def cell_index(self, x, y) -> int:
        """Index of the cell holding the pixel nearest ``(x, y)``, or -1 outside the box."""
        xi, yi = np.floor(x + 0.5), np.floor(y + 0.5)
        if not (self.x_edges[0] <= xi < self.x_edges[-1] and self.y_edges[0] <= yi < self.y_edges[-1]):
            return -1
        i = int(np.searchsorted(self.x_edges, xi, side="right")) - 1
        j = int(np.searchsorted(self.y_edges, yi, side="right")) - 1
        return j * self.nx + i

    def insertCandidate(self, candidate: KernelCandidate) -> None:
        """Put ``candidate`` in the cell containing its position."""
        idx = self.cell_index(candidate.x, candidate.y)
        if idx < 0:
            raise InvalidInputError(f"candidate at ({candidate.x}, {candidate.y}) lies outside {self.bbox!r}")
        self.cells[idx].candidates.append(candidate)

    def candidates(self, status=None):
        """All candidates (optionally only those with ``status``), in cell order."""
        for cell in self.cells:
            for cand in cell.candidates:
                if status is None or cand.status == status:
                    yield cand

    def __iter__(self):
        return iter(self.cells)

    def __len__(self):
        return len(self.cells)

    def __repr__(self):
        return f"SpatialCellSet({self.bbox!r}, {self.nx}x{self.ny} cells)"
