"""Automatic choice of the kernel size, the basis and the spatial order (``config.autoKernel``).

LSST's users tune ``kernelSize``, ``alardSigGauss`` and the spatial sampling by
hand: a kernel too small gives "boxy" matched stars, one too large a noisy
kernel, and the Alard-Lupton default widths (0.7, 1.5, 3.0) px suit neither
narrow nor broad kernels.  With ``autoKernel = True`` psfmatch chooses them
from the data, by cross-validation on the PSF models themselves:

1. **Physics first.**  The adaptive second moments of both PSFs at every cell
   (:func:`psfmatch.diagnostics.survey_psfs`) give the kernel covariance
   ``C_k = C_ref - C_sci``; for Gaussians this is exact
   (``sigma_k^2 = sigma_ref^2 - sigma_sci^2`` along every axis).  The
   Alard-Lupton widths are built around ``sigma_k`` (the determinant radius of
   ``C_k``, median over the field): ``(sigma_k, sigma_k / 2, 2 sigma_k)``, the
   first carrying the highest polynomial degree, so that a Gaussian-to-Gaussian
   match is *in* the basis (Alard & Lupton 1998; Alard 2000; HOTPANTS' rule of
   widths 0.5, 1, 2 x sigma_match).  Kernel sizes form a ladder starting at
   ``6 sigma_k`` (major axis, worst cell) and growing by about 1.4 up to the
   largest of the science stamp, ``kernelSize`` and 1.4 x ``6 sigma_k``, at
   most ``autoKernelMaxSize`` (the PSF stamps and the exposure permitting).  For a
   match that is the same everywhere the regularized delta-function basis
   (Becker et al. 2012) is tried too, up to ``autoKernelMaxDFSize``, with
   relative strengths ``lambdaScaling`` in 1e-6, 1e-4, 1e-2 (above 31 px only
   the weakest one that passed the noise guard at the smaller sizes).
2. **Cross-validation.**  Each trial fits the candidates of a sub-grid of at
   most ``autoKernelMaxGrid`` x ``autoKernelMaxGrid`` cells (always including
   the outermost ones) with the task's own solver and spatial model, and is
   scored by the worst matched-PSF residual ``max |S (*) K_x - R| / max R`` at
   *held-out* positions: half-way between the sub-grid's cells, the centres
   of its quads and the corners of the exposure.  A spatial model that is too
   rigid (order too low) or that overfits shows up there.
3. **Selection.**  Trials whose kernel amplifies pixel noise more than
   ``autoKernelMaxNoiseGain`` times a Gaussian kernel of covariance ``C_k``
   does (``sum K^2 <= gain / (4 pi sqrt(det C_k))``) are inadmissible: a
   noiseless PSF model cannot reveal a noisy kernel through its residual.
   Among the admissible trials, ordered from the simplest (lowest spatial
   order, then smallest kernel, then Alard-Lupton before delta-function, then
   fewer basis kernels, then the strongest regularization), the first whose
   score is within a factor ``1 + autoKernelTolerance`` of the best, or below
   ``autoKernelResidualFloor``, is chosen: a bigger kernel or a higher order
   must *earn* its place.  So must negative lobes: a trial whose kernel is
   markedly negative (its negative fraction ``sum |min(K, 0)| / sum |K|``
   more than :data:`NEGATIVE_MARGIN` above the least negative admissible
   trial's, and :data:`NEGATIVE_RATIO` times it or more) competes only where it lowers the residual by more than a factor
   :data:`NEGATIVE_GAIN` below every other admissible trial; otherwise the
   choice is made among the others.  (A Gaussian-to-Gaussian match on 21 px
   science stamps took a richer basis with a negative fraction of 0.13 and
   3 x the noise, for a residual of 1.9e-6 instead of 2.8e-6 of the peak.)
   The spatial order is chosen first (with a generous kernel), then the
   kernel size and basis at that order.  No order above
   ``autoKernelMaxSpatialOrder`` is chosen (also when it is below the default
   ``spatialKernelOrder``; an order the user set still wins), and orders above
   ``spatialKernelOrder`` are tried only up to ``autoKernelMaxSpatialOrder``
   (default 2, LSST's order): each step multiplies the time to apply the kernel
   (exact variance), so raising it is the user's call; a match that is the same
   everywhere gets order 0.

4. **Wings.**  When the chosen Alard-Lupton kernel (size and widths left to
   the automatic mode) leaves the matched PSF's encircled flux more than
   ``qaMaxApertureFluxMismatch`` from the reference's at the held-out
   positions (:mod:`psfmatch.qa`'s ``apertureFluxMismatch``), one more trial
   adds broad Gaussians (:data:`WING_WIDTHS`: 3.3 and 5.5 x the science PSF's
   size) on a kernel four times the broadest wide (at most
   ``autoKernelMaxSize``).  The moments-built widths cannot build the broad,
   partly negative kernel that removes a real PSF's wing: on four DECam PSFEx
   models matched to round Gaussians the aperture fluxes were 2.1-5.6 % off;
   with the broad widths two came to 0.23 % and 0.48 % (from 3.5 % and 3.9 %),
   the others to 1.4 % and 4.1 % (from 2.1 % and the z band's 5.6 %).  It
   replaces the choice when it cuts the mismatch to
   :data:`WING_GAIN` of the choice's or less, passes the noise guard and keeps
   the residual within the tolerance (or ``qaMaxResidual``)
   (``metadata["autoKernel"]["wingTrials"]``).

The configured values form one of the trials ("config"), so on the held-out
positions the choice is never worse than the hand-tuned configuration by more
than the tolerance, unless that configuration is inadmissible (too noisy).

Explicit choices win
--------------------
The automatic mode only chooses what the user left alone.  A field counts as
the user's choice when it was assigned after the config was built (in code,
by an override string or file: :meth:`psfmatch.config.Config.isExplicit`),
even to its default value, or when it differs from its default.  Precisely:

- ``kernelSize`` set: only that size is tried.
- ``spatialKernelOrder`` set: that order (lowered, as in the task, when the
  candidates cannot constrain it).
- ``kernel.name`` set to ``"AL"``, or any of ``alardNGauss``, ``alardSigGauss``,
  ``alardDegGauss``, ``scaleByFwhm`` set: no delta-function trials; with the
  widths set, only the configured widths.
- ``kernel.name = "DF"``: only delta-function trials.
- The delta-function regularization is searched unless ``useRegularization``,
  ``lambdaType``, ``lambdaScaling`` or ``lambdaValue`` were set on
  ``kernel['DF']``; then every delta-function trial uses the configured one
  (none with ``useRegularization = False``, ``lambdaValue`` with
  ``lambdaType = "absolute"``).

LSST's padding rules and errors are kept: each trial's PSF stamp size is
LSST's (``doAutoPadPsf``, ``autoPadPsfTo``, ``padPsfBy``), sizes those rules
forbid are skipped, and an explicit ``kernelSize`` that is too big still raises
:class:`~psfmatch.errors.KernelTooBigError` in the fit.  ``autoKernel = False``
gives LSST's behaviour with the configured values.  One addition: unless
``doAutoPadPsf = False`` or ``autoPadPsfTo`` was set, the stamps are at least as
large as the reference needs to keep its edge below 1e-3 of its peak and all but
1e-3 of its flux inside (``metadata["autoKernel"]["minPsfSize"]``), up to the ``science stamp + kernel
- 1`` pixels the matched PSF can reach, so that choosing a smaller kernel never
crops the reference's wings; the chosen stamp size is then handed to the fit
as ``padPsfBy``.

When the fit's candidates cannot constrain the configured spatial order (a few
cells per axis), the trials, as the fit itself, hold at 0 the terms of a degree
along an axis that its rows (columns) of candidates cannot determine, and use the
highest order they can then constrain, with a note.  A switch to the
delta-function family keeps what the user set on the Alard-Lupton config that
both share (cells, spatial model and order, ``fitRegion``, ``solveRcond``, PCA).

The candidates tried and their scores are recorded in
``metadata["autoKernel"]``.

On a spatially varying field the spatial orders' trials are independent of
each other, and so are the configuration's trial and the standard basis at
every size, and the richer basis' trials: each group is evaluated on the
cores together
(``psfmatch.parallel.map_shared``; ``PSFMATCH_NUM_THREADS=1`` keeps it on
one).  A trial's arithmetic does not depend on the others', so the scores and
the choice are bit for bit those of one thread.

Scope and limits
----------------
- Delta-function trials are made only for matches that are the same over the
  field (one distinct candidate); a spatial delta-function model has
  ``(k^2 - 1) x n_s`` unknowns.  With ``kernel.name = "DF"`` on a spatially
  varying field the configured delta-function kernel is kept.  A
  delta-function trial that could not change the choice (an admissible,
  clean Alard-Lupton trial no larger already reaches
  ``autoKernelResidualFloor``, with a margin of ``autoKernelTolerance``) is
  not made, and its record says so.
- On a spatially varying field the richer Alard-Lupton basis (degrees 6, 4, 2;
  about 1.5x the fit time on large fields) is tried only when the standard one
  leaves a held-out residual above ``100 x autoKernelResidualFloor``.
- The cell size is not changed: on a small exposure (a few cells per axis) the
  spatial orders the candidates cannot constrain are skipped.  Use smaller
  cells there.
- With ``usePcaForSpatialKernel`` the trials still fit the full basis' spatial
  model; the principal components are then taken in the fit.
- With ``scaleByFwhm = True`` LSST's FWHM rule sets the widths and the size in
  the fit; the automatic mode then changes nothing.
- Trials whose fit would exceed ``maxMemoryGiB`` (the task's estimate) are
  skipped, with a note; the spatial orders are then compared on the largest
  kernel that fits.  Each trial is counted at its fit's estimate (a trial
  alone, with the stamps the trials share, measured 0.6 to 1.0 of it): no
  more trials run at once than that many fit the limit, and the spectral
  products kept for the next fits (``psfmatch.solve``'s cache) hold only
  what those trials leave of it.

References
----------
Alard, C. & Lupton, R. H. 1998, ApJ 503, 325.
Alard, C. 2000, A&AS 144, 363.
Becker, A. C. et al. 2012, AJ 143, 21.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .diagnostics import PsfSurvey, size_holding, untruncated_size
from .errors import PsfEvaluationError
from .geom import Point2D
from .kernel.basis import KernelBasis, alard_lupton_basis, makeDeltaFunctionBasisList, make_regularization_matrix
from .kernel.spatial import SpatialFunction, axis_degree_caps, full_column_rank
from .parallel import available_cores, map_shared
from .psf.base import _ResizedPsf, kernel_image_pair_stacks, pad_or_crop
from .qa import aperture_flux_mismatch, matched_stamps
from .solve import (GramBuilder, NormalEquations, constrained_basis, reduce_constrained, solve_candidates,
                    solve_spatial, spectral_cache_room, transform_equations)

__all__ = ["KernelTrial", "TrialResult", "AutoKernelChoice", "choose_kernel", "kernel_size_ladder",
           "alard_lupton_widths", "DF_LAMBDAS"]

log = logging.getLogger(__name__)

#: On a spatially varying field the richer Alard-Lupton basis (degrees 6, 4, 2: 49 kernels instead of 27)
#: is tried only when the standard one leaves a held-out residual above this multiple of
#: ``autoKernelResidualFloor``.
RICH_BASIS_FACTOR = 100.0

#: Relative delta-function regularization strengths tried (``lambdaType = "relative"``).
DF_LAMBDAS = (1e-6, 1e-4, 1e-2)

#: Delta-function kernels larger than this are tried only with the weakest admissible strength found at smaller
#: sizes.
DF_SWEEP_MAX_SIZE = 31

#: A trial is *markedly negative* when its kernel's negative fraction ``sum |min(K, 0)| / sum |K|`` exceeds the
#: least negative admissible trial's by more than this (0.05: negative lobes holding about a tenth more of the
#: kernel sum than the match needs) and is at least :data:`NEGATIVE_RATIO` times it.
NEGATIVE_MARGIN = 0.05

#: ... and at least this many times the least negative admissible trial's fraction: where every kernel needs
#: lobes (a real PSF's wings; an ill-posed match), 0.40 against 0.34 is not marked (a DECam PSFEx model matched
#: to a narrow Gaussian: the 0.40 trial's widths were the ones its wing stage improved on), 0.46 against 0.31 is.
NEGATIVE_RATIO = 1.25

#: A markedly negative trial is chosen only where it lowers the held-out residual by more than this factor below
#: every admissible trial that is not markedly negative.
NEGATIVE_GAIN = 2.0

_MIN_SIGMA = 0.5  # px: floor of the kernel width used for sizes and the basis
_MIN_NARROW = 0.35  # px: floor of the narrow Alard-Lupton width (a near-delta Gaussian)


def _odd(n) -> int:
    n = int(math.ceil(n))
    return n if n % 2 == 1 else n + 1


def _next_odd_integer(x) -> int:
    n = int(math.ceil(x))
    return n + 1 if n % 2 == 0 else n


@dataclass(frozen=True)
class KernelTrial:
    """One configuration tried by the automatic mode.

    Attributes
    ----------
    family : {"AL", "DF"}
        Alard-Lupton or regularized delta-function basis.
    kernelSize : int
    spatialOrder : int
    sigmas, degrees : tuple
        Alard-Lupton widths (px) and polynomial degrees.
    lambdaScaling : float
        Relative delta-function regularization strength (``lambdaType = "relative"``; 0: none).
    lambdaType : {"relative", "absolute"}
        How the delta-function regularization strength is set (see
        :class:`~psfmatch.config.PsfMatchConfigDF`).
    lambdaValue : float
        Absolute delta-function regularization strength (``lambdaType = "absolute"``; 0: none).
    label : str
        Where the trial comes from (``"config"``, ``"moments"``, ``"df"``).
    """

    family: str
    kernelSize: int
    spatialOrder: int
    sigmas: tuple = ()
    degrees: tuple = ()
    lambdaScaling: float = 0.0
    lambdaType: str = "relative"
    lambdaValue: float = 0.0
    label: str = ""

    @property
    def nBasis(self) -> int:
        if self.family == "DF":
            return self.kernelSize ** 2
        return int(sum((d + 1) * (d + 2) // 2 for d in self.degrees))

    def sort_key(self):
        """Simplest first: spatial order, kernel size, AL before DF, fewer kernels, stronger regularization."""
        return (self.spatialOrder, self.kernelSize, 0 if self.family == "AL" else 1, self.nBasis, -self.lambdaScaling)

    def describe(self) -> str:
        if self.family == "AL":
            sig = ", ".join(f"{s:.3g}" for s in self.sigmas)
            deg = ", ".join(str(d) for d in self.degrees)
            return f"AL k={self.kernelSize} sigmas=({sig}) degrees=({deg}) order={self.spatialOrder} [{self.label}]"
        if self.lambdaType == "absolute":
            lam = f"lambda={self.lambdaValue:g} (absolute)" if self.lambdaValue > 0 else "unregularized"
        else:
            lam = f"lambda={self.lambdaScaling:g}" if self.lambdaScaling > 0 else "unregularized"
        return f"DF k={self.kernelSize} {lam} order={self.spatialOrder} [{self.label}]"

    def to_dict(self) -> dict:
        d = {"family": self.family, "kernelSize": int(self.kernelSize), "spatialOrder": int(self.spatialOrder),
             "label": self.label, "description": self.describe()}
        if self.family == "AL":
            d["sigmas"] = [float(s) for s in self.sigmas]
            d["degrees"] = [int(v) for v in self.degrees]
        else:
            d["lambdaType"] = self.lambdaType
            d["lambdaScaling" if self.lambdaType == "relative" else "lambdaValue"] = float(
                self.lambdaScaling if self.lambdaType == "relative" else self.lambdaValue)
        return d


@dataclass
class TrialResult:
    """The evidence for one :class:`KernelTrial`.

    Attributes
    ----------
    score : float
        Worst ``max |S (*) K - R| / max R`` at the held-out positions (inf if the trial failed).
    residualMaxFit : float
        The same at the fitted candidates.
    residualL2 : float
        Worst ``||S (*) K - R|| / ||R||`` at the held-out positions.
    apertureFluxMismatch : float
        Worst encircled-flux difference at the held-out positions (:mod:`psfmatch.qa`).
    noiseGain : float
        Worst ``sum K^2`` of the unit-sum kernel (white-noise variance factor).
    noiseRatio : float
        ``noiseGain`` relative to the Gaussian kernel of covariance ``C_k``.
    negativeFraction : float
        Worst ``sum |min(K, 0)| / sum |K|``.
    markedlyNegative : bool
        Its negative fraction exceeds the least negative admissible trial's by more than
        :data:`NEGATIVE_MARGIN` and is :data:`NEGATIVE_RATIO` times it or more (see :func:`_select`).
    psfSize : int
        The PSF stamp size the trial used (LSST's padding rule).
    admissible : bool
    note : str
    time : float
        Wall-clock seconds of this trial's evaluation.  Independent trials run on the
        cores together, so these overlap: their sum can exceed the whole choice's time.
    """

    trial: KernelTrial
    score: float = float("inf")
    residualMaxFit: float = float("inf")
    residualL2: float = float("inf")
    apertureFluxMismatch: float = float("inf")
    noiseGain: float = float("inf")
    noiseRatio: float = float("inf")
    negativeFraction: float = float("nan")
    markedlyNegative: bool = False
    psfSize: int = 0
    admissible: bool = False
    note: str = ""
    time: float = 0.0

    def to_dict(self) -> dict:
        def f(v):
            v = float(v)
            return v if math.isfinite(v) else None

        d = self.trial.to_dict()
        d.update({"score": f(self.score), "residualMaxFit": f(self.residualMaxFit), "residualL2": f(self.residualL2),
                  "apertureFluxMismatch": f(self.apertureFluxMismatch),
                  "noiseGain": f(self.noiseGain), "noiseRatio": f(self.noiseRatio),
                  "negativeFraction": f(self.negativeFraction), "markedlyNegative": bool(self.markedlyNegative),
                  "psfSize": int(self.psfSize),
                  "admissible": bool(self.admissible), "time": float(self.time)})
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class AutoKernelChoice:
    """What :func:`choose_kernel` returns.

    Attributes
    ----------
    trial : KernelTrial
        The chosen trial.
    result : TrialResult
        Its evidence.
    config : ModelPsfMatchConfig
        A copy of the task's config with the choice applied and ``autoKernel = False``.
    results : list of TrialResult
        Every trial, in the order tried.
    metadata : dict
        JSON-serializable record for ``metadata["autoKernel"]``.
    """

    trial: KernelTrial
    result: TrialResult
    config: object
    results: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# physics: widths and sizes from the second moments


def _kernel_widths(survey: PsfSurvey):
    """(median determinant radius, worst major-axis sigma, Gaussian noise reference) of ``C_ref - C_sci``.

    Negative eigenvalues (deconvolution) are clipped to 0 and the widths floored at 0.5 px.  The positions
    whose survey is ``ok`` are used, else every position measured; NaN for all three when the moments
    failed everywhere (PSFs narrower than about 0.8 px sigma along an axis).
    """
    C = survey.kernel_covariances()
    measured = np.isfinite(C).all(axis=(1, 2))
    use = measured & np.asarray(survey.ok, bool)
    use = use if use.any() else measured
    if not use.any():
        return math.nan, math.nan, math.nan
    C = C[use]
    w = np.clip(np.linalg.eigvalsh(C), 0.0, None)  # (n, 2) ascending
    det_r = np.where(w[:, 0] > 0, np.sqrt(np.sqrt(w[:, 0] * w[:, 1])), np.sqrt(0.5 * (w[:, 0] + w[:, 1])))
    s = max(float(np.median(det_r)), _MIN_SIGMA)
    s_big = max(float(np.sqrt(w[:, 1].max())), _MIN_SIGMA)
    # sum K^2 of a unit-sum Gaussian of covariance C: 1 / (4 pi sqrt(det C)); largest over the field
    dets = np.sqrt(np.clip(w[:, 0], _MIN_SIGMA ** 2, None) * np.clip(w[:, 1], _MIN_SIGMA ** 2, None))
    g_ref = float(1.0 / (4 * np.pi * dets.min()))
    return s, s_big, g_ref


def alard_lupton_widths(sigma_k, rich=False):
    """Alard-Lupton widths and degrees around the kernel width ``sigma_k`` (pixels).

    Returns ``((sigma_k, sigma_k / 2, 2 sigma_k), (4, 2, 2))``, or degrees
    ``(6, 4, 2)`` when ``rich``: the Gaussian of width ``sigma_k`` comes first
    (it is the basis' only kernel with a non-zero sum, so a Gaussian-to-Gaussian
    match needs no other term) and carries the highest degree; the narrow and
    broad ones absorb departures from a Gaussian kernel and its variation across
    the field.
    """
    s = max(float(sigma_k), _MIN_SIGMA)
    sig = (round(s, 4), round(max(s / 2, _MIN_NARROW), 4), round(2 * s, 4))
    return sig, ((6, 4, 2) if rich else (4, 2, 2))


#: The smallest kernel side the automatic choice tries (:func:`kernel_size_ladder`'s start, unless the exposure
#: holds less).
MIN_KERNEL_SIZE = 5


def kernel_size_ladder(sigma_big, k_max, k_min=MIN_KERNEL_SIZE, growth=1.4):
    """Odd kernel sizes from ``6 sigma_big`` (``2 ceil(3 sigma) + 1``), growing by ``growth``, up to ``k_max``."""
    k0 = max(k_min, _odd(2 * math.ceil(3 * sigma_big) + 1))
    if k_max < k0:
        return [k_max] if k_max >= 3 else []
    out = [k0]
    while True:
        nxt = _odd(out[-1] * growth)
        if nxt >= k_max:
            break
        out.append(nxt)
    if k_max - out[-1] >= 4:
        out.append(k_max)
    elif out[-1] != k_max and k_max > out[-1]:
        out[-1] = k_max
    return out


# ---------------------------------------------------------------------------
# the data the trials run on


class _TrialData:
    """Stamps of the fit subset and the held-out positions, at the largest stamp size any trial needs."""

    def __init__(self, science_psf, reference_psf, survey, cell_set, bbox, p_max, max_grid, constant):
        self.bbox = bbox
        self.constant = constant
        self.p_max = p_max
        self._sized = {}
        try:
            ref_big = reference_psf.resized(p_max, p_max)
        except Exception:  # a model without a working resize, as in the task
            ref_big = _ResizedPsf(reference_psf, p_max, p_max)
        self.reference_psf = ref_big
        nx, ny = cell_set.nx, cell_set.ny
        by_cell = {c: j for j, c in enumerate(survey.cells)}
        if constant:
            s = self._science(science_psf, survey, 0, None)
            r = ref_big.computeKernelImage(Point2D(*survey.positions[0]))
            self.S_fit, self.R_fit = s[None], r[None]
            self.xy_fit = survey.positions[:1].copy()
            self.S_ho, self.R_ho = self.S_fit, self.R_fit
            self.xy_ho = self.xy_fit
            return
        ix = np.unique(np.round(np.linspace(0, nx - 1, min(nx, max_grid))).astype(int))
        iy = np.unique(np.round(np.linspace(0, ny - 1, min(ny, max_grid))).astype(int))
        centres = cell_set.cell_centers()
        S, R, xy = [], [], []
        grid_x = {}
        for j in iy:
            for i in ix:
                c = int(j) * nx + int(i)
                if c not in by_cell:
                    continue
                p = centres[c]
                s = self._science(science_psf, survey, by_cell[c], p)
                try:
                    r = ref_big.computeKernelImage(p)
                except PsfEvaluationError:
                    continue
                S.append(s)
                R.append(r)
                xy.append((p.x, p.y))
                grid_x[(int(i), int(j))] = (p.x, p.y)
        self.S_fit, self.R_fit, self.xy_fit = np.array(S), np.array(R), np.array(xy, dtype=float)
        # held-out: midpoints between neighbouring sub-grid cells, quad centres, exposure corners
        ho = []
        for a, j in enumerate(iy):
            for b, i in enumerate(ix):
                p = grid_x.get((int(i), int(j)))
                if p is None:
                    continue
                for db, da in ((1, 0), (0, 1), (1, 1)):  # right, up and diagonal neighbours
                    if b + db < len(ix) and a + da < len(iy):
                        q = grid_x.get((int(ix[b + db]), int(iy[a + da])))
                        if q is not None:
                            ho.append(((p[0] + q[0]) / 2, (p[1] + q[1]) / 2))
        x0, y0, x1, y1 = bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()
        fitted = {(float(x), float(y)) for x, y in xy}  # ("spread" candidates sit on the corners: not held out)
        ho += [c for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)) if (float(c[0]), float(c[1])) not in fitted]
        pts = [Point2D(float(x), float(y)) for x, y in ho]
        S_ho, R_ho, kept = kernel_image_pair_stacks(science_psf, ref_big, pts, p_max)
        if not kept:  # nothing between the cells (a single cell): validate on the fitted candidates
            self.S_ho, self.R_ho, self.xy_ho = self.S_fit, self.R_fit, self.xy_fit
        else:
            self.S_ho, self.R_ho = S_ho, R_ho
            self.xy_ho = np.array([(pts[i].x, pts[i].y) for i in kept], dtype=float)

    def _science(self, science_psf, survey, j, p):
        # the survey zero-padded the science stamps to its common size; p_max >= the native science size
        return pad_or_crop(survey.science[j], self.p_max, self.p_max)

    def at_size(self, P):
        """``(S_fit, R_fit, S_ho, R_ho)`` on ``P x P`` stamps (references renormalized), made once per size.

        Also returns one dict per science stack for :func:`~psfmatch.qa.matched_stamps`'s
        ``spectra``, shared by the trials of this stamp size.
        """
        hit = self._sized.get(P)
        if hit is None:
            S_fit, R_fit = self._crop(self.S_fit, P, False), self._crop(self.R_fit, P, True)
            if self.S_ho is self.S_fit:
                S_ho, R_ho = S_fit, R_fit
            else:
                S_ho, R_ho = self._crop(self.S_ho, P, False), self._crop(self.R_ho, P, True)
            hit = self._sized[P] = (S_fit, R_fit, S_ho, R_ho, {}, {})
        return hit

    @staticmethod
    def _crop(stack, P, renormalize):
        if stack.shape[-1] == P:
            return stack
        out = np.array([pad_or_crop(s, P, P) for s in stack])
        if renormalize:
            out /= out.sum(axis=(1, 2), keepdims=True)
        return out


# ---------------------------------------------------------------------------
# one trial



def _make_basis(trial: KernelTrial) -> KernelBasis:
    if trial.family == "AL":
        return KernelBasis(alard_lupton_basis(trial.kernelSize // 2, trial.sigmas, trial.degrees), "alard-lupton")
    return makeDeltaFunctionBasisList(trial.kernelSize)


def _evaluate(trial: KernelTrial, data: _TrialData, P: int, kc, dfc, g_ref: float, rcond: float,
              cache: dict) -> TrialResult:
    t0 = time.perf_counter()
    res = TrialResult(trial, psfSize=P)
    try:
        basis = _make_basis(trial)
        S, R, S_ho, R_ho, spectra_fit, spectra_ho = data.at_size(P)
        key = (trial.family, trial.kernelSize, P, trial.sigmas, trial.degrees)
        raw = cache.get(key)
        if raw is None:
            raw = cache[key] = GramBuilder(basis, kc.fitRegion).build(S, R)
        strength = trial.lambdaValue if trial.lambdaType == "absolute" else trial.lambdaScaling
        if trial.family == "DF" and strength > 0:
            H = cache.get(("H", trial.kernelSize))
            if H is None:
                H = cache[("H", trial.kernelSize)] = make_regularization_matrix(
                    trial.kernelSize, dfc.regularizationType, dfc.centralRegularizationStencil,
                    dfc.forwardRegularizationOrders, dfc.regularizationBorderPenalty)
            # the fit's rule (solve.lambda_for): absolute, or relative to tr(M) / tr(H)
            lam = (np.full(len(raw.M), float(strength)) if trial.lambdaType == "absolute"
                   else strength * np.trace(raw.M, axis1=1, axis2=2) / np.trace(H))
            raw = NormalEquations(raw.M + lam[:, None, None] * H[None], raw.b, raw.yy)
        imgs, order, ratios, s_p = constrained_basis(basis)
        eq = reduce_constrained(transform_equations(raw, order, ratios, s_p))
        # the kernels as term images and each position's weights: the residuals transform the terms
        # instead of every position's kernel
        if data.constant or trial.spatialOrder == 0 and len(S) == 1:
            coeffs, _, _ = solve_candidates(eq, rcond)
            # one kernel everywhere: a single term of weight 1
            term_images = np.tensordot(coeffs[0], imgs, axes=1)[None]
            w_fit, w_ho = np.ones((len(S), 1)), np.ones((len(S_ho), 1))
        else:
            # the same functions as the fit's; raw-pixel monomials in their well-conditioned (Chebyshev) form
            sf, _ = SpatialFunction(kc.spatialModelType, trial.spatialOrder, data.bbox).conditioned()
            fitted = sf.term_mask(*axis_degree_caps(data.xy_fit[:, 0], data.xy_fit[:, 1]))  # as the fit does
            F = sf.evaluate(data.xy_fit[:, 0], data.xy_fit[:, 1]).T[:, fitted]
            if not full_column_rank(F):
                res.note = (f"{len(S)} candidates cannot constrain a spatial model of order {trial.spatialOrder}")
                res.time = time.perf_counter() - t0
                return res
            theta, _, _ = solve_spatial(eq, F, rcond)
            # K(x) = B_0 + sum_p f_p(x) sum_i theta_ip B_(i+1): 1 + nterms term images, weights (1, f(x))
            term_images = np.concatenate([imgs[:1], np.tensordot(theta.T, imgs[1:], axes=1)])
            w_fit, w_ho = (np.concatenate([np.ones((len(f), 1)), f], axis=1)
                           for f in (F, sf.evaluate(data.xy_ho[:, 0], data.xy_ho[:, 1]).T[:, fitted]))
        K_fit = np.tensordot(w_fit, term_images, axes=1)
        K_ho = np.tensordot(w_ho, term_images, axes=1)
        rmax_fit, _, _ = _residuals(S, R, K_fit, spectra_fit, (w_fit, term_images))
        rmax, rl2, aperture = _residuals(S_ho, R_ho, K_ho, spectra_ho, (w_ho, term_images))
        res.score = float(rmax.max())
        res.apertureFluxMismatch = float(aperture.max())
        res.residualMaxFit = float(rmax_fit.max())
        res.residualL2 = float(rl2.max())
        Kall = np.concatenate([K_fit, K_ho])
        res.noiseGain = float(np.max(np.sum(Kall ** 2, axis=(1, 2))))
        res.noiseRatio = res.noiseGain / g_ref
        res.negativeFraction = float(np.max(np.clip(-Kall, 0, None).sum(axis=(1, 2)) / np.abs(Kall).sum(axis=(1, 2))))
        if not np.isfinite(res.score):
            res.score = float("inf")
            res.note = "non-finite solution"
    except Exception as exc:  # a trial that cannot be solved is reported, never fatal
        res.note = f"{type(exc).__name__}: {exc}"
        res.score = float("inf")
    res.time = time.perf_counter() - t0
    return res


def _residuals(S, R, K, spectra=None, terms=None):
    """Worst-pixel and L2 residuals of ``S (*) K - R`` (``R`` zero-padded), relative to ``max R`` / ``||R||``,
    and the aperture-flux mismatch (:mod:`psfmatch.qa`'s ``apertureFluxMismatch``).

    ``spectra``: the transforms of ``S`` kept between trials; ``terms``: the kernels as combinations of
    a few term images (both passed to :func:`~psfmatch.qa.matched_stamps`).
    """
    P, k = S.shape[-1], K.shape[-1]
    h = k // 2
    m = matched_stamps(S, K, spectra=spectra, terms=terms)
    m[:, h:h + P, h:h + P] -= R
    peak = R.max(axis=(1, 2))
    rmax = np.abs(m).max(axis=(1, 2)) / peak
    rl2 = np.sqrt(np.sum(m * m, axis=(1, 2)) / np.sum(R * R, axis=(1, 2)))
    return rmax, rl2, aperture_flux_mismatch(m, P)


# ---------------------------------------------------------------------------
# selection


def _same(a: KernelTrial, b: KernelTrial) -> bool:
    return replace(a, label="") == replace(b, label="")


#: The start of the note of a markedly negative trial that :func:`_select` passed over.
_PASSED_OVER = "passed over: markedly negative"

#: The note of a trial skipped because the fit of its kernel would exceed ``maxMemoryGiB``.
_TOO_BIG_FOR_MEMORY = "skipped: the fit of this kernel would exceed maxMemoryGiB"


def _select(results, tol, floor):
    """The simplest admissible result within ``(1 + tol)`` of the best score (or below ``floor``).

    Markedly negative trials (:func:`_mark_negative`) compete only where they lower the best score by more
    than a factor :data:`NEGATIVE_GAIN` below every admissible trial that is not: otherwise the choice is made
    among the others (a passed-over trial says so in its note).  Negative lobes that the match does not need
    ring and amplify noise, while the residual they buy is negligible (a Gaussian-to-Gaussian match on
    truncated stamps: 1.9e-6 instead of 2.8e-6 of the peak, for a negative fraction of 0.13 and 3 x the noise).
    """
    ok = [r for r in results if r.admissible and np.isfinite(r.score)]
    if not ok:
        return None
    best = min(r.score for r in ok)
    clean = [r for r in ok if not r.markedlyNegative]
    best_clean = min((r.score for r in clean), default=float("inf"))
    if len(clean) < len(ok) and best_clean <= NEGATIVE_GAIN * best:
        for r in ok:
            if r.markedlyNegative and r.score < best_clean and not r.note:
                r.note = (f"{_PASSED_OVER} (negative fraction {r.negativeFraction:.2g}); its residual "
                          f"{r.score:.2g} is not a factor {NEGATIVE_GAIN:g} below the others' best, {best_clean:.2g}")
        ok, best = clean, best_clean
    limit = max(best * (1.0 + tol), floor)
    for r in sorted(ok, key=lambda r: r.trial.sort_key()):
        if r.score <= limit:
            return r
    return min(ok, key=lambda r: r.score)


def _floor_reached(results, k, order, max_noise, floor, tol):
    """An Alard-Lupton result at ``order`` and at most ``k`` px that settles the choice against delta-function
    trials of ``k`` px, or None.

    Such a result is admissible (noise guard), its score times ``1 + tol`` is at most ``floor``, and neither it
    nor any admissible result within ``floor`` that sorts before it is more negative than
    :data:`NEGATIVE_MARGIN` (none of them can ever be marked markedly negative).  Then :func:`_select`'s limit
    is ``floor`` whatever else is tried, and its choice is the first result in sort order up to this one
    that is within ``floor``: the same with or without delta-function trials of ``k`` px, which sort after
    it (smaller or equal size, Alard-Lupton first).  Those trials are not made (a 41 px one solves for 1681 unknowns: 0.4-0.8 s of a
    constant match's 1 s choice).
    """
    def clean(r):
        return r.negativeFraction <= NEGATIVE_MARGIN

    def admissible(r):
        return np.isfinite(r.score) and r.noiseRatio <= max_noise

    for r in results:
        if (r.trial.family == "AL" and r.trial.kernelSize <= k and r.trial.spatialOrder == order
                and admissible(r) and r.score * (1.0 + tol) <= floor and clean(r)
                and all(clean(q) for q in results  # (r itself is clean)
                        if admissible(q) and q.score <= floor and q.trial.sort_key() <= r.trial.sort_key())):
            return r
    return None


def _mark_negative(results):
    """Flag the trials whose negative fraction exceeds the least negative admissible one's by :data:`NEGATIVE_MARGIN`
    and is :data:`NEGATIVE_RATIO` times it or more.

    The reference is the trials' own: a real PSF's match may need negative lobes (a PSFEx model matched to a
    round Gaussian: 0.1-0.35), and only lobes well beyond the cleanest trial's count against a trial.
    """
    for r in results:  # a stage-1 trial competes again in stage 2: judged afresh there
        if r.note.startswith(_PASSED_OVER):
            r.note = ""
    neg = [r.negativeFraction for r in results
           if r.admissible and np.isfinite(r.score) and np.isfinite(r.negativeFraction)]
    ref = min(neg) if neg else float("nan")
    for r in results:
        r.markedlyNegative = bool(np.isfinite(ref) and np.isfinite(r.negativeFraction)
                                  and r.negativeFraction > max(ref + NEGATIVE_MARGIN, NEGATIVE_RATIO * ref))


def _mark_admissible(results, max_noise):
    for r in results:
        r.admissible = bool(np.isfinite(r.score) and r.noiseRatio <= max_noise)
        if np.isfinite(r.score) and not r.admissible and not r.note:
            r.note = (f"noise gain {r.noiseRatio:.2g} x the Gaussian kernel's exceeds "
                      f"autoKernelMaxNoiseGain={max_noise:g}")
    if not any(r.admissible for r in results):
        # nothing passes the noise guard: fall back to the residual alone, and say so
        for r in results:
            if np.isfinite(r.score):
                r.admissible = True
        return False
    return True


# ---------------------------------------------------------------------------
# the driver


def _user_set(cfg, name) -> bool:
    """A field is the user's choice when it was assigned explicitly or differs from its class default."""
    explicit = cfg.isExplicit(name) if hasattr(cfg, "isExplicit") else False
    return bool(explicit or getattr(cfg, name) != getattr(type(cfg)(), name))


def _free_fields(config):
    """Which choices the automatic mode may make: those the user left alone (see the module docstring)."""
    kc = config.kernel.active
    name_set = config.kernel.isExplicit() if hasattr(config.kernel, "isExplicit") else False
    name_set = name_set or config.kernel.name != "AL"
    free = {"kernelSize": not _user_set(kc, "kernelSize"),
            "spatialKernelOrder": not _user_set(kc, "spatialKernelOrder")}
    if config.kernel.name == "AL":
        al_set = any(_user_set(kc, f) for f in ("alardNGauss", "alardSigGauss", "alardDegGauss", "scaleByFwhm"))
        free["alWidths"] = not al_set
        # an explicit kernel.name = "AL" or explicit widths keep the Alard-Lupton basis
        free["families"] = ("AL",) if (al_set or name_set) else ("AL", "DF")
    else:
        free["alWidths"] = False
        free["families"] = ("DF",)
    # the delta-function config holds the regularization, also when the family may switch to it
    free["lambda"] = not any(_user_set(config.kernel["DF"], f)
                             for f in ("useRegularization", "lambdaType", "lambdaScaling", "lambdaValue"))
    free["usePca"] = not _user_set(kc, "usePcaForSpatialKernel")
    return free


def _constrained_order(xy, kind, order, bbox) -> int:
    """The highest spatial order up to ``order`` that the positions ``xy`` (n, 2) constrain, as the fit does:
    its terms of degree up to :func:`~psfmatch.kernel.spatial.axis_degree_caps` along each axis determined."""
    cap_x, cap_y = axis_degree_caps(xy[:, 0], xy[:, 1])
    for o in range(min(order, cap_x + cap_y), 0, -1):
        sf, _ = SpatialFunction(kind, o, bbox).conditioned()
        if full_column_rank(sf.evaluate(xy[:, 0], xy[:, 1]).T[:, sf.term_mask(cap_x, cap_y)]):
            return o
    return 0


def _psf_size_for(config, p_native, k, p_min=0):
    """LSST's padded science stamp size for kernel size ``k``, or None if the padding rules forbid ``k``.

    ``p_min`` (odd): with ``doAutoPadPsf`` the stamps are padded to at least that size too, up to
    ``p_native + k - 1`` (see :func:`choose_kernel`: the reference is not cropped).
    """
    if config.doAutoPadPsf:
        # the matched PSF S (*) K reaches p_native + k - 1 pixels at most: larger stamps would only fit the
        # reference's noise floor, or the edge of a stamp that truncates it anyway
        P = max(p_native, _next_odd_integer(k * config.autoPadPsfTo), min(p_min, p_native + k - 1))
    else:
        P = p_native + config.padPsfBy
    kmax = P - 1
    if kmax % 2 == 0:
        kmax -= 1
    return P if k <= kmax else None


def _df_regularizations(dfc, free_lambda) -> list:
    """The delta-function trials' regularizations, as :class:`KernelTrial` fields.

    The sweep :data:`DF_LAMBDAS` (relative) when the user left the regularization
    alone; otherwise the one configured on ``dfc`` (``kernel['DF']``): none with
    ``useRegularization = False``, else absolute or relative as its ``lambdaType`` says.
    """
    if free_lambda:
        return [{"lambdaScaling": float(v)} for v in DF_LAMBDAS]
    if not dfc.useRegularization:
        return [{"lambdaScaling": 0.0}]
    if dfc.lambdaType == "absolute":
        return [{"lambdaType": "absolute", "lambdaValue": float(dfc.lambdaValue)}]
    return [{"lambdaScaling": float(dfc.lambdaScaling)}]


def _config_trial(config, order) -> KernelTrial | None:
    """The configuration's own trial (None for ``scaleByFwhm``, whose basis the fit decides)."""
    kc = config.kernel.active
    if config.kernel.name == "AL":
        if kc.scaleByFwhm:
            return None  # the FWHM-scaled basis is decided in the fit; it is not a fixed trial
        return KernelTrial("AL", kc.kernelSize, order, tuple(float(s) for s in kc.alardSigGauss),
                           tuple(int(d) for d in kc.alardDegGauss), label="config")
    return KernelTrial("DF", kc.kernelSize, order, label="config", **_df_regularizations(kc, False)[0])


#: Fields of :class:`~psfmatch.config.PsfMatchConfig` that the fit shares between the two families and that the
#: trials were evaluated with: a switch to the delta-function family carries the user's values over.
_SHARED_FIELDS = ("spatialModelType", "sizeCellX", "sizeCellY", "candidatePlacement", "usePcaForSpatialKernel",
                  "subtractMeanForPca", "numPrincipalComponents", "fitRegion", "solveRcond")


def _apply(config, trial: KernelTrial, free, constant, p_native=None, p_min=0):
    cfg = config.copy()
    cfg.autoKernel = False
    if p_min and p_native is not None:
        P = _psf_size_for(config, p_native, trial.kernelSize, p_min)
        if P is not None and P > (_psf_size_for(config, p_native, trial.kernelSize) or 0):
            # the stamp size the trials used, so that the reference is not cropped: padPsfBy gives it exactly
            cfg.doAutoPadPsf = False
            cfg.padPsfBy = P - p_native
    if trial.family == "DF" and cfg.kernel.name != "DF":
        # the trials ran on the Alard-Lupton config's cells, spatial functions and solve: what the user set
        # there holds for the delta-function fit too (a value set on kernel['DF'] itself wins)
        al, df = cfg.kernel["AL"], cfg.kernel["DF"]
        for name in _SHARED_FIELDS:
            if _user_set(al, name) and not df.isExplicit(name):
                setattr(df, name, getattr(al, name))
        cfg.kernel.name = "DF"
    a = cfg.kernel.active
    a.kernelSize = trial.kernelSize
    # the configured order when it was set (the fit lowers it, with its note, where the candidates cannot
    # constrain it): also on the delta-function config when the family switched
    a.spatialKernelOrder = trial.spatialOrder if free["spatialKernelOrder"] else config.kernel.active.spatialKernelOrder
    if trial.family == "AL":
        if trial.label != "config":
            a.alardNGauss = len(trial.sigmas)
            a.alardSigGauss = list(trial.sigmas)
            a.alardDegGauss = list(trial.degrees)
    else:
        if trial.label != "config" and free["lambda"]:
            a.lambdaType = "relative"
            a.lambdaScaling = trial.lambdaScaling
        if constant and free["usePca"]:
            a.usePcaForSpatialKernel = False  # one distinct candidate: nothing to decompose
    cfg.validate()
    return cfg


#: Widths of the broad Gaussians the wing stage adds to the Alard-Lupton basis, in units of the science PSF's
#: median determinant radius (6 and 10 px for a DECam PSF of 1.8 px), each with polynomial degree 2.
WING_WIDTHS = (3.3, 5.5)
#: The wing stage's kernel replaces the choice when it brings the aperture-flux mismatch to at most this fraction.
WING_GAIN = 0.75
#: Smallest science PSF size (determinant radius, px) the wing stage's widths scale with (below it the adaptive
#: moments are unreliable: an undersampled PSF).
_MIN_SCIENCE_SIGMA = 0.8


def _wing_stage(pick, config, survey, science_psf, reference_psf, cell_set, bbox, kc, g_ref, rcond, p_native, p_min,
                k_exposure, max_noise, tol, floor, fits_memory=None, cache_room=None) -> dict:
    """Broad Gaussians for a match whose encircled flux the chosen kernel misses (a science PSF's wing).

    The moments-built widths (``sigma_k / 2 .. 2 sigma_k``) cannot build the broad, partly negative
    kernel that removes a real PSF's wing: matched stars stayed 2-3 % off in 10-12 px apertures on
    DECam PSFEx models, while the peak-relative residual (the trials' score) hardly saw it.  The
    chosen trial's widths plus :data:`WING_WIDTHS` x the science PSF's size, on a kernel wide enough
    for them (``4 x`` the broadest, within ``autoKernelMaxSize`` and the exposure), are tried on
    stamps of their own size; the result replaces the choice when it cuts the aperture mismatch to
    :data:`WING_GAIN` of the choice's or less, passes the noise guard and keeps the residual within
    ``(1 + autoKernelTolerance)`` of the choice's (or below ``qaMaxResidual``).  When
    ``fits_memory(trial)`` is given and the fit of that kernel would exceed ``maxMemoryGiB``, the trial
    is not made; ``cache_room(trials)``: the room the spectral cache keeps while it runs.
    """
    m = np.asarray(survey.scienceMoments, dtype=float)
    ok = np.asarray(survey.ok, dtype=bool)
    if not np.any(ok):
        return {"results": [], "accepted": None, "widths": (), "kernelSize": 0,
                "note": "no wing trial: the science PSF's moments did not converge in any cell (its size is unknown)"}
    det = np.sqrt(np.sqrt(np.clip(m[:, 0] * m[:, 1] - m[:, 2] ** 2, 0, None)))
    s_sci = max(float(np.median(det[ok])), _MIN_SCIENCE_SIGMA)
    broad = tuple(round(f * s_sci, 3) for f in WING_WIDTHS)
    widths = tuple(pick.trial.sigmas) + broad
    degrees = tuple(pick.trial.degrees) + (2,) * len(broad)
    k = min(config.autoKernelMaxSize, k_exposure, max(pick.trial.kernelSize, _odd(4 * broad[-1] + 1)))
    k = k if k % 2 else k - 1
    out = {"results": [], "accepted": None, "widths": widths, "kernelSize": int(k), "note": "", "ran": False}
    P = _psf_size_for(config, p_native, k, p_min)
    if P is None:
        out["note"] = f"no wing trial: a {k} px kernel does not fit the PSF stamps under the padding rules"
        return out
    trial = KernelTrial("AL", int(k), pick.trial.spatialOrder, widths, degrees, label="wing")
    listed = ", ".join(f"{w:g}" for w in broad)
    if fits_memory is not None and not fits_memory(trial):
        # not even tried: the trial alone needs up to its fit's memory
        out["results"].append(TrialResult(trial, psfSize=P, note=_TOO_BIG_FOR_MEMORY))
        out["note"] = (f"broad Alard-Lupton widths {listed} px on a {k} px kernel not kept: the fit would exceed "
                       "maxMemoryGiB")
        return out
    out["ran"] = True
    data = _TrialData(science_psf, reference_psf, survey, cell_set, bbox, P, config.autoKernelMaxGrid,
                      survey.constant)
    with spectral_cache_room(None if cache_room is None else cache_room([trial])[1]):
        r = _evaluate(trial, data, P, kc, config.kernel["DF"], g_ref, rcond, {})
    r.admissible = bool(np.isfinite(r.score) and r.noiseRatio <= max_noise)
    out["results"].append(r)
    limit = max(pick.score * (1.0 + tol), config.qaMaxResidual, floor)
    good = r.admissible and r.apertureFluxMismatch <= WING_GAIN * pick.apertureFluxMismatch and r.score <= limit
    if good:
        out["accepted"] = r
        out["note"] = (f"broad Alard-Lupton widths {', '.join(f'{w:g}' for w in broad)} px added on a {k} px kernel: "
                       f"held-out aperture-flux mismatch {pick.apertureFluxMismatch:.2g} -> "
                       f"{r.apertureFluxMismatch:.2g} (residual {pick.score:.2g} -> {r.score:.2g})")
    else:
        why = ("noise guard" if not r.admissible else
               f"aperture mismatch {r.apertureFluxMismatch:.2g} (chosen {pick.apertureFluxMismatch:.2g})"
               if r.apertureFluxMismatch > WING_GAIN * pick.apertureFluxMismatch else
               f"residual {r.score:.2g} above {limit:.2g}")
        out["note"] = f"broad Alard-Lupton widths {listed} px on a {k} px kernel not kept: {why}"
    return out


def choose_kernel(config, survey: PsfSurvey, science_psf, reference_psf, cell_set, bbox,
                  truncation=1e-3, fit_memory=None) -> AutoKernelChoice:
    """Choose the kernel size, basis and spatial order for a match (see the module docstring).

    Parameters
    ----------
    config : ModelPsfMatchConfig
        The task's config (its ``autoKernel*`` fields steer the search).
    survey : PsfSurvey
        Both PSFs at the cell centres (:func:`psfmatch.diagnostics.survey_psfs`).
    science_psf, reference_psf : Psf
    cell_set : SpatialCellSet
        The task's cells over ``bbox``.
    bbox : Box2I
    truncation : float
        The task's ``TRUNCATION_THRESHOLD``: unless the padding was configured
        (``doAutoPadPsf = False`` or ``autoPadPsfTo`` set), the PSF stamps are
        at least as large as the reference's own stamp needs to keep its edge
        below this fraction of its peak
        (``untruncated_size``), so that a smaller
        kernel does not crop the reference's wings.
    fit_memory : callable, optional
        ``fit_memory(config, psf_size)``: the bytes the fit with ``config`` on
        stamps of ``psf_size`` needs (the task's
        :func:`~psfmatch.task.estimate_fit_memory`).  A trial whose fit would
        exceed ``config.maxMemoryGiB`` is skipped, with a note in its record,
        so the choice never raises :class:`~psfmatch.errors.MemoryLimitError`
        in the fit where a smaller kernel fits; the wing stage's larger kernel
        is tried only then too.  The trials are counted at their fits' estimates
        (a trial alone, with the stamps the trials share, measured 0.6 to 1.0 of
        it): only as many run at once as fit ``maxMemoryGiB``, and the spectral
        products cached for the next fits keep to what they leave
        (:func:`~psfmatch.solve.spectral_cache_room`).

    Returns
    -------
    AutoKernelChoice
    """
    t0 = time.perf_counter()
    kc = config.kernel.active
    free = _free_fields(config)
    constant = survey.constant
    s_med, s_big, g_ref = _kernel_widths(survey)
    keep = None
    if not math.isfinite(s_big):
        keep = ("the kernel's width could not be measured at any position (the adaptive moments of the PSFs failed: "
                "narrower than about 0.8 px sigma along an axis, or without a clear core): the configured kernel is "
                "used")
    elif free["families"] == ("DF",) and not constant:
        # a spatial delta-function model has (k^2 - 1) x n_s unknowns: trials would cost far more than the fit
        keep = ("kernel.name = 'DF' on a spatially varying field: the configured delta-function kernel is used "
                "(delta-function trials are made only for matches that are the same over the field)")
    elif config.kernel.name == "AL" and kc.scaleByFwhm:
        keep = ("scaleByFwhm = True: LSST's FWHM rule chooses the Alard-Lupton widths and kernel size in the fit; "
                "the automatic mode leaves them alone")
    if keep is not None:
        note = keep
        log.info("autoKernel: %s", note)
        trial = _config_trial(config, kc.spatialKernelOrder) or KernelTrial(
            "AL", kc.kernelSize, kc.spatialKernelOrder, label="config")
        res = TrialResult(trial, note=note)
        cfg = config.copy()
        cfg.autoKernel = False
        md = {"chosen": res.to_dict(), "note": note, "trials": [],
              "kernelSigma": s_med if math.isfinite(s_med) else None,
              "kernelSigmaMajorWorst": s_big if math.isfinite(s_big) else None, "constantMatch": bool(constant),
              "free": {k: (list(v) if isinstance(v, tuple) else v) for k, v in free.items()},
              "time": time.perf_counter() - t0}
        return AutoKernelChoice(trial, res, cfg, [], md)
    p_native = survey.scienceSize
    p_min = 0
    if config.doAutoPadPsf and not _user_set(config, "autoPadPsfTo"):
        try:
            own = reference_psf.computeKernelImage(bbox.getCenter())
            # the stamps hold the reference's edge below `truncation` of its peak and its flux to within
            # `truncation` (the task's two tests of a truncated reference)
            p_min = max(untruncated_size(own, truncation), size_holding(own, truncation))
        except PsfEvaluationError:
            p_min = 0
    rcond = kc.solveRcond
    tol, floor = config.autoKernelTolerance, config.autoKernelResidualFloor
    max_noise = config.autoKernelMaxNoiseGain

    # kernel sizes: the ladder, limited by the exposure (the output border) and the padding rules
    w, h = bbox.getWidth(), bbox.getHeight()
    # one odd size below the largest the task accepts (2 * (k // 2) < min(w, h)): 17 px on a 20 px exposure
    k_exposure = 2 * ((min(w, h) - 1) // 2) - 1
    # up to the science stamp or the configured size, and one step (x 1.4) past the 6 sigma the kernel's
    # width needs (a broad reference: sigma_k 4.7 px needs 31 px; capped at 21 it left a 2% residual)
    k_needed = _odd(2 * math.ceil(3 * s_big) + 1)
    k_top = max(p_native, kc.kernelSize, _odd(1.4 * k_needed))
    k_cap = max(3, min(config.autoKernelMaxSize, k_top, k_exposure))
    if free["kernelSize"]:
        sizes = [k for k in kernel_size_ladder(s_big, k_cap) if _psf_size_for(config, p_native, k, p_min)]
    else:
        sizes = [kc.kernelSize]
    if not sizes:
        sizes = [kc.kernelSize]

    # families and widths
    sig422 = alard_lupton_widths(s_med, rich=False)
    sig642 = alard_lupton_widths(s_med, rich=True)
    cfg_order = kc.spatialKernelOrder
    if free["spatialKernelOrder"]:  # a default order above the highest one allowed starts there
        cfg_order = min(cfg_order, config.autoKernelMaxSpatialOrder)
    max_order = max(cfg_order, config.autoKernelMaxSpatialOrder)

    # delta-function trials: only where affordable (one distinct candidate over the field)
    df_ok = "DF" in free["families"] and constant
    lambdas = _df_regularizations(config.kernel["DF"], free["lambda"])
    df_sizes = [k for k in sizes if k <= config.autoKernelMaxDFSize] if df_ok else []
    k_df = config.autoKernelMaxDFSize if config.autoKernelMaxDFSize % 2 else config.autoKernelMaxDFSize - 1
    if (df_ok and free["kernelSize"] and any(k > k_df for k in sizes) and k_df not in df_sizes
            and (not df_sizes or k_df - max(df_sizes) >= 4) and _psf_size_for(config, p_native, k_df, p_min)):
        df_sizes.append(k_df)

    psf_sizes = {k: _psf_size_for(config, p_native, k, p_min) for k in set(sizes) | set(df_sizes) | {kc.kernelSize}}
    p_max = max(P for P in psf_sizes.values() if P is not None) if any(psf_sizes.values()) else p_native
    data = _TrialData(science_psf, reference_psf, survey, cell_set, bbox, p_max, config.autoKernelMaxGrid, constant)
    n_fit = len(data.S_fit)

    results = []
    cache = {}
    notes = []

    limit = config.maxMemoryGiB * 2 ** 30 if fit_memory is not None else math.inf

    def need(trial):
        """The bytes the fit of ``trial`` needs (the task's estimate; 0 without one).

        The config :func:`_apply` gives carries the padding (``padPsfBy``) that makes the trial's stamps: the
        estimate takes the native size.
        """
        return 0 if fit_memory is None else fit_memory(_apply(config, trial, free, constant, p_native, p_min),
                                                        p_native)

    def fits(trial):
        """Whether the fit of ``trial`` stays within ``maxMemoryGiB`` (True without an estimate)."""
        return fit_memory is None or need(trial) <= limit

    # the fit's memory grows with the kernel size and the number of basis kernels (estimate_fit_memory): when the
    # largest kernel of each family, with the most basis kernels tried, fits, so does every trial, and none needs
    # an estimate of its own (about 0.4 ms each: 2 ms of the demo's 30 ms choice)
    ks = [k for k, P in psf_sizes.items() if P is not None]
    bases = [sig422, sig642]
    if config.kernel.name == "AL":
        bases.append((tuple(kc.alardSigGauss), tuple(kc.alardDegGauss)))
    sig, deg = max(bases, key=lambda b: KernelTrial("AL", 1, 0, *b).nBasis)
    largest = []
    if ks and "AL" in free["families"]:
        largest.append(KernelTrial("AL", max(ks), cfg_order, sig, deg, label="moments"))
    if ks and (df_sizes or config.kernel.name == "DF"):
        largest.append(KernelTrial("DF", max(ks), cfg_order, label="df", **lambdas[0]))
    largest_need = max((need(t) for t in largest), default=0)
    all_fit = largest_need <= limit

    def budget(trials):
        """``(threads, cache room)`` for ``trials`` run together within ``maxMemoryGiB`` (``None``: no limit).

        Each trial is counted at the largest estimate of a fit among them that fits (those that do not are
        skipped without allocating): as many run at once as fit the limit, the cores permitting, and the
        spectral cache keeps to what they leave.  With a limit that holds the cores' worth, nothing changes.
        """
        if not math.isfinite(limit):
            return None, None
        each = largest_need if all_fit else max((n for n in map(need, trials) if n <= limit), default=0)
        cores = min(available_cores(), max(len(trials), 1))
        n = cores if each <= 0 else max(1, min(cores, int(limit // each)))
        return (None if n == cores else n), limit - n * each

    def evaluate(trial):
        P = psf_sizes.get(trial.kernelSize) or _psf_size_for(config, p_native, trial.kernelSize, p_min)
        if P is None:
            return TrialResult(trial, note="kernel too big for the PSF stamps under the padding rules")
        if not (all_fit or fits(trial)):
            # a trial alone needs up to about 0.8 x its fit's memory (tracemalloc): a kernel whose fit would raise
            # MemoryLimitError is neither tried nor chosen
            return TrialResult(trial, psfSize=P, note=_TOO_BIG_FOR_MEMORY)
        return _evaluate(trial, data, P, kc, config.kernel["DF"], g_ref, rcond, cache)

    def record(r):
        results.append(r)
        log.debug("autoKernel trial %s: score %.3g, noise ratio %.3g (%.2f s)", r.trial.describe(), r.score,
                  r.noiseRatio, r.time)
        return r

    def run(trial):
        with spectral_cache_room(budget([trial])[1]):
            return record(evaluate(trial))

    def run_all(trials):
        """Independent trials on the cores together (``map_shared``), recorded in order.

        Each trial's arithmetic is the same as alone (one-thread BLAS, its own arrays), so the
        scores are bit for bit the same; the fit subset's and held-out stamps of each size are made
        here first, so that the threads share them instead of racing to make them.
        """
        trials = [t for t in trials if t is not None]
        for P in {psf_sizes.get(t.kernelSize) for t in trials} - {None}:
            data.at_size(P)
        threads, room = budget(trials)
        with spectral_cache_room(room):
            return [record(r) for r in map_shared(evaluate, trials, threads)]

    def al_trial(k, order, rich=False):
        if free["alWidths"]:
            sig, deg = sig642 if rich else sig422
            return KernelTrial("AL", k, order, sig, deg, label="moments")
        return KernelTrial("AL", k, order, tuple(float(s) for s in kc.alardSigGauss),
                           tuple(int(d) for d in kc.alardDegGauss), label="config-widths")

    # stage 1: the spatial order (a generous kernel; only for fields that vary), up to the highest order
    # the trials' candidates constrain (as the fit lowers an order its candidates cannot constrain)
    if not constant:
        cap = _constrained_order(data.xy_fit, kc.spatialModelType, max_order, bbox)
        lo, hi = min(cfg_order, cap), min(max_order, cap)
        if cap < cfg_order:
            xy_all = np.array([(p.x, p.y) for p in cell_set.cell_centers()])
            if not free["spatialKernelOrder"]:
                pass  # the fit lowers the configured order itself, with its note
            elif _constrained_order(xy_all, kc.spatialModelType, cfg_order, bbox) < cfg_order:
                notes.append(f"spatialKernelOrder {cfg_order} lowered to {cap}: the {cell_set.nx}x{cell_set.ny} grid "
                             f"of cells cannot constrain a higher order (use {cell_set.smaller_cells_remedy(cfg_order)}, "
                             "or set the order you want)")
                log.warning("autoKernel: %s", notes[-1])
            else:  # only the trials' sub-grid is too coarse; the fit itself keeps what it was given
                log.info("autoKernel: trials scored at spatial order %d at most (their sub-grid of at most %d cells "
                         "per axis: autoKernelMaxGrid)", cap, config.autoKernelMaxGrid)
    if constant:
        order = 0 if free["spatialKernelOrder"] else cfg_order
        stage1 = None
    elif free["spatialKernelOrder"] and "AL" in free["families"] and hi > lo:
        # the largest size whose fit stays within maxMemoryGiB (the memory does not depend on the order)
        k1 = max((k for k in sizes if all_fit or fits(al_trial(k, lo))), default=max(sizes))
        orders = list(range(lo, hi + 1))
        stage1 = run_all([al_trial(k1, o) for o in orders])
        _mark_admissible(stage1, max_noise)
        _mark_negative(stage1)
        pick = _select(stage1, tol, floor)
        order = pick.trial.spatialOrder if pick is not None else lo
    else:
        order = lo
        stage1 = None

    # stage 2: kernel size and basis at that order
    n1 = len(results)
    ct = _config_trial(config, order)
    if ct is not None and free["kernelSize"] and ct.kernelSize > k_exposure:
        ct = None  # the configured size does not fit the exposure (its output would be all border)
    if not constant:
        # the configuration's trial and the standard basis at every size: independent of each other
        std = [al_trial(k, order) for k in sorted(sizes)] if "AL" in free["families"] else []
        run_all([ct] + [t for t in std if not any(_same(r.trial, t) for r in results)
                        and not (ct is not None and _same(ct, t))])
    elif ct is not None:
        run(ct)
    for k in sorted(set(sizes) | set(df_sizes)):
        if "AL" in free["families"] and k in sizes:
            if not any(_same(r.trial, al_trial(k, order)) for r in results):
                run(al_trial(k, order))
            if constant and free["alWidths"]:
                run(al_trial(k, order, rich=True))
        if k in df_sizes:
            lams = lambdas
            if k > DF_SWEEP_MAX_SIZE and len(lambdas) > 1:
                # large delta-function kernels cost an O(k^6) solve each: only the weakest regularization that
                # passed the noise guard at the largest size swept
                done = [r for r in results if r.trial.family == "DF" and np.isfinite(r.score)
                        and r.trial.kernelSize <= DF_SWEEP_MAX_SIZE]
                if done:
                    k_last = max(r.trial.kernelSize for r in done)
                    ok = [r.trial.lambdaScaling for r in done
                          if r.trial.kernelSize == k_last and r.noiseRatio <= max_noise]
                    lams = [{"lambdaScaling": min(ok) if ok else max(DF_LAMBDAS)}]
                else:
                    lams = [{"lambdaScaling": max(DF_LAMBDAS)}]
            settled = _floor_reached(results, k, order, max_noise, floor, tol)
            for lam in lams:
                t = KernelTrial("DF", k, order, label="df", **lam)
                if any(_same(r.trial, t) for r in results):
                    continue
                if settled is not None:  # it could not change the choice (see _floor_reached): not made
                    record(TrialResult(t, note=(
                        f"skipped: the Alard-Lupton trial of {settled.trial.kernelSize} px already reaches "
                        f"autoKernelResidualFloor ({settled.score:.2g} <= {floor:g})")))
                    continue
                run(t)
    if not constant and free["alWidths"] and "AL" in free["families"]:
        # the richer basis costs about 1.5x the fit time on large fields: try it only where the standard one
        # leaves a residual that matters
        std = [r.score for r in results if r.trial.family == "AL" and r.trial.label == "moments"
               and r.trial.spatialOrder == order and np.isfinite(r.score)]
        if std and min(std) > RICH_BASIS_FACTOR * floor:
            run_all([al_trial(k, order, rich=True) for k in sizes])
    stage2 = results[n1:]
    if stage1 is not None:
        # the stage-1 trial at the chosen order competes too
        stage2 = stage2 + [r for r in stage1 if r.trial.spatialOrder == order and r not in stage2]
    guarded = _mark_admissible(stage2, max_noise)
    _mark_negative(stage2)
    pick = _select(stage2, tol, floor)
    if pick is None:
        # every trial failed: keep the configuration as it is
        trial = ct or _config_trial(config, cfg_order) or al_trial(kc.kernelSize, cfg_order)
        pick = TrialResult(trial, note="every trial failed; the configured kernel is used")
        log.info("autoKernel: every trial failed; using the configured kernel")
    wing = None
    if (pick.trial.family == "AL" and free["alWidths"] and free["kernelSize"] and np.isfinite(pick.score)
            and pick.apertureFluxMismatch > config.qaMaxApertureFluxMismatch):
        wing = _wing_stage(pick, config, survey, science_psf, reference_psf, cell_set, bbox, kc, g_ref, rcond,
                           p_native, p_min, k_exposure, max_noise, tol, floor, fits, budget)
        results.extend(wing["results"])
        if wing["accepted"] is not None:
            pick = wing["accepted"]
            notes.append(wing["note"])
            log.info("autoKernel: %s", wing["note"])
    chosen = pick.trial
    cfg = _apply(config, chosen, free, constant, p_native, p_min)

    md = {
        "chosen": pick.to_dict(),
        "rule": ("held-out residual max|S*K-R|/max(R); the simplest admissible trial within "
                 f"(1 + {tol:g}) x the best or below {floor:g}; admissible: noise gain <= {max_noise:g} x a "
                 "Gaussian kernel of covariance C_ref - C_sci; a markedly negative trial (negative fraction "
                 f"sum|min(K,0)|/sum|K| more than {NEGATIVE_MARGIN:g} above the least negative admissible trial's and "
                 f"{NEGATIVE_RATIO:g} times it or more) "
                 f"competes only where it lowers the residual by more than a factor {NEGATIVE_GAIN:g} below every "
                 "other admissible trial"),
        "kernelSigma": s_med, "kernelSigmaMajorWorst": s_big, "gaussianNoiseGain": g_ref,
        "constantMatch": bool(constant), "nFitCandidates": int(n_fit), "nHeldOut": int(len(data.xy_ho)),
        "free": {k: (list(v) if isinstance(v, tuple) else v) for k, v in free.items()},
        "sizes": [int(k) for k in sizes], "spatialOrder": int(order), "minPsfSize": int(p_min),
        "noiseGuardApplied": bool(guarded),
        "trials": [r.to_dict() for r in results],
        "notes": notes,
        "time": time.perf_counter() - t0,
    }
    if stage1 is not None:
        md["orderTrials"] = [r.to_dict() for r in stage1]
    if wing is not None:
        md["wingTrials"] = {"widths": list(wing["widths"]), "kernelSize": wing["kernelSize"],
                            "ran": wing.get("ran", False),
                            "accepted": wing["accepted"] is not None, "note": wing["note"]}
    log.info("autoKernel: chose %s (held-out residual %.3g; %d trials in %.2f s)", chosen.describe(), pick.score,
             len(results), md["time"])
    return AutoKernelChoice(chosen, pick, cfg, results, md)

