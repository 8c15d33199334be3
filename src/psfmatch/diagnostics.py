"""Pre-flight and post-fit diagnostics: ill-posed (deconvolving) matches and kernel quality.

Ill-posed matches
-----------------
Convolution only broadens: if ``R = S (*) K`` with a kernel ``K >= 0`` of
covariance ``C_K``, the second moments add, ``C_R = C_S + C_K``.  A match is
therefore a *deconvolution* wherever ``C_ref - C_sci`` has a negative
eigenvalue: along that eigen-axis the reference is narrower than the science
PSF, and any kernel that reaches it must have negative lobes that amplify high
spatial frequencies (ringing; the "brain" pattern of LSST difference images,
Alard & Lupton 1998 section 2; HOTPANTS' warning about sigma_image <
sigma_template).  :func:`survey_psfs` measures adaptive second moments
(:func:`psfmatch.moments.adaptive_moments`) of both PSFs at every cell's candidate position
and :func:`check_ill_posed` compares them:

.. math::

    \\Delta = \\max_{|u| = 1} \\left( \\sqrt{u^T C_{sci} u} - \\sqrt{u^T C_{ref} u} \\right),
    \\qquad D = C_{ref} - C_{sci}

``v``, the ``u`` of the maximum, is the worst axis (its angle is reported in degrees from the +x axis,
counter-clockwise, in ``[0, 180)``) and ``Delta`` the *deficit* in pixels: how
much narrower the reference is than the science PSF along ``v``, the axis where
it is narrowest relative to it (``Delta > 0`` exactly when ``D`` has a negative
eigenvalue; when well-posed, ``-Delta`` is the smallest margin over all axes).  A cell is
flagged when ``Delta > illPosedTolerance`` (default 0.01 px; the adaptive
moments of noiseless model stamps are accurate to about 1e-5 px, so matching a
PSF to itself is never flagged).  The equivalent Gaussian deconvolution width
is ``sqrt(-lambda_min)``.  A PSF too undersampled for adaptive moments (their
weight collapses, :func:`~psfmatch.moments.collapsed`) is narrower than
:data:`~psfmatch.moments.UNDERSAMPLED_SIGMA` along every axis: with that bound
in its place, a cell is still decided where the other PSF's moments converged
and the bound settles the answer either way; the others are not measured.

Kernel quality
--------------
After the fit, :func:`check_kernel_quality` compares the field-wide worst QA
numbers (:mod:`psfmatch.qa`, at the candidates and between them) with two
documented thresholds of :class:`~psfmatch.config.ModelPsfMatchConfig`:

``qaMaxResidual`` (default 1e-2)
    ``max |S (*) K - R| / max R``: a matched PSF off by more than 1 % of its
    peak somewhere is not a match for photometry or coaddition.
``qaMaxKernelNegativeFraction`` (default 0.3)
    ``sum |min(K, 0)| / sum |K|``.  A smooth broadening kernel has none; 0.3
    means the negative lobes hold 0.75 of the kernel sum (positive mass 1.75,
    negative 0.75): the kernel oscillates and rings (LSST's default
    Alard-Lupton basis gives 0.31 on an elliptical Gaussian -> round Gaussian
    match, with a checkered kernel).
``qaMaxKernelShift`` (default 0.2 px)
    ``kernelShift``, how far the kernel moves a star: the adaptive-moment
    centroid of ``S (*) K`` minus that of ``S``.  The matched exposure's WCS
    is not changed, so positions measured on it are off by the shift.
    Well-centred PSF models give at most 0.11 px (real PSFEx models, at the
    CCD's edge; analytic models about 1e-7 px); PSF images read with
    ``recenter=False`` up to a pixel (Spitzer IRAC ch1 -> ch4 0.87 px, HST
    F606W -> F814W 0.55 px).
``qaMaxApertureFluxMismatch`` (default 1e-2)
    the largest encircled-flux difference of ``S (*) K`` and ``R``.

Exceeding any issues a :class:`~psfmatch.errors.KernelQualityWarning` and
adds a flag to ``metadata["qa"]["flags"]``.

References
----------
Alard, C. & Lupton, R. H. 1998, ApJ 503, 325.
Becker, A. C. et al. 2012, AJ 143, 21.
Bernstein, G. M. & Jarvis, M. 2002, AJ 123, 583 (adaptive moments).
"""

from __future__ import annotations

import logging
import math
import warnings
from concurrent import futures
from dataclasses import dataclass, field

import numpy as np

from .errors import IllPosedMatchError, IllPosedMatchWarning, KernelQualityWarning, PsfEvaluationError
from .geom import Point2D, as_point
from .moments import UNDERSAMPLED_SIGMA, adaptive_moments, collapsed, stamp_moments
from .psf.base import Psf, compute_kernel_image_pairs, pad_or_crop, pad_or_crop_stack, unique_stamps

__all__ = [
    "PsfSurvey",
    "SurveyCachedPsf",
    "IllPosedReport",
    "survey_psfs",
    "check_ill_posed",
    "enforce_ill_posed",
    "check_kernel_quality",
    "kernel_covariance",
    "untruncated_size",
    "flux_outside",
    "size_holding",
    "FLAG_ILL_POSED",
    "FLAG_RESIDUAL",
    "FLAG_NEGATIVE",
    "FLAG_KERNEL_SHIFT",
    "FLAG_APERTURE",
]

log = logging.getLogger(__name__)

#: ``metadata["qa"]["flags"]`` entry: part of the field needs a deconvolution.
FLAG_ILL_POSED = "ILL_POSED"
#: ``metadata["qa"]["flags"]`` entry: the matched-PSF residual exceeds ``qaMaxResidual``.
FLAG_RESIDUAL = "RESIDUAL_HIGH"
#: ``metadata["qa"]["flags"]`` entry: the kernel's negative fraction exceeds ``qaMaxKernelNegativeFraction``.
FLAG_NEGATIVE = "KERNEL_NEGATIVE"
#: ``metadata["qa"]["flags"]`` entry: the kernel moves the stars by more than ``qaMaxKernelShift`` (``kernelShift``).
FLAG_KERNEL_SHIFT = "KERNEL_SHIFT"
#: ``metadata["qa"]["flags"]`` entry: the encircled-flux mismatch exceeds ``qaMaxApertureFluxMismatch``.
FLAG_APERTURE = "APERTURE_FLUX_MISMATCH"


def _moments(stamps):
    """Adaptive moments of a stack of equal-size stamps, measured once per distinct stamp.

    Returns the moments (n, 3) = (ixx, iyy, ixy), their ok flags (n,), the number of distinct stamps
    and the adaptive centroids (n, 2) = (xc, yc), offsets from the stamps' centre pixel.
    """
    arr = np.asarray(stamps)
    first, inv = unique_stamps(arr)
    ixx, iyy, ixy, xc, yc, ok = adaptive_moments(arr[first])
    cov = np.stack([ixx, iyy, ixy], axis=1)
    return cov[inv], ok[inv], len(first), np.stack([xc, yc], axis=1)[inv]


@dataclass
class PsfSurvey:
    """Both PSFs realized at the cells' candidate positions, with their adaptive second moments.

    Attributes
    ----------
    positions : ndarray (n, 2)
        ``(x, y)`` of the cells where both PSFs could be evaluated.
    cells : list of int
        Their cell indices (in :class:`~psfmatch.cells.SpatialCellSet` order).
    labels : list of str
        Their cell labels (``"Cell 3x5"``).
    science, reference : ndarray (n, P, P)
        The stamps, both zero-padded to the common size ``P`` (the reference is
        *not* resized: these are the models' own stamps).  A reference that
        does not vary is one read-only stamp broadcast to every cell.
    scienceMoments, referenceMoments : ndarray (n, 3)
        ``(Ixx, Iyy, Ixy)`` in pixels squared.
    ok : ndarray of bool (n,)
        Both moment measurements converged.
    scienceOk, referenceOk : ndarray of bool (n,)
        Each PSF's measurement converged (``ok`` is both).
    scienceSize, referenceSize : int
        Largest native stamp size of each model.
    constant : bool
        Every science stamp is identical and so is every reference stamp (the
        match is the same everywhere).
    failed : list of str
        Cells skipped because a PSF could not be evaluated there.
    scienceStamps : dict
        ``(x, y) -> stamp``: the science stamps by position (what :class:`SurveyCachedPsf` serves).
    scienceCentroids : dict
        ``(x, y) -> (xc, yc, side)``: the science stamps' adaptive centroids, offsets from their
        centre pixel, where their moments converged on a square stamp of ``side`` pixels (the
        QA's ``kernelShift`` reuses them, :meth:`SurveyCachedPsf.science_centroids`, instead of
        measuring the same stamps again).
    """

    positions: np.ndarray
    cells: list
    labels: list
    science: np.ndarray
    reference: np.ndarray
    scienceMoments: np.ndarray
    referenceMoments: np.ndarray
    ok: np.ndarray
    scienceSize: int
    referenceSize: int
    constant: bool
    failed: list = field(default_factory=list)
    scienceStamps: dict = field(default_factory=dict, repr=False)
    scienceCentroids: dict = field(default_factory=dict, repr=False)
    scienceOk: np.ndarray = None
    referenceOk: np.ndarray = None

    def __post_init__(self):
        self.scienceOk, self.referenceOk = _own_ok(self)  # (made without them: each PSF's flag is the pair's)

    def __len__(self):
        return len(self.positions)

    def kernel_covariances(self) -> np.ndarray:
        """``C_ref - C_sci`` per cell as (n, 2, 2) matrices."""
        return kernel_covariance(self.scienceMoments, self.referenceMoments)


def _covariance(moments) -> np.ndarray:
    """(n, 2, 2) covariance matrices from (n, 3) rows ``(Ixx, Iyy, Ixy)``."""
    m = np.atleast_2d(np.asarray(moments, dtype=float))
    out = np.empty((len(m), 2, 2))
    out[:, 0, 0] = m[:, 0]
    out[:, 1, 1] = m[:, 1]
    out[:, 0, 1] = out[:, 1, 0] = m[:, 2]
    return out


def kernel_covariance(science_moments, reference_moments) -> np.ndarray:
    """``C_ref - C_sci`` as (n, 2, 2) from (n, 3) arrays of ``(Ixx, Iyy, Ixy)``.

    For Gaussian PSFs this is exactly the covariance of the matching kernel
    (``sigma_k^2 = sigma_ref^2 - sigma_sci^2`` along every axis).
    """
    return _covariance(np.asarray(reference_moments, dtype=float) - np.asarray(science_moments, dtype=float))


def survey_psfs(science_psf, reference_psf, cell_set, positions=None, images=None) -> PsfSurvey:
    """Realize both PSFs at the candidate position of every cell of ``cell_set`` and measure their second moments.

    The positions are :meth:`~psfmatch.cells.SpatialCellSet.cell_centers` (LSST's name): an
    edge-to-edge grid with the default ``candidatePlacement = "spread"``, the centres with ``"centers"``.
    With ``positions`` (points), those instead, e.g. the held-out positions between the candidates
    (:meth:`~psfmatch.cells.SpatialCellSet.between_positions`): each is then labelled by its
    coordinates and its cell index is -1.  With ``images``, the result of
    :func:`~psfmatch.psf.base.compute_kernel_image_pairs` at those positions, the models are not
    called at all (the measurement can then run on another thread: a user's model need not be
    thread-safe); a reference shared by every position (one stamp object) counts as constant.

    A cell where either model fails to evaluate is skipped (and listed in
    ``failed``): the fit rejects that candidate with its own message.  The
    reference is evaluated once when it is not spatially varying.

    Raises
    ------
    PsfEvaluationError
        If no cell (position) could be evaluated.
    """
    if positions is None:
        centres = cell_set.cell_centers()
        names = [c.getLabel() for c in cell_set.getCellList()]
        ids = list(range(len(centres)))
    else:
        centres = [as_point(p) for p in positions]
        names = [f"({p[0]:.1f}, {p[1]:.1f})" for p in centres]
        ids = [-1] * len(centres)
    if images is None:
        ref_const = not bool(getattr(reference_psf, "isSpatiallyVarying", lambda: True)())
        sci_imgs, ref_imgs, errors = compute_kernel_image_pairs(science_psf, reference_psf, centres)
    else:
        sci_imgs, ref_imgs, errors = images
        given = [r for r in ref_imgs if r is not None]
        ref_const = bool(given) and all(r is given[0] for r in given)
    S, R, pos, idx, labels, failed = [], [], [], [], [], []
    first_error = None
    for i, p in enumerate(centres):
        exc = errors.get(i)
        if exc is not None:
            failed.append(f"{names[i]} at ({p[0]:.1f}, {p[1]:.1f}): {exc}")
            first_error = first_error or exc
            continue
        S.append(sci_imgs[i])
        R.append(ref_imgs[i])
        pos.append((float(p[0]), float(p[1])))
        idx.append(ids[i])
        labels.append(names[i])
    if not S:
        raise PsfEvaluationError(
            f"neither PSF could be evaluated at any of the {len(centres)} "
            f"{'cell centres' if positions is None else 'positions'}; first failure: {first_error}")
    ssize = max(max(s.shape) for s in S)
    rsize = max(max(r.shape) for r in R)
    P = max(ssize, rsize)
    # moments on the models' own stamps when they share a shape: the zeros of the padding add nothing
    # to the weighted sums, and a 21 px stamp costs a quarter of a 43 px one
    S_own = np.asarray(S) if len({x.shape for x in S}) == 1 else None
    if S_own is not None:
        # the stamps are kept once, in this stack (read-only): the cache of SurveyCachedPsf serves its rows
        del sci_imgs
        S = list(S_own)
        S_own.setflags(write=False)
    S_arr = S_own if S_own is not None and S_own.shape[1:] == (P, P) else pad_or_crop_stack(S, P, P)
    cache = {(float(x), float(y)): s for (x, y), s in zip(pos, S)}
    s_stack = S_own if S_own is not None else S_arr
    s_mom, s_ok, s_distinct, s_cen = _moments(s_stack)
    # (the stamps are odd and square: their centre pixel stays the centre when padded to the fit's size, and
    # the offsets carry over)
    side = s_stack.shape[1]
    centroids = {p: (float(c[0]), float(c[1]), side) for p, c, ok in zip(pos, s_cen, s_ok) if ok}
    if ref_const:  # one stamp, shared by every cell (and measured once for a whole batch)
        ixx, iyy, ixy, _, _, ok = stamp_moments(R[0])
        r_mom, r_ok = np.repeat(np.stack([ixx, iyy, ixy], axis=1), len(R), axis=0), np.repeat(ok, len(R))
        R_arr = np.broadcast_to(pad_or_crop(R[0], P, P), (len(R), P, P))  # read-only, like the shared stamp
        r_distinct = 1
    else:
        R_arr = pad_or_crop_stack(R, P, P)
        r_mom, r_ok, r_distinct, _ = _moments(np.asarray(R) if len({x.shape for x in R}) == 1 else R_arr)
    constant = s_distinct == 1 and r_distinct == 1
    return PsfSurvey(np.array(pos, dtype=float), idx, labels, S_arr, R_arr, s_mom, r_mom, s_ok & r_ok,
                     int(ssize), int(rsize), constant, failed, cache, centroids, s_ok, r_ok)


def _rows_of_one_stack(stamps):
    """The read-only stack whose rows are ``stamps``, in order (the survey's stack), else None."""
    base = stamps[0].base if stamps else None
    if (not isinstance(base, np.ndarray) or base.flags.writeable or base.ndim != 3 or len(base) != len(stamps)
            or not base.flags.c_contiguous):
        return None
    step = base.strides[0]
    if all(s.base is base and s.ctypes.data == base.ctypes.data + j * step for j, s in enumerate(stamps)):
        return base
    return None


class SurveyCachedPsf(Psf):
    """A science PSF that serves the survey's stamps at the candidate positions instead of re-evaluating them.

    The fit realizes the science PSF at the same positions as
    :func:`survey_psfs`; for expensive models (PSFEx resampling) this halves
    the PSF evaluation cost.  Every other position, and every other attribute,
    goes to the wrapped model.
    """

    def __init__(self, psf, survey: PsfSurvey, pending=None):
        self._psf = psf
        self._stamps = survey.scienceStamps
        self._centroids = survey.scienceCentroids
        self._pending = pending  # a future that adds centroids (the ill-posed check between the candidates)
        self.name = getattr(psf, "name", type(psf).__name__)

    def science_centroids(self, xs, ys, side) -> np.ndarray:
        """The survey's adaptive centroids of the science stamps at ``(xs, ys)``, as (n, 2) offsets.

        NaN where the survey has none, or measured a stamp larger than ``side`` (the QA's stamps
        are cropped to it there, which may move the centroid).  Waits for ``pending`` first (its
        outcome, an exception included, is left to its owner), so the answer does not depend on
        the threads' timing.
        """
        if self._pending is not None:
            futures.wait([self._pending])
        out = np.full((len(xs), 2), np.nan)
        for j, (x, y) in enumerate(zip(xs, ys)):
            c = self._centroids.get((float(x), float(y)))
            if c is not None and c[2] <= side:
                out[j] = c[:2]
        return out

    def computeKernelImage(self, position=None):
        if position is not None:
            x, y = as_point(position)
            s = self._stamps.get((float(x), float(y)))
            if s is not None:
                return np.array(s, copy=True)
        return self._psf.computeKernelImage(position)

    def _kernel_image(self, x, y):
        return self._psf.computeKernelImage(Point2D(x, y))

    def computeKernelImages(self, positions):
        """The survey's stamps at ``positions`` (a new stack), or the wrapped model's.

        The survey's own positions, in its order (the fit's candidates), get the survey's stack
        itself, read-only: the fit makes its padded stack from it without a second copy.
        """
        pts = [as_point(p) for p in positions]
        stamps = [self._stamps.get((float(x), float(y))) for x, y in pts]
        if all(s is not None for s in stamps) and len({s.shape for s in stamps}) <= 1:
            whole = _rows_of_one_stack(stamps)
            if whole is not None:
                return whole
            return np.array(stamps) if stamps else np.empty((0, 1, 1))
        return self._psf.computeKernelImages(pts)

    def computeImage(self, position=None):
        return self._psf.computeImage(position)

    def computeImageBBox(self, position=None):
        return self._psf.computeImageBBox(position)

    def computeBBox(self, position=None):
        return self._psf.computeBBox(position)

    def computeShape(self, position=None):
        return self._psf.computeShape(position)

    def getAveragePosition(self):
        return self._psf.getAveragePosition()

    def isSpatiallyVarying(self):
        return self._psf.isSpatiallyVarying()

    def resized(self, width, height):
        return self._psf.resized(width, height)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._psf, name)

    def __repr__(self):
        return repr(self._psf)


@dataclass
class IllPosedReport:
    """Where, along which axis and by how much the reference is narrower than the science PSF.

    Attributes
    ----------
    deficit : ndarray (n,)
        Per surveyed cell, ``sqrt(v^T C_sci v) - sqrt(v^T C_ref v)`` (pixels) along
        the worst axis ``v``, where this is largest; negative values are the smallest
        margins over all axes (well-posed).  This and
        the next arrays are NaN in the cells not measured (``measured`` False).  Where one
        PSF is undersampled (below) its sigma is the bound :data:`UNDERSAMPLED_SIGMA` and the
        deficit a bound: at most this for an undersampled science PSF, at least this for an
        undersampled reference.
    angle : ndarray (n,)
        Angle of ``v`` in degrees from +x, counter-clockwise, in [0, 180).
    scienceSigma, referenceSigma : ndarray (n,)
        The two PSFs' sigmas along ``v`` (pixels).
    deconvolutionSigma : ndarray (n,)
        ``sqrt(max(0, -lambda_min))``, ``lambda_min`` the smallest eigenvalue of
        ``C_ref - C_sci``: the width of the Gaussian one would have to deconvolve
        by (along that eigenvalue's axis; 0 where well-posed).
    flagged : ndarray of bool (n,)
        ``deficit > tolerance`` (and the moments converged).
    tolerance : float
    survey : PsfSurvey
    noun : str
        What the survey's positions are, for the messages: ``"cells"`` (the candidates) or
        ``"held-out positions"`` (between them).
    measured : ndarray of bool (n,)
        The cells the check could decide: both PSFs' moments converged, or one PSF is undersampled and
        the bound decides (by default ``survey.ok``).
    scienceUndersampled, referenceUndersampled : ndarray of bool (n,)
        Decided cells where that PSF's adaptive weight collapsed (narrower than
        :data:`UNDERSAMPLED_SIGMA` along every axis) while the other PSF was measured.
    """

    deficit: np.ndarray
    angle: np.ndarray
    scienceSigma: np.ndarray
    referenceSigma: np.ndarray
    deconvolutionSigma: np.ndarray
    flagged: np.ndarray
    tolerance: float
    survey: PsfSurvey
    noun: str = "cells"
    measured: np.ndarray = None
    scienceUndersampled: np.ndarray = None
    referenceUndersampled: np.ndarray = None

    def __post_init__(self):
        if self.measured is None:
            self.measured = np.asarray(self.survey.ok, dtype=bool)
        none = np.zeros(len(self.deficit), dtype=bool)
        if self.scienceUndersampled is None:
            self.scienceUndersampled = none
        if self.referenceUndersampled is None:
            self.referenceUndersampled = none

    @property
    def illPosed(self) -> bool:
        return bool(np.any(self.flagged))

    @property
    def nFlagged(self) -> int:
        return int(np.sum(self.flagged))

    @property
    def nUnmeasured(self) -> int:
        """Cells the check could not decide (``measured`` False)."""
        return int(np.sum(~self.measured))

    def unmeasured_message(self) -> str:
        """What the check could not see, and why that may matter ('' when every cell was measured)."""
        bad = np.flatnonzero(~self.measured)
        if not len(bad):
            return ""
        names = ", ".join(self.survey.labels[i] for i in bad[:8]) + (f", ... ({len(bad) - 8} more)"
                                                                      if len(bad) > 8 else "")
        sv = self.survey
        s_low, r_low = collapsed(sv.scienceMoments)[bad], collapsed(sv.referenceMoments)[bad]
        s_ok, r_ok = _own_ok(sv)
        s_bad, r_bad = ~s_ok[bad], ~r_ok[bad]
        why = []
        if np.any(s_low & r_low):
            why.append(f"both PSFs are undersampled (narrower than about {UNDERSAMPLED_SIGMA:g} px sigma, too narrow "
                       f"for adaptive moments) at {int(np.sum(s_low & r_low))} of them")
        for low, other_bad, name, other in ((s_low, r_bad, "science", "reference"),
                                            (r_low, s_bad, "reference", "science")):
            if np.any(low & ~other_bad):
                why.append(f"the {name} PSF is undersampled (narrower than about {UNDERSAMPLED_SIGMA:g} px sigma) "
                           f"and the {other} PSF not broader than that at {int(np.sum(low & ~other_bad))} of them")
        for failed, name in ((s_bad & ~s_low, "science"), (r_bad & ~r_low, "reference")):
            if np.any(failed):
                why.append(f"the {name} PSF's adaptive moments did not converge (a PSF narrower than about "
                           f"{UNDERSAMPLED_SIGMA:g} px sigma along one axis, or a stamp without a clear core) at "
                           f"{int(np.sum(failed))} of them")
        return (f"the ill-posed check could not be made at {len(bad)} of {len(self.deficit)} {self.noun} ({names}): "
                + "; ".join(why) + ". Make sure the reference is broader than the science PSF there, or use "
                "better-sampled PSF models")

    def worst(self):
        """Index (into the survey) of the measured cell with the largest deficit; None when none was measured."""
        if not np.any(self.measured):
            return None
        d = np.where(self.measured, self.deficit, -np.inf)
        return int(np.argmax(d))

    def _undersampled(self, i):
        """``"science"``, ``"reference"`` (the PSF bounded by :data:`UNDERSAMPLED_SIGMA` at cell ``i``) or None."""
        return "science" if self.scienceUndersampled[i] else "reference" if self.referenceUndersampled[i] else None

    def cell_entry(self, i) -> dict:
        x, y = self.survey.positions[i]
        return {"cell": self.survey.labels[i], "cellIndex": int(self.survey.cells[i]), "x": float(x), "y": float(y),
                "axisAngleDeg": float(self.angle[i]), "scienceSigma": float(self.scienceSigma[i]),
                "referenceSigma": float(self.referenceSigma[i]), "deficit": float(self.deficit[i]),
                "deconvolutionSigma": float(self.deconvolutionSigma[i]), "undersampled": self._undersampled(i)}

    def message(self, max_cells=8) -> str:
        """A human-readable description naming the cells, the worst axis and the deficit, with the remedy."""
        n_all = len(self.deficit)
        if not self.illPosed:
            i = self.worst()
            if i is None:
                return self.unmeasured_message()
            where = f"all {n_all} {self.noun}" if not self.nUnmeasured else \
                f"the {n_all - self.nUnmeasured} {self.noun} of {n_all} measured"
            n_low = int(np.sum(self.scienceUndersampled))
            low = (f"; the science PSF is undersampled at {n_low} of them, narrower than about "
                   f"{UNDERSAMPLED_SIGMA:g} px sigma, where the reference is broader than that") if n_low else ""
            at_least = "at least " if self.scienceUndersampled[i] else ""
            return (f"well-posed: the reference PSF is at least as broad as the science PSF along every axis in "
                    f"{where} (smallest margin {at_least}{max(0.0, -float(self.deficit[i])):.3g} px at "
                    f"{self.survey.labels[i]}{low})")
        idx = np.flatnonzero(self.flagged)
        idx = idx[np.argsort(-self.deficit[idx])]
        w = idx[0]
        names = ", ".join(self.survey.labels[i] for i in idx[:max_cells])
        if len(idx) > max_cells:
            names += f", ... ({len(idx) - max_cells} more)"
        if self.referenceUndersampled[w]:
            ref_sigma, bound = (f"< {UNDERSAMPLED_SIGMA:g} px (undersampled: too narrow for adaptive moments)",
                                "at least ")
        else:
            ref_sigma, bound = f"{self.referenceSigma[w]:.3f} px", ""
        return (f"ill-posed match: the reference PSF is narrower than the science PSF at {len(idx)} of {n_all} "
                f"{self.noun} ({names}), so matching there is a deconvolution and the kernel will ring. Worst: "
                f"{self._where(w)}, along the axis at {self.angle[w]:.1f} deg from +x: "
                f"science sigma {self.scienceSigma[w]:.3f} px vs reference sigma {ref_sigma}, "
                f"a deficit of {bound}{self.deficit[w]:.3f} px (equivalent to deconvolving a Gaussian of sigma "
                f"{bound}{self.deconvolutionSigma[w]:.3f} px; tolerance {self.tolerance:g} px). Remedy: use a reference "
                f"PSF broader than sigma {self.scienceSigma[w]:.3f} px along that axis everywhere (e.g. a round "
                f"Gaussian of sigma >= {self.max_science_sigma():.3f} px), or match the other exposure to this one")

    def _where(self, i) -> str:
        """``"Cell 3x3 at (511.0, 511.0)"``; a held-out position is labelled by its coordinates alone."""
        x, y = self.survey.positions[i]
        label = self.survey.labels[i]
        return label if self.survey.cells[i] < 0 else f"{label} at ({x:.1f}, {y:.1f})"

    def max_science_sigma(self) -> float:
        """The largest science sigma along any axis over the field (major-axis sigma), pixels."""
        m = self.survey.scienceMoments[_own_ok(self.survey)[0]]
        if len(m) == 0:
            return float("nan")
        tr = 0.5 * (m[:, 0] + m[:, 1])
        dif = np.sqrt(0.25 * (m[:, 0] - m[:, 1]) ** 2 + m[:, 2] ** 2)
        return float(np.sqrt(np.max(tr + dif)))

    def to_metadata(self, max_cells=64) -> dict:
        """JSON-serializable summary for ``metadata["qa"]["illPosed"]``."""
        idx = np.flatnonzero(self.flagged)
        idx = idx[np.argsort(-self.deficit[idx])]
        w = self.worst()
        out = {"flag": self.illPosed, "nCellsChecked": int(len(self.deficit)), "nCellsFlagged": int(len(idx)),
               "nCellsUnmeasured": self.nUnmeasured,
               "nCellsUndersampled": {"science": int(np.sum(self.scienceUndersampled)),
                                      "reference": int(np.sum(self.referenceUndersampled))},
               "tolerance": float(self.tolerance),
               "worst": None if w is None else self.cell_entry(w),
               "cells": [self.cell_entry(i) for i in idx[:max_cells]]}
        if len(idx) > max_cells:
            out["cellsTruncated"] = int(len(idx) - max_cells)
        return out


def _center_crop(stamp, size):
    """The central ``size x size`` part of ``stamp`` (no larger than it along either axis)."""
    h, w = stamp.shape
    ny, nx = min(size, h), min(size, w)
    y0, x0 = (h - ny) // 2, (w - nx) // 2
    return stamp[y0:y0 + ny, x0:x0 + nx]


def flux_outside(stamp, size) -> float:
    """Fraction of ``stamp``'s flux outside its central ``size x size`` part (0 for a stamp of sum <= 0)."""
    stamp = np.asarray(stamp, dtype=float)
    total = float(stamp.sum())
    return float(1.0 - _center_crop(stamp, size).sum() / total) if total > 0 else 0.0


def size_holding(stamp, fraction) -> int:
    """The smallest odd side from which every central crop of ``stamp`` leaves at most ``fraction`` of its flux
    outside, in absolute value (the flux test of :class:`~psfmatch.errors.TruncatedPsfWarning`); at most the
    stamp's largest side.

    The flux outside a crop need not fall as the crop grows: a PSFEx stamp has negative rings.  The flux of
    each square ring about the centre (pixels at one Chebyshev distance from it) is summed once; the answer
    is one past the largest crop that fails.  A stamp of sum <= 0 gives 1.
    """
    a = np.asarray(stamp, dtype=float)
    total = float(a.sum())
    h, w = a.shape
    if not total > 0:
        return 1
    yy, xx = np.indices(a.shape)
    ring = np.maximum(np.abs(yy - (h - 1) // 2), np.abs(xx - (w - 1) // 2))  # (the centre of an odd side)
    inside = np.cumsum(np.bincount(ring.ravel(), weights=a.ravel()))  # flux within each half-size
    top = max(h, w)
    sides = 2 * np.arange(len(inside)) + 1
    failing = np.flatnonzero((np.abs(1.0 - inside / total) > fraction) & (sides < top))
    return int(min(top, sides[failing[-1]] + 2)) if len(failing) else 1


def untruncated_size(stamp, threshold) -> int:
    """Smallest odd side ``P`` at which ``stamp``, cropped to ``P x P`` about its centre, is not truncated.

    The crop is not truncated when no pixel on its edge or outside it exceeds
    ``threshold`` times the stamp's peak in absolute value (the test of
    :class:`~psfmatch.errors.TruncatedPsfWarning`).  A stamp whose own edge
    exceeds that gives its own (largest) side.

    Parameters
    ----------
    stamp : ndarray (h, w)
        A centred PSF stamp (odd sides).
    threshold : float
        Largest allowed ``|edge| / peak``.

    Returns
    -------
    int
        ``P``, odd, at most ``max(h, w)``.
    """
    a = np.abs(np.asarray(stamp, dtype=float))
    h, w = a.shape
    yy, xx = np.indices(a.shape)
    ring = np.maximum(np.abs(yy - h // 2), np.abs(xx - w // 2))  # Chebyshev distance from the centre
    outer = np.zeros(ring.max() + 2)
    np.maximum.at(outer, ring.ravel(), a.ravel())
    outer = np.maximum.accumulate(outer[::-1])[::-1]  # max over every ring from d outwards
    peak = float(a.max())
    ok = np.flatnonzero(outer[:-1] <= threshold * peak) if peak > 0 else np.array([0])
    return 2 * int(ok[0]) + 1 if len(ok) else max(h, w)


def _widest_deficit(cs, cr, eig=None):
    """The axis along which the science PSF most exceeds the reference, per cell.

    Maximizes ``f(theta) = sqrt(a(theta)) - sqrt(b(theta))`` over the axes
    ``u = (cos theta, sin theta)``, where ``a = u^T C_sci u = A + B cos 2theta +
    C sin 2theta`` (``A, B = (Ixx +- Iyy) / 2``, ``C = Ixy``) and ``b`` likewise for
    the reference.  Two starts: the best of 36 axes 5 degrees apart, and the
    eigen-axis of the smallest eigenvalue of ``C_ref - C_sci`` (where ``f > 0``
    whenever that eigenvalue is negative, so the sign of the result is that of
    the eigenvalue test even for a maximum narrower than the grid's spacing, as
    behind a very elongated reference); from each, Newton steps on ``f'`` kept
    within 2.5 degrees; the better one is kept (accurate to about 1e-8 px
    against a scan of 20,000 axes, on random pairs of elliptical PSFs of 0.8-4 px).

    ``eig``: ``np.linalg.eigh(cr - cs)`` when the caller has it already.

    Returns ``theta`` (radians) and the two sigmas along it, each of shape (n,).
    """
    def terms(c):
        return 0.5 * (c[:, 0, 0] + c[:, 1, 1]), 0.5 * (c[:, 0, 0] - c[:, 1, 1]), c[:, 0, 1]

    def sigmas(A, B, C, theta):
        return np.sqrt(np.clip(A + B * np.cos(2 * theta) + C * np.sin(2 * theta), 0, None))

    (As, Bs, Cs), (Ar, Br, Cr) = terms(cs), terms(cr)
    n_axes = 36
    grid = np.linspace(0.0, np.pi, n_axes, endpoint=False)
    c2, s2 = np.cos(2 * grid), np.sin(2 * grid)
    f = (np.sqrt(np.clip(As[:, None] + Bs[:, None] * c2 + Cs[:, None] * s2, 0, None))
         - np.sqrt(np.clip(Ar[:, None] + Br[:, None] * c2 + Cr[:, None] * s2, 0, None)))
    _, V = np.linalg.eigh(cr - cs) if eig is None else eig
    eigen = np.arctan2(V[:, 1, 0], V[:, 0, 0])
    # both starts side by side: (2n,) arrays
    theta = np.concatenate([grid[np.argmax(f, axis=1)], eigen])
    As, Bs, Cs, Ar, Br, Cr = (np.concatenate([t, t]) for t in (As, Bs, Cs, Ar, Br, Cr))
    lo, hi = theta - np.pi / n_axes, theta + np.pi / n_axes
    tiny = np.finfo(float).tiny
    best_theta, best_f = theta, np.full(len(theta), -np.inf)
    for i in range(4):
        c, s = np.cos(2 * theta), np.sin(2 * theta)
        a, b = np.clip(As + Bs * c + Cs * s, tiny, None), np.clip(Ar + Br * c + Cr * s, tiny, None)
        sa, sb = np.sqrt(a), np.sqrt(b)
        better = sa - sb > best_f  # (a Newton step may overshoot: the best point seen is kept)
        best_theta, best_f = np.where(better, theta, best_theta), np.where(better, sa - sb, best_f)
        if i == 3:
            break
        da, db = 2 * (Cs * c - Bs * s), 2 * (Cr * c - Br * s)  # a', b'; a'' = -4 (a - A)
        d1 = da / (2 * sa) - db / (2 * sb)
        d2 = -2 * (a - As) / sa - da * da / (4 * a * sa) + 2 * (b - Ar) / sb + db * db / (4 * b * sb)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(d2 < 0, -d1 / d2, 0.0)  # a maximum's Newton step; none where f is not concave
        theta = np.clip(theta + np.nan_to_num(step), lo, hi)
    n = len(cs)
    best = np.where(best_f[n:] > best_f[:n], n, 0) + np.arange(n)
    theta = best_theta[best]
    return theta, sigmas(As[:n], Bs[:n], Cs[:n], theta), sigmas(Ar[:n], Br[:n], Cr[:n], theta)


def _own_ok(survey):
    """Each PSF's own moments flags ``(science, reference)`` of a survey (both its ``ok`` where it has none)."""
    ok = np.asarray(survey.ok, dtype=bool)

    def own(name):
        flags = getattr(survey, name, None)
        return ok if flags is None else np.asarray(flags, dtype=bool)

    return own("scienceOk"), own("referenceOk")


def check_ill_posed(survey: PsfSurvey, tolerance=0.01, noun="cells") -> IllPosedReport:
    """Compare the two PSFs' second moments per cell (see the module docstring).

    Parameters
    ----------
    survey : PsfSurvey
    tolerance : float
        Deficit (pixels) above which a cell is flagged.
    noun : str
        What the survey's positions are, for the messages (:class:`IllPosedReport`).

    Returns
    -------
    IllPosedReport

    Examples
    --------
    >>> from psfmatch import Box2I, SpatialCellSet
    >>> from psfmatch.psf import GaussianPsf
    >>> cells = SpatialCellSet(Box2I((0, 0), (256, 256)), 128, 128)
    >>> report = check_ill_posed(survey_psfs(GaussianPsf(21, 21, 2.0), GaussianPsf(21, 21, 1.8), cells))
    >>> report.illPosed, report.nFlagged, round(float(report.deficit[0]), 3)
    (True, 4, 0.2)
    >>> check_ill_posed(survey_psfs(GaussianPsf(21, 21, 2.0), GaussianPsf(31, 31, 2.6), cells)).illPosed
    False
    """
    ok = np.asarray(survey.ok, dtype=bool)
    # a PSF whose adaptive weight collapsed is narrower than UNDERSAMPLED_SIGMA along every axis: where the
    # other PSF was measured, that bound decides some cells -- an undersampled science PSF under a reference
    # broader than the bound is well-posed, an undersampled reference under a broader science PSF is not
    s_ok, r_ok = _own_ok(survey)
    sci_low = collapsed(survey.scienceMoments) & r_ok
    ref_low = collapsed(survey.referenceMoments) & s_ok
    round_bound = np.array([UNDERSAMPLED_SIGMA ** 2, UNDERSAMPLED_SIGMA ** 2, 0.0])
    cs = _covariance(np.where(sci_low[:, None], round_bound, survey.scienceMoments))
    cr = _covariance(np.where(ref_low[:, None], round_bound, survey.referenceMoments))
    eig = np.linalg.eigh(cr - cs)
    lam = eig[0][:, 0]
    theta, s_sci, s_ref = _widest_deficit(cs, cr, eig)
    deficit = s_sci - s_ref
    angle = np.degrees(theta) % 180.0
    angle = np.where(np.isclose(angle, 180.0), 0.0, angle)
    # (the bound gives the science PSF's largest deficit, and the reference's smallest)
    sci_low &= deficit <= tolerance
    ref_low &= deficit > tolerance
    measured = ok | sci_low | ref_low
    flagged = measured & (deficit > tolerance)
    # where the moments failed the numbers above come from a weight collapsed onto its floor: unknown, not 0.01 px
    deficit, angle, s_sci, s_ref, s_dec = (np.where(measured, a, np.nan) for a in
                                           (deficit, angle, s_sci, s_ref, np.sqrt(np.clip(-lam, 0, None))))
    return IllPosedReport(deficit, angle, s_sci, s_ref, s_dec, flagged, float(tolerance), survey, noun,
                          measured, sci_low, ref_low)


def enforce_ill_posed(report: IllPosedReport, strict: bool, stacklevel=3) -> None:
    """Raise :class:`IllPosedMatchError` (``strict``) or warn :class:`IllPosedMatchWarning` when ill-posed.

    Cells the check could not measure (:meth:`IllPosedReport.unmeasured_message`) are treated the same
    way: ``strict`` refuses a match it cannot verify.
    """
    msg = report.message() if report.illPosed else report.unmeasured_message()
    if not msg:
        return
    if strict:
        raise IllPosedMatchError(msg + " (strict=True: nothing was convolved)")
    log.warning(msg)
    warnings.warn(msg, IllPosedMatchWarning, stacklevel=stacklevel)


def check_kernel_quality(qa: dict, max_residual: float, max_negative_fraction: float, stacklevel=3, *,
                         auto_kernel=False, max_aperture_mismatch=None, wing_tried=False,
                         max_kernel_shift=None, kernel=None) -> list:
    """Warn (:class:`KernelQualityWarning`) when the worst QA numbers exceed the thresholds.

    Parameters
    ----------
    qa : dict
        ``metadata["qa"]`` with the ``"candidates"`` and ``"between"`` summaries of
        :func:`psfmatch.qa.summarize`.
    max_residual, max_negative_fraction : float
        ``qaMaxResidual`` and ``qaMaxKernelNegativeFraction``.
    auto_kernel : bool or "kept"
        True when the kernel was chosen by ``autoKernel``: the remedies then name
        the limits of its search instead of asking for it.  ``"kept"`` when
        ``autoKernel`` is on but left the configured kernel alone (a
        delta-function kernel on a varying field, ``scaleByFwhm``): the remedies
        name the configured fields only.
    max_aperture_mismatch : float, optional
        ``qaMaxApertureFluxMismatch``; None: not checked.
    wing_tried : bool
        The automatic kernel ran its wing trial (broad widths): the remedy says so.
    max_kernel_shift : float, optional
        ``qaMaxKernelShift`` (pixels); None: not checked.
    kernel : dict, optional
        The kernel that was fitted, so that the remedies fit it
        (:func:`kernel_remedy_context`): ``name`` ("AL" or "DF"),
        ``regularized`` and ``lambdaType`` (a delta-function kernel's
        regularization), ``kernelSize`` and ``spatialKernelOrder`` with
        ``userSize`` and ``userOrder`` (set by the user: the automatic mode
        keeps them), ``autoChoseBasis`` (the automatic mode chose another
        basis than the configured one).  None: an Alard-Lupton kernel,
        nothing set by the user.

    Returns
    -------
    list of str
        The flags raised (:data:`FLAG_RESIDUAL`, :data:`FLAG_NEGATIVE`, :data:`FLAG_KERNEL_SHIFT`,
        :data:`FLAG_APERTURE`).
    """
    flags = []
    kernel = kernel or {}
    df = kernel.get("name") == "DF"

    def worst(name):
        vals = [qa.get(w, {}).get(name) for w in ("candidates", "between")]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        return max(vals) if vals else None

    res = worst("residualMaxWorst")
    if res is not None and res > max_residual:
        flags.append(FLAG_RESIDUAL)
        at = qa.get("candidates", {}).get("residualMaxWorst")
        between = qa.get("between", {}).get("residualMaxWorst")
        where = ""
        if at is not None and between is not None and math.isfinite(at) and math.isfinite(between):
            where = f" ({at:.3g} at the candidates, {between:.3g} between them)"
        if auto_kernel is True:
            size = (f"a larger kernelSize (you set {kernel.get('kernelSize')}: the automatic mode keeps it)"
                    if kernel.get("userSize") else
                    "a larger kernelSize set by hand (the automatic mode tries up to 1.4 times the 6 sigma the "
                    "kernel's width needs, at most autoKernelMaxSize)")
            order = (f"a higher spatialKernelOrder (you set {kernel.get('spatialKernelOrder')}: the automatic mode "
                     "keeps it)" if kernel.get("userOrder") else "a higher autoKernelMaxSpatialOrder")
            tuning = f"{size}, {order}"
        else:
            tuning = ("a larger kernelSize, a higher spatialKernelOrder" if auto_kernel == "kept"
                      else "a larger kernelSize or autoKernel=True, a higher spatialKernelOrder")
        if df and kernel.get("regularized"):  # (first when absolute: LSST's strength over-smooths PSF stamps)
            tuning = (f"a weaker delta-function regularization (lambdaValue with lambdaType='absolute', which does not "
                      f"scale with the data: LSST's 0.2 over-smooths unit-sum PSF stamps; lambdaType='relative', the "
                      f"default, scales it to them), {tuning}" if kernel.get("lambdaType") == "absolute" else
                      f"{tuning}, a weaker delta-function regularization (kernel['DF'].lambdaScaling)")
        remedy = (f"the matched PSF differs from the reference. Remedy: {tuning}, smaller cells, or a broader "
                  "reference PSF (wider than the science PSF everywhere, wings included)")
        msg = (f"matched-PSF residual max|S*K - R|/max(R) reaches {res:.3g}{where}, above "
               f"qaMaxResidual={max_residual:g}: {remedy}")
        log.warning(msg)
        warnings.warn(msg, KernelQualityWarning, stacklevel=stacklevel)
    neg = worst("kernelNegativeFractionWorst")
    if neg is not None and neg > max_negative_fraction:
        flags.append(FLAG_NEGATIVE)
        basis = ("stronger delta-function regularization (kernel['DF'].lambdaScaling, or lambdaValue with "
                 "lambdaType='absolute'; useRegularization=True), an Alard-Lupton basis (kernel.name='AL'"
                 + (", set explicitly: autoKernel chose the delta-function basis here, and keeps a basis you set"
                    if kernel.get("autoChoseBasis") else "") + ")" if df
                 else "wider Alard-Lupton widths (alardSigGauss; on the command line, e.g. -c "
                      "\"kernel['AL'].alardSigGauss=[1.0, 2.0, 4.0]\"), a delta-function kernel with stronger "
                      "regularization (kernel.name='DF' and kernel['DF'].lambdaScaling)")
        msg = (f"kernel negative flux fraction sum|min(K,0)|/sum|K| reaches {neg:.3g}, above "
               f"qaMaxKernelNegativeFraction={max_negative_fraction:g}: the kernel oscillates (ringing, amplified "
               f"noise). Remedy: a broader reference PSF, {basis}"
               f"{'' if auto_kernel else ', or autoKernel=True'}")
        log.warning(msg)
        warnings.warn(msg, KernelQualityWarning, stacklevel=stacklevel)
    shift = worst("kernelShiftWorst")
    if max_kernel_shift is not None and shift is not None and shift > max_kernel_shift:
        flags.append(FLAG_KERNEL_SHIFT)
        msg = (f"the matching kernel moves the stars by {shift:.3g} px, "
               f"(dx, dy) = {_kernel_shift_where(qa, shift)}, above qaMaxKernelShift={max_kernel_shift:g} px: "
               "every star of the matched exposure moves by that shift (the kernel's centroid is off its centre "
               "pixel: first moments add under convolution), and the WCS is not changed, so positions measured on "
               "the matched exposure are off by it, and a coadd of exposures with different shifts blurs. Most "
               "often a PSF model is not "
               "centred in its stamp. Remedy: check the centring of the science and reference PSF models; for PSF "
               "images read them with recenter=True (psfmatch.psf.read_image_psf; on the command line "
               "image:FILE,recenter=true); or raise qaMaxKernelShift to accept the shift")
        log.warning(msg)
        warnings.warn(msg, KernelQualityWarning, stacklevel=stacklevel)
    ap = worst("apertureFluxMismatchWorst")
    if max_aperture_mismatch is not None and ap is not None and ap > max_aperture_mismatch:
        flags.append(FLAG_APERTURE)
        if not df:
            tried = " (the automatic mode tried them: see metadata[autoKernel][wingTrials])" if wing_tried else ""
            wider = (f"broader Alard-Lupton widths on a larger kernel{tried}, e.g. alardNGauss=5, "
                     "alardSigGauss=[0.7, 1.5, 3, 6, 10], alardDegGauss=[6, 4, 2, 2, 2], kernelSize=41 for a PSF of "
                     "about 2 px")
        elif not kernel.get("regularized"):
            wider = "a larger kernelSize, so that the delta-function kernel reaches the wing"
        else:
            weaker = ("lambdaValue, or lambdaType='relative'" if kernel.get("lambdaType") == "absolute"
                      else "lambdaScaling")
            wider = ("a larger kernelSize, so that the delta-function kernel reaches the wing (and a weaker "
                     f"regularization: kernel['DF'].{weaker})")
        msg = (f"matched-PSF encircled flux differs from the reference's by up to {ap:.3g} of the total flux in "
               f"a circular aperture (max_r |sum_(|x|<=r) S*K - R|), above qaMaxApertureFluxMismatch="
               f"{max_aperture_mismatch:g}: aperture fluxes measured with the reference PSF's aperture corrections "
               "will be off by that fraction of the total flux (more, relative to the aperture's own flux, in small "
               "apertures). Most often the science PSF has a wing that the kernel's basis cannot "
               f"remove, or the reference one it cannot build. Remedy: {wider}; a reference whose wing is as broad "
               "as the science PSF's (doublegaussian:, moffat:); or apertures corrected on the matched PSF")
        log.warning(msg)
        warnings.warn(msg, KernelQualityWarning, stacklevel=stacklevel)
    return flags


def kernel_remedy_context(config, user_config=None) -> dict:
    """The ``kernel`` argument of :func:`check_kernel_quality` for the fitted ``config`` (the automatic kernel's
    choice, or the task's); ``user_config``: the configuration the user gave, whose ``kernelSize`` and
    ``spatialKernelOrder`` the automatic mode keeps when they were set (default ``config``)."""
    from .autokernel import _user_set

    kc = config.kernel.active
    user = (user_config or config).kernel.active
    name = config.kernel.name
    return {"name": name, "regularized": bool(name == "DF" and kc.useRegularization),
            "lambdaType": kc.lambdaType if name == "DF" else None, "kernelSize": kc.kernelSize,
            "spatialKernelOrder": kc.spatialKernelOrder, "userSize": _user_set(user, "kernelSize"),
            "userOrder": _user_set(user, "spatialKernelOrder"),
            "autoChoseBasis": user_config is not None and user_config.kernel.name != name}


def _kernel_shift_where(qa, shift):
    """``"(dx, dy) px at ..."`` of the worst kernel shift ``shift`` in the QA summaries (which set, and where)."""
    for where, noun in (("candidates", "at the candidate"), ("between", "at the held-out position")):
        q = qa.get(where, {})
        if q.get("kernelShiftWorst") != shift:
            continue
        dx, dy = q.get("kernelShiftWorstDx"), q.get("kernelShiftWorstDy")
        text = f"({dx:+.3g}, {dy:+.3g}) px" if dx is not None and dy is not None else "(?, ?) px"
        if q.get("kernelShiftWorstX") is not None and q.get("kernelShiftWorstY") is not None:
            text += f" {noun} (x, y) = ({q['kernelShiftWorstX']:.6g}, {q['kernelShiftWorstY']:.6g})"
        else:
            text += f" {noun}s"
        return text
    return "(?, ?) px"
