"""``ModelPsfMatchTask``: match an exposure's PSF to a model PSF.

The task realizes the exposure's (science) PSF and the reference PSF at each
spatial cell's candidate position (a grid from edge to edge of the exposure by
default, the cell centres with ``candidatePlacement = "centers"``), fits a matching kernel per candidate, fits a
spatial model of the kernel coefficients over all candidates, and convolves
the exposure (image, variance, mask) with the spatially varying kernel so that
its PSF becomes the reference.  The ``psfmatch`` documentation (user guide,
"Differences from LSST") says where this differs from LSST.

Examples
--------
>>> import numpy as np
>>> from psfmatch import Exposure, ModelPsfMatchTask, ModelPsfMatchConfig
>>> from psfmatch.psf import GaussianPsf
>>> exposure = Exposure(np.zeros((256, 256), dtype=np.float32), psf=GaussianPsf(21, 21, 1.8))
>>> config = ModelPsfMatchConfig()
>>> config.kernel.active.spatialKernelOrder = 0
>>> result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6))
>>> round(result.psfMatchingKernel.getSum((100, 100)), 7)
1.0
>>> result.psfMatchedExposure.getPsf().computeKernelImage((0, 0)).shape
(31, 31)
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from concurrent import futures
from dataclasses import dataclass, field

import numpy as np

from .calib import kernel_sum_for_zero_point, rescale_calibration, set_zero_point
from .cells import CandidateStatus, KernelCandidate, SpatialCellSet
from .config import ModelPsfMatchConfig
from .convolve import MIN_TILE, convolve_masked_image, estimate_memory, memory_limit_error
from .errors import (InvalidConfigError, InvalidInputError, KernelQualityWarning, KernelTooBigError, MemoryLimitError,
                     MissingPsfError, NoKernelCandidatesError, PsfComputeShapeError, PsfEvaluationError,
                     PsfMatchWarning, TruncatedPsfWarning)
from .geom import Box2D, Box2I, Point2D, _finite_real, _is_real
from .image import Exposure, metadata_copy
from .kernel.basis import KernelBasis, make_regularization_matrix, makeKernelBasisList
from .kernel.kernel import LinearCombinationKernel, as_real
from .kernel.spatial import SpatialFunction, axis_degree_caps, full_column_rank
from .parallel import available_cores, shared_pool
from .psf.base import (as_psf, compute_kernel_image_pairs, compute_kernel_images, kernel_image_pair_stacks,
                       model_domain, pad_or_crop, pad_or_crop_stack, unique_stamps)
from .qa import match_quality_groups, summarize
from .solve import (PCA_TOLERANCE, GramBuilder, NormalEquations, constrained_basis, lambda_for, pca_basis,
                    reduce_constrained, solve_candidates, solve_spatial, transform_equations, trim_spectral_cache)

__all__ = ["ModelPsfMatchTask", "PsfMatchResult", "KernelFit", "nextOddInteger"]

log = logging.getLogger(__name__)


def nextOddInteger(x) -> int:
    """The smallest odd integer >= ``x`` (LSST's rule: ``ceil(x)``, plus 1 if even)."""
    n = int(math.ceil(x))
    return n + 1 if n % 2 == 0 else n


@dataclass
class KernelFit:
    """The fitted kernel and what produced it (the result of :meth:`ModelPsfMatchTask.fitKernel`)."""

    kernel: LinearCombinationKernel
    cellSet: SpatialCellSet
    metadata: dict
    referencePsf: object
    psfSize: int


@dataclass
class PsfMatchResult:
    """What :meth:`ModelPsfMatchTask.run` returns (LSST's ``pipe.base.Struct`` fields).

    Attributes
    ----------
    psfMatchedExposure : Exposure
        A new exposure; its PSF is the reference resized to the padded science stamp size.
    psfMatchingKernel : LinearCombinationKernel
        The spatially varying kernel; its image sums to ``kernelSum`` everywhere.
    kernelCellSet : SpatialCellSet
        The cells with their :class:`~psfmatch.cells.KernelCandidate` (status, solution, QA).
    metadata : dict
        JSON-serializable QA and basis description.
    """

    psfMatchedExposure: Exposure
    psfMatchingKernel: LinearCombinationKernel
    kernelCellSet: SpatialCellSet
    metadata: dict = field(default_factory=dict)

    def getDict(self) -> dict:
        return {"psfMatchedExposure": self.psfMatchedExposure, "psfMatchingKernel": self.psfMatchingKernel,
                "kernelCellSet": self.kernelCellSet, "metadata": self.metadata}


def _json_float(v):
    v = float(v)
    return v if math.isfinite(v) else (None if math.isnan(v) else (1e308 if v > 0 else -1e308))


class ModelPsfMatchTask:
    """Match the PSF of an exposure to a model PSF with a spatially varying kernel.

    Parameters
    ----------
    config : ModelPsfMatchConfig, optional
        Validated and copied (then frozen); the caller's object is not modified.

    Notes
    -----
    Roles follow the seed: the exposure's PSF (the *science* PSF) is
    convolved; the *reference* PSF is the target.  The kernel is applied as a
    convolution, ``matched = science (*) kernel``.
    """

    ConfigClass = ModelPsfMatchConfig
    _DefaultName = "psfMatch"

    def __reduce__(self):
        """Pickled as its configuration and name: the copy goes through the ``config`` setter again (its
        configuration frozen, and the one it runs: ``kConfig`` is ``config.kernel.active``)."""
        return (type(self), (self._config, self.name))

    def __init__(self, config=None, name=None):
        self.name = name or self._DefaultName
        self.config = ModelPsfMatchConfig() if config is None else config

    @property
    def config(self) -> ModelPsfMatchConfig:
        """The task's configuration: a validated, frozen copy of the one given.

        Assigning another (``task.config = other``) applies it whole, as the
        constructor does: it is copied, validated and frozen, and what the task
        derives from it (``kConfig``, the delta-function regularization matrix
        ``hMat``) is rebuilt.  Editing the task's own config raises
        :class:`~psfmatch.errors.InvalidConfigError` (it is frozen).
        """
        return self._config

    @config.setter
    def config(self, config):
        if not isinstance(config, ModelPsfMatchConfig):
            raise InvalidConfigError(f"config must be a ModelPsfMatchConfig; got {type(config).__name__}")
        config = config.copy()
        config.validate()
        config.freeze()
        state = ("_config", "kConfig", "useRegularization", "hMat", "_smallest_kernel")
        saved = {k: self.__dict__[k] for k in state if k in self.__dict__}
        self._config = config
        self.kConfig = config.kernel.active
        self.useRegularization = bool(getattr(self.kConfig, "useRegularization", False))
        self.hMat = None
        self._smallest_kernel = _smallest_free_kernel(config)
        try:
            # the basis (and a delta-function basis's k^2 x k^2 penalty) alone; of the smallest kernel the
            # automatic choice may make when it chooses the size
            self._check_fit_memory(1, 1, kernel_size=self._smallest_kernel)
        except MemoryLimitError:
            for k in state:  # the task keeps the config it had
                self.__dict__.pop(k, None)
            self.__dict__.update(saved)
            raise
        if self.useRegularization:
            self.hMat = make_regularization_matrix(
                self.kConfig.kernelSize, self.kConfig.regularizationType, self.kConfig.centralRegularizationStencil,
                self.kConfig.forwardRegularizationOrders, self.kConfig.regularizationBorderPenalty)

    # ------------------------------------------------------------------
    def _check_fit_memory(self, n_candidates, psf_size, n_unique=None, kernel_size=None, varying_reference=False):
        """Raise :class:`MemoryLimitError` before allocating when the fit would exceed ``config.maxMemoryGiB``.

        See :func:`estimate_fit_memory`; called before the basis is built (``__init__``), before the
        PSFs are realized at every cell (from one stamp) and once the padded stamp size is known.
        ``kernel_size``: the size to check instead of the configured one (the smallest the
        automatic kernel may choose, before it has chosen).  When the fit fits, the spectral
        products kept from earlier fits (``psfmatch.solve._SPECTRAL_CACHE``, which the estimate does
        not count) are trimmed to the memory the estimate leaves under the limit.
        """
        need, parts = estimate_fit_memory(self.config, n_candidates, psf_size, n_unique, kernel_size,
                                          varying_reference=varying_reference)
        limit = self.config.maxMemoryGiB * 2 ** 30
        if need <= limit and math.isfinite(limit):
            trim_spectral_cache(limit - need)
        if need > limit:
            detail = ", ".join(f"{name} {v / 2 ** 30:.3g} GiB" for name, v in parts.items() if v)
            if (n_candidates, psf_size) == (1, 1):  # the check of the configuration alone (the constructor's)
                what, remedy = "the kernel basis alone, before any PSF is realized", "a smaller kernelSize"
                if kernel_size is not None:
                    what += f", with the smallest kernel the automatic choice may make, {kernel_size}x{kernel_size}"
                    remedy = ""
            elif kernel_size is not None:  # the smallest kernel the automatic choice may make: no smaller one helps
                what = (f"{n_candidates} candidate(s), {psf_size}x{psf_size}-pixel PSF stamps before padding, with "
                        f"the smallest kernel the automatic choice may make, {kernel_size}x{kernel_size}")
                remedy = "larger cells (sizeCellX/sizeCellY) or smaller PSF stamps"
            else:
                what = f"{n_candidates} candidate(s), {psf_size}x{psf_size}-pixel PSF stamps before padding"
                remedy = "a smaller kernelSize, larger cells (sizeCellX/sizeCellY) or smaller PSF stamps"
            raise MemoryLimitError(
                f"fitting the kernel needs about {need / 2 ** 30:.3g} GiB ({detail}; {what}), more than "
                f"config.maxMemoryGiB = {self.config.maxMemoryGiB:g} GiB. Raise maxMemoryGiB"
                + (f", or use {remedy}" if remedy else ""))

    def _check_plane_memory(self, exposure):
        """Raise :class:`MemoryLimitError` before the fit when even the least memory the convolution could need
        exceeds ``config.maxMemoryGiB``: the smallest kernel the fit may make, a constant one, the smallest
        ``convolveTileSize``, one thread (:func:`~psfmatch.convolve.estimate_memory`); its full-size planes
        (:func:`~psfmatch.convolve.plane_memory`) alone may do so."""
        limit = self.config.maxMemoryGiB * 2 ** 30
        if not math.isfinite(limit):
            return
        shape = exposure.image.shape
        isz = 4 if exposure.image.dtype == np.float32 and exposure.variance.dtype == np.float32 else 8
        k = self._smallest_kernel or self.kConfig.kernelSize
        least = estimate_memory(shape, k, 1, 1, MIN_TILE, isz, 1)
        if least > limit:
            raise memory_limit_error(shape, least, limit, isz, k)

    # ------------------------------------------------------------------
    def run(self, exposure, referencePsfModel, kernelSum=1.0, *, zeroPoint=None) -> PsfMatchResult:
        """PSF-match ``exposure`` to ``referencePsfModel``.

        Parameters
        ----------
        exposure : Exposure
            The exposure to convolve; it must carry a PSF.  Not modified.
        referencePsfModel : PSF model
            The target PSF (any object with ``computeKernelImage(position)``).
        kernelSum : float
            Overall scale of the kernel: the returned kernel sums to ``kernelSum``
            everywhere, the matched image's flux is ``kernelSum`` times the input's and
            its variance ``kernelSum**2`` times (unlike LSST, where it only reshapes
            the kernel; see the docs).  The photometric calibration the output
            inherits is rescaled to match (``photoCalib``'s ``calibrationMean``,
            the zero-point cards of ``metadata["fitsHeader"]``: see
            :mod:`psfmatch.calib`; what was changed is listed in
            ``metadata["calibrationRescaled"]``); one it cannot interpret is left
            as it was, with a :class:`PsfMatchWarning`.
        zeroPoint : float, optional
            Put the matched exposure on this photometric zero point (magnitudes)
            instead of giving ``kernelSum``: the exposure's own zero point ``Z``
            is read from its metadata (``MAGZERO``, ``FLUXMAG0``, ``photoCalib``...;
            ``MAGZPT`` and ``PHOTFNU``, zero points of a count rate, only for pixel
            values per second: :func:`psfmatch.calib.zero_point`) and ``kernelSum`` is
            ``10**(0.4 * (zeroPoint - Z))``.  Every card of the output that states a
            zero point then states ``zeroPoint`` exactly
            (:func:`psfmatch.calib.set_zero_point`); ``metadata["zeroPoint"]`` records
            the target, ``Z`` and where it was read.  Not an LSST argument.

        Returns
        -------
        PsfMatchResult

        Raises
        ------
        MissingPsfError
            ``exposure does not contain a Psf model``.
        KernelTooBigError
            The kernel does not fit the (padded) PSF stamps.
        NoKernelCandidatesError
            No candidate could be used.  A candidate whose PSFs cannot be
            evaluated (the model raises or returns a bad stamp) or whose solution
            is not finite is rejected and recorded (``metadata["rejectedCandidates"]``,
            the cell's candidate status); when too few remain to constrain
            ``spatialKernelOrder``, the terms they cannot determine are held at
            0 (candidates on ``n`` distinct rows determine degree ``n - 1``
            along y, and likewise along x) and, where that is not enough, the
            order is lowered, down to 0 (a constant kernel, which one candidate
            constrains), with a note in ``metadata["notes"]``.  The error is
            raised only when none remains; its message says how many failed,
            where the first did and why.
        InvalidInputError
            Bad exposure, variance or ``kernelSum``; with ``zeroPoint``, a
            ``kernelSum`` other than 1, or an exposure whose zero point cannot be
            read (none, not a number, or cards that disagree).
        MemoryLimitError
            The fit or the convolution would need more than ``config.maxMemoryGiB``
            (checked before the memory is allocated; see :func:`estimate_fit_memory` and
            :func:`~psfmatch.convolve.estimate_memory`; the convolution's full-size planes
            before the fit).

        Warns
        -----
        PsfMatchWarning
            When the science or reference PSF is an image whose recorded pixel
            scale differs from the exposure WCS's by more than 1 %
            (``PIXEL_SCALE_TOLERANCE``): resample it with
            ``read_image_psf(..., target_pixel_scale=exposure)``; or when the
            exposure reaches beyond the region the science PSF model was fitted
            on (``getBBox()``: a PSFEx model's ``POLZERO +- POLSCAL / 2``) by more
            than 10 % of its size on some side (``PSF_DOMAIN_TOLERANCE``): a model
            of another CCD, a transposed exposure or another origin.
        IllPosedMatchWarning, KernelQualityWarning, TruncatedPsfWarning
            As :meth:`fitKernel`.
        """
        t0 = time.perf_counter()
        exposure = self._check_exposure(exposure)
        _warn_pixel_scales(exposure, referencePsfModel)
        _warn_psf_domain(exposure)
        metadata = metadata_copy(exposure.metadata)  # before any work: a value that cannot be copied fails now
        _drop_earlier_match(metadata)
        zero_point = None
        if zeroPoint is not None:
            kernelSum, zero_point = self._zero_point_kernel_sum(metadata, kernelSum, zeroPoint)
        self._check_plane_memory(exposure)
        log.info("compute Psf-matching kernel")
        fit = self.fitKernel(exposure.getPsf(), referencePsfModel, exposure.getBBox(), kernelSum=kernelSum,
                             _warn_skip=1)  # the fit's warnings point to the line that called run()
        t1 = time.perf_counter()
        self._rescale_calibration(metadata, fit.metadata)
        if zero_point is not None:
            zero_point["snapped"] = set_zero_point(metadata, zero_point["target"])
            fit.metadata["zeroPoint"] = zero_point
        # the fit's kernel may be larger than the configured one (scaleByFwhm's rule)
        self._check_kernel_fits(exposure, fit.kernel.getWidth(),
                                f", the size the fit chose (ALKernelSize {fit.metadata.get('ALKernelSize')})"
                                if fit.kernel.getWidth() != self.kConfig.kernelSize else "")
        t_display = time.perf_counter()
        self._debugDisplays(exposure, fit)
        t_display = time.perf_counter() - t_display
        t1 += t_display  # (the convolution's time without the displays drawn before it)
        log.info("Psf-match science exposure to reference")
        try:
            mi = convolve_masked_image(exposure, fit.kernel, mask_threshold=self.config.maskDilationThreshold,
                                       footprint_planes=tuple(self.config.maskDilationPlanes),
                                       tile=self.config.convolveTileSize,
                                       max_memory_bytes=(int(self.config.maxMemoryGiB * 2 ** 30)
                                                         if math.isfinite(self.config.maxMemoryGiB) else None))
        except InvalidInputError as exc:
            if zero_point is None or not getattr(exc, "kernel_sum_remedy", False):
                raise
            # the remedies name the kernelSum, which the caller did not give: say where it came from
            raise InvalidInputError(
                f"{exc} (here zeroPoint={zero_point['target']:g} set kernelSum = {kernelSum:.6g} from the exposure's "
                f"zero point {zero_point['input']:.4f} ({zero_point['source']}): choose a target zero point nearer "
                "to it)") from exc
        # the output's WCS is its own (a caller editing it must not move the input's)
        out = Exposure.from_masked_image(mi, copy=False, psf=fit.referencePsf, wcs=copy.deepcopy(exposure.getWcs()),
                                         metadata=metadata)
        t2 = time.perf_counter()
        md = fit.metadata
        md["convolveTime"] = t2 - t1
        if t_display > 1e-3:
            md["debugDisplayTime"] = t_display
        md["runTime"] = t2 - t0
        log.info("done")
        return PsfMatchResult(out, fit.kernel, fit.cellSet, md)

    @staticmethod
    def _zero_point_kernel_sum(metadata, kernelSum, zeroPoint):
        """``(kernelSum, record)`` for ``run(..., zeroPoint=...)``: the scale that puts the exposure whose
        metadata is ``metadata`` on ``zeroPoint`` (:func:`~psfmatch.calib.kernel_sum_for_zero_point`)."""
        checked_zero_point(zeroPoint, kernelSum)
        ks, zp, source = kernel_sum_for_zero_point(metadata, zeroPoint, "the exposure")
        log.info("zero point %.4f (%s) to %.4f: kernelSum %.6g", zp, source, float(zeroPoint), ks)
        return ks, {"target": float(zeroPoint), "input": zp, "source": source, "kernelSum": ks}

    @staticmethod
    def _rescale_calibration(metadata, md):
        """Rescale the calibration the matched exposure inherits by ``kernelSum`` (see :mod:`psfmatch.calib`).

        What was rescaled goes to ``md["calibrationRescaled"]`` and the log; a
        calibration that could not be is named in a :class:`PsfMatchWarning`
        (it still describes the input's pixel values).
        """
        ks = md["kernelSum"]
        changed, left = rescale_calibration(metadata, ks)
        if changed:
            md["calibrationRescaled"] = changed
            log.info("kernelSum %.6g scales the matched pixel values; calibration rescaled: %s", ks, "; ".join(changed))
        if left:
            msg = (f"kernelSum={ks:.6g} makes the matched pixel values {ks:.6g} times the input's, but "
                   f"{'; '.join(left)} could not be rescaled and still describes the input's pixel values: "
                   f"divide a flux per count by {ks:.6g} (or add 2.5*log10({ks:.6g}) = {2.5 * math.log10(ks):.4f} "
                   "to a magnitude zero point) in the matched exposure's metadata")
            log.warning(msg)
            warnings.warn(msg, PsfMatchWarning, stacklevel=3)

    # ------------------------------------------------------------------
    def _debugDisplays(self, exposure, fit):
        """Show the debug displays switched on in ``debug.py`` (see :mod:`psfmatch.debug`).

        Switches are looked up now, through ``psfmatch.debug.Info`` (which a
        ``debug.py`` may have replaced): ``Info("psfmatch.task")`` for
        ``display``, ``maskTransparency`` and ``displaySpatialCells``;
        ``Info("psfmatch.solve")`` for ``display``, ``displayCandidates``,
        ``displayKernelBasis``, ``displayKernelMosaic``, ``plotKernelSpatialModel``
        and ``showBadCandidates``.  Unlike LSST, the cells
        are shown after the fit, so the candidates carry their final status.
        """
        from . import debug

        taskInfo = debug.Info(__name__)
        solveInfo = debug.Info("psfmatch.solve")
        if not ((taskInfo.display and taskInfo.displaySpatialCells) or solveInfo.display):
            return None
        from .display import debug_displays

        debug_displays(exposure, fit)
        return None

    #: A reference stamp whose border pixels exceed this fraction of its peak is reported as truncated.
    TRUNCATION_THRESHOLD = 1e-3
    #: Fraction of a cropped reference's flux beyond the fit's stamps above which it is said to be truncated.
    TRUNCATION_FLUX_THRESHOLD = 1e-3
    #: Relative precision below which a raw-pixel polynomial kernel is reported (float32 pixels hold 6e-8).
    POLYNOMIAL_PRECISION = 1e-7

    def _warn_truncated(self, ref, position, psfSize, md, stacklevel=3, *, original=None, nativeSize=None):
        """Warn when the reference PSF still has flux at the edge of its ``psfSize`` stamp, or of its own.

        ``original`` is the reference model before it was resized to ``psfSize``
        and ``nativeSize`` the science stamp size before padding.  When the fit's
        stamps crop the reference's own stamp, the remedy is to pad them (the
        padding that would do is computed), not a larger reference stamp.  When
        the reference's own stamp is smaller than ``psfSize`` and was padded with
        zeros (an image), the edge of its own stamp is what tells.
        """
        try:
            R = ref.computeKernelImage(position)
        except PsfEvaluationError:
            return
        ratio = _edge_to_peak(R)
        own = None
        if original is not None and nativeSize is not None:
            try:
                own = original.computeKernelImage(position)
            except PsfEvaluationError:
                pass
        padded = own is not None and max(own.shape) < psfSize and _zero_outside(R, own.shape)
        if padded:
            ratio = max(ratio, _edge_to_peak(own))  # the zeros added around it hide the edge it had
        md["referenceEdgeToPeak"] = ratio
        cropped = own is not None and max(own.shape) > psfSize
        from .diagnostics import flux_outside

        lost = flux_outside(own, psfSize) if cropped else 0.0
        if cropped:
            md["referenceFluxOutside"] = lost
        if ratio <= self.TRUNCATION_THRESHOLD and lost <= self.TRUNCATION_FLUX_THRESHOLD:
            return
        if ratio > self.TRUNCATION_THRESHOLD:
            found = (f"its edge reaches {ratio:.2g} of its peak (threshold {self.TRUNCATION_THRESHOLD:g}); the "
                     "matched PSF will miss its wings")
        else:  # a faint edge, but a wide wing: the flux beyond the stamp (renormalized into it) is what tells
            found = (f"{lost:.2%} of its flux lies beyond them (threshold {self.TRUNCATION_FLUX_THRESHOLD:.1%}), "
                     "and the stamp is renormalized to unit sum: the matched PSF misses that wing and its core is "
                     f"{lost / (1 - lost):.2%} brighter than the reference's")
        from .psf.image_io import _border_pedestal

        pedestal = _border_pedestal(own if own is not None else R)
        if pedestal is not None:
            # a flat border all around is a level the image was not cleared of, not a wing: no stamp size helps
            level, peak = pedestal
            what = (f"the reference PSF ({own.shape[1]}x{own.shape[0]} stamp) is cropped to the fit's "
                    f"{psfSize}x{psfSize} PSF stamps" if cropped else "the reference PSF is truncated by its stamp")
            msg = (f"{what}: {found}. But its own stamp's border is flat at "
                   f"{level / peak:.1%} of its peak all around: a pedestal (an unsubtracted bias or sky level) rather "
                   "than a wing, which a larger stamp would hold more of, not less. Remedy: subtract that level from "
                   "the reference PSF image (read_psf(path, background=...), on the command line "
                   "image:FILE,background=..., with the file's border level, as read_psf's own warning gives it)")
        elif cropped:
            from .diagnostics import size_holding, untruncated_size
            refDims = own.shape
            need = max(untruncated_size(own, self.TRUNCATION_THRESHOLD),
                       size_holding(own, self.TRUNCATION_FLUX_THRESHOLD))
            pad = max(2, need - nativeSize + (need - nativeSize) % 2)
            msg = (f"the reference PSF ({refDims[1]}x{refDims[0]} stamp) is cropped to the fit's {psfSize}x{psfSize} "
                   f"PSF stamps: {found}. Remedy: larger stamps for the fit, e.g. padPsfBy = {pad} with "
                   f"doAutoPadPsf = False ({nativeSize + pad} px stamps), or a larger autoPadPsfTo or kernelSize")
            if _edge_to_peak(own) > self.TRUNCATION_THRESHOLD:
                msg += (f"; its own {refDims[1]}x{refDims[0]} stamp is truncated too (use a larger reference stamp, "
                        "or more padding for a model that draws itself at any size)")
        elif padded:
            msg = (f"the reference PSF is truncated by its own {own.shape[1]}x{own.shape[0]} stamp, padded with zeros "
                   f"to the fit's {psfSize}x{psfSize}: {found}. Use a larger reference stamp")
        else:
            msg = (f"the reference PSF is truncated by its {psfSize}x{psfSize} stamp: {found}. Use a larger "
                   "reference stamp (a model that draws itself at any size, such as an analytic one, also gets "
                   "larger stamps from padPsfBy, autoPadPsfTo or kernelSize)")
        md["notes"].append(msg)
        warnings.warn(msg, TruncatedPsfWarning, stacklevel=stacklevel)

    # ------------------------------------------------------------------
    def _check_exposure(self, exposure):
        if not isinstance(exposure, Exposure):
            nddata = hasattr(exposure, "data") and hasattr(exposure, "uncertainty")  # astropy NDData, CCDData
            raise InvalidInputError(
                f"exposure must be a psfmatch.Exposure; got {type(exposure).__name__} "
                + ("(convert it with Exposure.from_nddata(nd, psf=...), and the result back with "
                   "psfMatchedExposure.to_nddata())" if nddata else
                   "(wrap arrays with Exposure(image, mask, variance, psf=...))"))
        if not exposure.hasPsf():
            raise MissingPsfError("exposure does not contain a Psf model; attach the exposure's PSF "
                                  "(exposure.setPsf(psf), Exposure(..., psf=psf) or read_exposure(path, psf=psf))")
        # the automatic kernel keeps its sizes within the exposure: its smallest must fit
        self._check_kernel_fits(exposure, self._smallest_kernel or self.kConfig.kernelSize)
        var = exposure.variance
        if np.any(var < 0):  # one pass in the usual case; NaN compares False, -inf is counted below
            finite = np.isfinite(var)
            neg = int(np.sum(var[finite] < 0))
            if neg:
                raise InvalidInputError(
                    f"variance has {neg} negative pixel(s) (min {float(var[finite].min()):.4g}); variance must be "
                    ">= 0 (mark unusable pixels NO_DATA or set their variance to NaN)")
        return exposure

    @staticmethod
    def _check_kernel_fits(exposure, k, chosen=""):
        h, w = exposure.image.shape
        if min(h, w) <= 2 * (k // 2):
            raise InvalidInputError(
                f"exposure ({w}x{h} pixels) is no larger than the kernel's border ({k // 2} pixels on each side of a "
                f"{k}x{k} kernel{chosen}): every output pixel would be NO_DATA; use a smaller kernelSize")

    def _estimate_fwhm(self, psf, position, jitter=True):
        offsets = [(0.0, 0.0)]
        if jitter:
            offsets += [tuple(v) for v in np.random.default_rng(40).uniform(-2, 2, (4, 2))]
        last = None
        for dx, dy in offsets:
            try:
                return psf.computeShape((position[0] + dx, position[1] + dy)).fwhm
            except (PsfComputeShapeError, PsfEvaluationError) as exc:
                last = exc
                log.info("Unable to compute the PSF shape at (%.1f, %.1f); retrying", position[0] + dx, position[1] + dy)
        raise PsfComputeShapeError(position, f"all {len(offsets)} attempts failed: {last}")

    # ------------------------------------------------------------------
    def _fitKernelChecked(self, sciencePsf, referencePsfModel, bbox, kernelSum, warn_skip=0):
        """Survey and ill-posed check, automatic kernel choice, the fit, then the quality checks.

        Warnings are attributed to the caller of :meth:`fitKernel`, ``warn_skip``
        frames further up (1 when :meth:`run` called it).
        """
        from .autokernel import choose_kernel
        from .diagnostics import (FLAG_ILL_POSED, SurveyCachedPsf, check_ill_posed, check_kernel_quality,
                                  enforce_ill_posed, kernel_remedy_context, survey_psfs)

        t0 = time.perf_counter()
        checked_kernel_sum(kernelSum)
        sci, ref = as_psf(sciencePsf, "sciencePsf"), as_psf(referencePsfModel, "referencePsfModel")
        kc = self.kConfig
        cellSet = SpatialCellSet(bbox, kc.sizeCellX, kc.sizeCellY, kc.candidatePlacement)
        # one stamp of each PSF tells the memory the survey and the fit will need: refuse absurd
        # sizes (a 20001x20001 PSF stamp at every cell) before realizing them everywhere.  A kernel size
        # the automatic choice makes is not known yet: the smallest it may choose is checked (the
        # choice skips the trials that do not fit, and the fit checks the chosen one)
        self._check_fit_memory(cellSet.nx * cellSet.ny, _stamp_size_hint([sci, ref], cellSet.cell_centers()[0]),
                               None if _varies(sci) or _varies(ref) else 1, self._smallest_kernel, _varies(ref))
        try:
            survey = survey_psfs(sci, ref, cellSet)
        except PsfEvaluationError:
            survey = None  # nothing evaluates: the fit raises NoKernelCandidatesError with its own message
        report = None if survey is None else check_ill_posed(survey, self.config.illPosedTolerance)
        if report is not None:
            # raises before anything is fitted; warns from enforce <- here <- fitKernel <- its caller
            enforce_ill_posed(report, self.config.strict, stacklevel=4 + warn_skip)
        between = between_job = None
        # (neither model varying, the held-out positions' stamps are the candidates'; identical stamps at the
        # candidates alone do not say so: a PSF broader between them than at every one of them)
        checked = report is not None and not report.illPosed and (_varies(sci) or _varies(ref))
        pts = self._between_positions(cellSet) if checked else []
        if pts:
            # the held-out positions of the QA too: a PSF broader between the candidates than at them.  The
            # stamps are made here (a user's PSF model is only ever called from the calling thread) and kept
            # for the QA; only strict needs the answer before the fit, otherwise the moments are measured on
            # a pool thread beside the fit (one core's work for a small exposure: 64 cells), and the warning
            # comes after the fit
            images = compute_kernel_image_pairs(sci, ref, pts)
            survey.scienceStamps.update({(float(p[0]), float(p[1])): s for p, s in zip(pts, images[0])
                                         if s is not None})
            pool = None if self.config.strict else shared_pool(available_cores())
            if pool is None:
                between = self._check_between(cellSet, pts, images, survey.scienceCentroids)
                if between is not None:
                    enforce_ill_posed(between, self.config.strict, stacklevel=4 + warn_skip)
            else:
                between_job = pool.submit(self._check_between, cellSet, pts, images, survey.scienceCentroids)
        t1 = time.perf_counter()
        task, auto_md = self, None
        try:
            if self.config.autoKernel and survey is not None:
                n_cells = cellSet.nx * cellSet.ny

                def fit_memory(cfg, psf_size):
                    return estimate_fit_memory(cfg, n_cells, psf_size, 1 if survey.constant else None,
                                               varying_reference=_varies(ref))[0]

                choice = choose_kernel(self.config, survey, sci, ref, cellSet, bbox, self.TRUNCATION_THRESHOLD,
                                       fit_memory)
                task = type(self)(config=choice.config, name=self.name)
                auto_md = choice.metadata
            # (the QA reuses the science stamps' centroids measured by the survey, and by the check between the
            # candidates once it has finished)
            cached = sci if survey is None else SurveyCachedPsf(sci, survey, pending=between_job)
            fit = task.fitKernel(cached, ref, bbox, kernelSum, _preflight=False, _cellSet=cellSet,
                                 _warn_skip=warn_skip + 2)
        except BaseException:
            if between_job is not None:
                futures.wait([between_job])  # nothing of this call left running
            raise
        if between_job is not None:
            between = between_job.result()
            if between is not None:
                enforce_ill_posed(between, self.config.strict, stacklevel=4 + warn_skip)
        md = fit.metadata
        if auto_md is not None:
            md.setdefault("notes", []).extend(auto_md.get("notes", []))
            if md.get("ALBasisMode") == "config" and auto_md["chosen"].get("label") not in ("config", "config-widths"):
                md["ALBasisMode"] = "auto"  # the widths came from the PSFs' moments (and wing sizes), not the config
        qa = md.setdefault("qa", {})
        flags = []
        # (the check between the candidates is made only where the one at them passed: one flag at most)
        for key, checked in (("illPosed", report), ("illPosedBetween", between)):
            if checked is None:
                continue
            qa[key] = checked.to_metadata()
            if checked.illPosed:
                flags.append(FLAG_ILL_POSED)
                md.setdefault("notes", []).append(checked.message())
            elif checked.nUnmeasured:
                md.setdefault("notes", []).append(checked.unmeasured_message())
        if report is not None:
            by_cell = {c: j for j, c in enumerate(survey.cells)}
            for cand in fit.cellSet.candidates():
                j = by_cell.get(cand.id)
                if j is not None:
                    cand.qa["illPosedDeficit"] = float(report.deficit[j])
        flags += check_kernel_quality(qa, self.config.qaMaxResidual, self.config.qaMaxKernelNegativeFraction,
                                      stacklevel=4 + warn_skip,
                                      auto_kernel=(auto_md is not None) and (bool(auto_md.get("trials")) or "kept"),
                                      max_aperture_mismatch=self.config.qaMaxApertureFluxMismatch,
                                      wing_tried=auto_md is not None and bool(auto_md.get("wingTrials", {}).get(
                                          "ran")), max_kernel_shift=self.config.qaMaxKernelShift,
                                      kernel=kernel_remedy_context(task.config, self.config))
        qa["flags"] = flags
        qa["thresholds"] = {"illPosedTolerance": self.config.illPosedTolerance,
                            "qaMaxResidual": self.config.qaMaxResidual,
                            "qaMaxKernelNegativeFraction": self.config.qaMaxKernelNegativeFraction,
                            "qaMaxKernelShift": self.config.qaMaxKernelShift,
                            "qaMaxApertureFluxMismatch": self.config.qaMaxApertureFluxMismatch}
        md["autoKernelUsed"] = auto_md is not None
        if auto_md is not None:
            md["autoKernel"] = auto_md
        md["surveyTime"] = t1 - t0
        md["fitTime"] = time.perf_counter() - t0
        return fit

    # ------------------------------------------------------------------
    def fitKernel(self, sciencePsf, referencePsfModel, bbox: Box2I, kernelSum=1.0, *, _preflight=True,
                  _cellSet=None, _warn_skip=0) -> KernelFit:
        """Fit the spatially varying matching kernel over ``bbox`` (no convolution).

        Before anything is fitted, both PSFs are surveyed at the candidate positions and
        the match is checked for ill-posedness (:mod:`psfmatch.diagnostics`); with
        ``config.autoKernel`` the kernel size, basis and spatial order are then
        chosen (:mod:`psfmatch.autokernel`).  After the fit, the QA is compared
        with ``qaMaxResidual``, ``qaMaxKernelNegativeFraction``, ``qaMaxKernelShift`` and
        ``qaMaxApertureFluxMismatch``.

        Parameters
        ----------
        sciencePsf, referencePsfModel : PSF models
        bbox : Box2I
            The exposure's box; cells tile it and the spatial model covers it.
        kernelSum : float

        Returns
        -------
        KernelFit

        Raises
        ------
        InvalidInputError
            If ``bbox`` is not a non-empty :class:`~psfmatch.geom.Box2I`.
        IllPosedMatchError
            With ``config.strict``, when the reference is narrower than the science
            PSF along some axis in some cell (otherwise an ``IllPosedMatchWarning``).

        Warns
        -----
        IllPosedMatchWarning, KernelQualityWarning
        """
        from .solve import single_threaded_blas

        if not isinstance(bbox, Box2I) or bbox.isEmpty():
            hint = " (a Box2D holds pixel edges: give the Box2I of the pixels, e.g. exposure.getBBox())" \
                if isinstance(bbox, Box2D) else " (e.g. exposure.getBBox())"
            raise InvalidInputError(f"bbox must be a non-empty Box2I, the exposure's box; got {bbox!r}{hint}")
        # every dense problem of the fit is small (26 x 26 systems, products of a few hundred columns):
        # OpenBLAS's threads would only spin against psfmatch's own (see single_threaded_blas)
        with single_threaded_blas():
            if _preflight:
                return self._fitKernelChecked(sciencePsf, referencePsfModel, bbox, kernelSum, _warn_skip)
            return self._fitKernel(sciencePsf, referencePsfModel, bbox, kernelSum, _cellSet, _warn_skip)

    def _fitKernel(self, sciencePsf, referencePsfModel, bbox, kernelSum, _cellSet, warn_skip=0):
        """:meth:`fitKernel` without the survey and the quality checks (``warn_skip``: see :meth:`_fitKernelChecked`)."""
        t0 = time.perf_counter()
        ks = checked_kernel_sum(kernelSum)
        kc = self.kConfig
        sci = as_psf(sciencePsf, "sciencePsf")
        ref = as_psf(referencePsfModel, "referencePsfModel")
        md: dict = {"kernelBasisSet": kc.kernelBasisSet, "kernelSum": ks, "notes": []}

        cellSet = _cellSet  # the survey's (still empty) cell set, when it has this fit's geometry
        if cellSet is None or (cellSet.bbox, cellSet.sizeCellX, cellSet.sizeCellY, cellSet.placement) != (
                bbox, kc.sizeCellX, kc.sizeCellY, kc.candidatePlacement) or any(c.candidates for c in cellSet.cells):
            cellSet = SpatialCellSet(bbox, kc.sizeCellX, kc.sizeCellY, kc.candidatePlacement)
        positions = cellSet.cell_centers()
        md["nCells"] = len(positions)

        # realize the science PSF at every candidate position (this is also the size survey)
        cands = []
        sci_imgs, sci_errors = compute_kernel_images(sci, positions)  # vectorized where the model allows
        for i, pos in enumerate(positions):
            cand = KernelCandidate(i, pos.x, pos.y)
            exc = sci_errors.get(i)
            if exc is not None:
                cand.setStatus(CandidateStatus.BAD, f"science PSF: {exc}")
                log.warning("Candidate %d at (%.1f, %.1f) rejected: %s", i, pos.x, pos.y, exc)
            cellSet.insertCandidate(cand)
            cands.append(cand)
        good = [i for i, img in enumerate(sci_imgs) if img is not None]
        if not good:
            raise NoKernelCandidatesError(
                f"the science PSF could not be evaluated at any of the {len(positions)} cell centres, so no "
                f"candidate constrains the kernel ({_rejections(cands)}); check that the PSF model covers the "
                f"exposure's box {bbox}")
        psfSize = max(max(sci_imgs[i].shape) for i in good)

        # basis (the FWHMs are only needed by the scaleByFwhm path)
        sci_fwhm = ref_fwhm = None
        if getattr(kc, "scaleByFwhm", False) and kc.kernelBasisSet == "alard-lupton":
            sci_fwhm = self._estimate_fwhm(sci, sci.getAveragePosition())
            ref_fwhm = self._estimate_fwhm(ref, bbox.getCenter(), jitter=False)
        basis = makeKernelBasisList(kc, ref_fwhm, sci_fwhm, metadata=md)
        k = basis.kernel_size

        # padding and the kernel-size check (LSST's arithmetic)
        if self.config.doAutoPadPsf:
            minPsfSize = nextOddInteger(k * self.config.autoPadPsfTo)
            padding = max(0, minPsfSize - psfSize)
        else:
            if self.config.padPsfBy % 2 != 0:
                raise InvalidConfigError(f"Config padPsfBy ({self.config.padPsfBy} pixels) must be even number.")
            padding = self.config.padPsfBy
        if padding:
            log.debug("Padding Science PSF from (%d, %d) to (%d, %d) pixels", psfSize, psfSize,
                      psfSize + padding, psfSize + padding)
        self._check_fit_memory(len(positions), psfSize, None if _varies(sci) or _varies(ref) else 1,
                               varying_reference=_varies(ref))
        psfSize += padding
        maxKernelSize = psfSize - 1
        if maxKernelSize % 2 == 0:
            maxKernelSize -= 1
        if k > maxKernelSize:
            raise KernelTooBigError(
                f"Kernel size ({k}) too big to match Psfs of size {psfSize}. Please reconfigure by setting "
                f"one of the following:\n"
                f"1) kernel size to <= {maxKernelSize}\n"
                f"2) doAutoPadPsf=True\n"
                f"3) padPsfBy to >= {k - maxKernelSize}\n")
        md["psfSize"] = psfSize
        md["kernelSize"] = k

        # the reference, resized to the science stamp size
        refDims = ref.computeKernelImage(bbox.getCenter()).shape
        if refDims != (psfSize, psfSize):
            log.info("Adjusted dimensions of reference PSF model from %s to %s", (refDims[1], refDims[0]),
                     (psfSize, psfSize))
            try:
                refResized = ref.resized(psfSize, psfSize)
            except Exception as exc:  # a user model without a working resize: pad or crop its images
                log.warning("Zero padding or clipping the reference PSF model (%s)", exc)
                from .psf.base import _ResizedPsf
                refResized = _ResizedPsf(ref, psfSize, psfSize)
        else:
            refResized = ref
        md["referencePsfDimensions"] = [psfSize, psfSize]
        # _warn_truncated <- here <- fitKernel <- its caller
        self._warn_truncated(refResized, bbox.getCenter(), psfSize, md, stacklevel=4 + warn_skip, original=ref,
                             nativeSize=psfSize - padding)

        # a reference that does not vary is realized once and shared (read-only) by every candidate
        ref_const = not bool(getattr(refResized, "isSpatiallyVarying", lambda: True)())
        R_once = None
        R_list, used = [], []
        for i in good:
            cand = cands[i]
            try:
                if R_once is not None:
                    R = R_once
                else:
                    R = refResized.computeKernelImage((cand.x, cand.y))
                    if R.shape != (psfSize, psfSize):
                        R = pad_or_crop(R, psfSize, psfSize)
                        R /= R.sum()
                    if ref_const:
                        R.setflags(write=False)
                        R_once = R
            except PsfEvaluationError as exc:
                cand.setStatus(CandidateStatus.BAD, f"reference PSF: {exc}")
                continue
            R_list.append(R)
            used.append(i)
        if not used:
            raise NoKernelCandidatesError(
                f"the reference PSF could not be evaluated at any of the {len(good)} cell centres where the science "
                f"PSF could, so no candidate constrains the kernel ({_rejections(cands)})")
        S_all = pad_or_crop_stack([sci_imgs[i] for i in used], psfSize, psfSize)
        R_all = np.broadcast_to(R_once, (len(used),) + R_once.shape) if R_once is not None else np.array(R_list)
        for j, i in enumerate(used):
            cands[i].science, cands[i].reference = S_all[j], R_once if R_once is not None else R_all[j]

        # identical stamp pairs share one set of normal equations
        uniq, inverse = unique_stamps(S_all)
        if R_once is None:  # pairs: the distinct (science, reference) label pairs, as two-value stamps
            uniq, inverse = unique_stamps(np.stack([inverse, unique_stamps(R_all)[1]], axis=1))
        md["nUniqueCandidates"] = len(uniq)

        eq_u, cbasis, coeff_u, rank_u, cond_u = self._candidate_solutions(basis, S_all[uniq], R_all[uniq], md=md)

        if kc.usePcaForSpatialKernel:
            ok_u = np.all(np.isfinite(coeff_u), axis=1)
            kimgs = np.tensordot(coeff_u[ok_u], cbasis.images, axes=1)
            # each candidate counts once, as in LSST: a distinct stamp pair weighs as many as it stands for
            counts = np.bincount(inverse, minlength=len(uniq))[ok_u]
            pbasis = pca_basis(kimgs, kc.numPrincipalComponents, kc.subtractMeanForPca, weights=counts)
            md["PcaNumComponents"] = len(pbasis)
            if len(pbasis) < kc.numPrincipalComponents:
                n_cands = int(counts.sum())
                note = (f"numPrincipalComponents = {kc.numPrincipalComponents}: {len(pbasis)} kept, as the "
                        f"{n_cands} candidate{'s' if n_cands != 1 else ''}' kernel{'s' if n_cands != 1 else ''} "
                        f"({len(kimgs)} distinct) span no more components "
                        f"(beyond, their eigenvalues are below {PCA_TOLERANCE:g} of the mean's)")
                log.info(note)
                md.setdefault("notes", []).append(note)
            # the delta-function solve's own rank and condition: the refit's below are those of a few components
            if ok_u.any() and basis.kind == "delta-function":
                md["deltaFunctionRank"] = int(rank_u[ok_u].min())
                md["deltaFunctionConditionNum"] = _json_float(float(np.max(cond_u[ok_u])))
                md["deltaFunctionUnknowns"] = int(eq_u.M.shape[-1])
            eq_u, cbasis, coeff_u, rank_u, cond_u = self._candidate_solutions(pbasis, S_all[uniq], R_all[uniq],
                                                                              regularize=False)

        coeff = coeff_u[inverse]
        finite_u = np.all(np.isfinite(coeff_u), axis=1)
        kimg_all = np.tensordot(np.where(finite_u[:, None], coeff_u, 0.0), cbasis.images, axes=1)[inverse]
        for j, i in enumerate(used):
            cand = cands[i]
            if finite_u[inverse[j]]:
                cand.coefficients = coeff[j]
                cand.kernel_image = kimg_all[j]
                cand.rank, cand.condition_number = int(rank_u[inverse[j]]), float(cond_u[inverse[j]])
                cand.solution = "PCA" if kc.usePcaForSpatialKernel else "ORIG"
                cand.setStatus(CandidateStatus.GOOD)
            else:
                cand.setStatus(CandidateStatus.BAD, "non-finite kernel solution")
        goodj = np.array([j for j, i in enumerate(used) if cands[i].status == CandidateStatus.GOOD], dtype=int)
        if len(goodj) == 0:
            raise NoKernelCandidatesError(
                f"none of the {len(used)} kernel candidates has a finite solution ({_rejections(cands)}); check the "
                "PSF stamps for extreme values")

        # spatial model; lower the order until the candidates constrain it
        xs = np.array([cands[used[j]].x for j in goodj])
        ys = np.array([cands[used[j]].y for j in goodj])
        requested = kc.spatialKernelOrder
        # along an axis with n distinct candidate coordinates (rows or columns of cells) only degrees below n
        # are determined: higher ones are held at 0 (a strip's one row of cells fits the variation along x)
        cap_x, cap_y = axis_degree_caps(xs, ys)
        order = min(requested, cap_x + cap_y)
        while True:
            sf = SpatialFunction(kc.spatialModelType, order, bbox)
            sf_solve, to_sf = sf.conditioned()  # raw-pixel monomials are solved for as Chebyshev terms
            fitted = sf_solve.term_mask(cap_x, cap_y)
            F = sf_solve.evaluate(xs, ys).T[:, fitted]
            if order == 0 or full_column_rank(F):
                break
            order -= 1
        if order != requested:
            remedy = cellSet.smaller_cells_remedy(requested)
            note = (f"spatialKernelOrder lowered from {requested} to {order}: {len(goodj)} candidates on a "
                    f"{cellSet.nx}x{cellSet.ny} grid cannot constrain an order-{requested} model (use {remedy}, "
                    "or set the order you want)")
            if len(goodj) < len(positions):
                note += f"; {_rejections(cands)}"
            log.warning(note)
            md["notes"].append(note)
        if min(cap_x, cap_y) < order:
            axes = " and ".join(f"{cap} along {ax}" for ax, cap in (("x", cap_x), ("y", cap_y))
                                if cap < order)
            note = (f"the order-{order} spatial model is fitted with degree at most {axes}: the candidates lie on "
                    f"{cap_x + 1} distinct column(s) and {cap_y + 1} row(s) of the {cellSet.nx}x{cellSet.ny} grid, "
                    f"which determine no more (use {cellSet.smaller_cells_remedy(order)} to fit the whole model)")
            if len(goodj) < len(positions):  # candidates lost: worth a warning, as a lowered order is
                note += f"; {_rejections(cands)}"
                log.warning(note)
            else:  # a strip's one row of cells: all that its candidates can tell
                log.info(note)
            md["notes"].append(note)
        if order == 0 and len(positions) == 1 and (_varies(sci) or _varies(ref)):
            # (autoKernel asks for order 0 here: one candidate looks like a constant match)
            note = (f"the {bbox.getWidth()}x{bbox.getHeight()} exposure is a single cell (sizeCellX x sizeCellY = "
                    f"{kc.sizeCellX}x{kc.sizeCellY}): its one candidate constrains only a constant kernel, though the "
                    "PSF models may vary (use smaller cells for a spatially varying kernel)")
            log.warning(note)
            md["notes"].append(note)
        md["spatialKernelOrderRequested"] = requested
        md["spatialKernelOrder"] = order
        md["spatialModelType"] = kc.spatialModelType

        u_good = np.unique(inverse[goodj])
        if F.shape[1] == 1 and len(u_good) == 1 and F[0, 0] != 0 and np.all(F == F[0, 0]):
            # one distinct candidate and a constant spatial model: the joint system is that candidate's own
            # equations times n f^2 (right side n f), whose scaled Gram, rank and solution it has already
            # given (a 1680 x 1680 decomposition saved for a 41 px delta-function kernel)
            u = int(u_good[0])
            theta = coeff_u[u, 1:, None] / F[0, 0]
            srank, scond = int(rank_u[u]), float(cond_u[u])
        else:
            theta, srank, scond = solve_spatial(eq_u.take(inverse[goodj]), F, kc.solveRcond)
        md["nSpatialUnknowns"] = int(theta.size)
        if F.shape[1] < sf.nterms:  # the terms the candidates cannot determine stay 0
            solved, theta = theta, np.zeros((theta.shape[0], sf.nterms))
            theta[:, fitted] = solved
        theta = theta @ to_sf
        nb = len(cbasis)
        coeffs = np.zeros((nb, sf.nterms))
        coeffs[0, 0] = 1.0
        coeffs[1:] = theta
        kernel = LinearCombinationKernel(cbasis, coeffs, sf if sf.nterms > 1 else None, ks, bbox)
        loss = sf.precision_loss()
        if loss > self.POLYNOMIAL_PRECISION:
            note = (f"spatialModelType='polynomial' over the box at ({bbox.getMinX()}, {bbox.getMinY()}): raw-pixel "
                    f"monomials of order {order} this far from the origin cancel in float64 and hold the kernel to "
                    f"only about {loss:.1g} of its values; use spatialModelType='chebyshev1' (the default), which "
                    "spans the same polynomials")
            log.warning(note)
            md["notes"].append(note)
            warnings.warn(note, KernelQualityWarning, stacklevel=4 + warn_skip)
        md["spatialSolutionRank"] = srank
        md["spatialConditionNum"] = _json_float(scond)
        md["nCandidatesBuilt"] = len(positions)
        md["nCandidatesUsed"] = int(len(goodj))
        md["nCandidatesRejected"] = int(len(positions) - len(goodj))
        md["rejectedCandidates"] = [c.to_dict() for c in cands if c.status == CandidateStatus.BAD]
        md["spatialKernelSum"] = kernel.getSum(bbox.getCenter())
        log.debug("Spatial kernel built with %d candidates", len(goodj))

        # QA at the candidates and between them, in one batch
        # (the candidates' stacks as they are, not copied: a constant reference stays one broadcast stamp)
        Sb, Rb, xb, yb, n_between, between_errors = self._between_stamps(sci, refResized, cellSet, psfSize)
        all_good = len(goodj) == len(used)
        S_c = S_all if all_good else S_all[goodj]
        R_c = np.broadcast_to(R_once, (len(goodj),) + R_once.shape) if R_once is not None else (
            R_all if all_good else R_all[goodj])
        groups = [(S_c, R_c, xs, ys)] + ([(Sb, Rb, xb, yb)] if len(xb) else [])
        qs = self._qa(kernel, groups, sci)
        qa_c = qs[0]
        for n_, j in enumerate(goodj):
            cand = cands[used[j]]
            cand.qa = {name: float(v[n_]) for name, v in qa_c.items()}
        md["qa"] = {"candidates": summarize(qa_c, xs, ys),
                    "between": summarize(qs[1], xb, yb) if len(xb) else {"n": 0}}
        if between_errors:
            # a PSF that fails at held-out positions must not pass for a clean check between the candidates
            first = between_errors[min(between_errors)]
            md["qa"]["between"]["nUnevaluated"] = len(between_errors)
            note = (f"the PSFs could not be evaluated at {len(between_errors)} of the {n_between} held-out QA "
                    f"positions ({type(first).__name__}: {first}); the QA between the candidates "
                    + ("checks none" if not len(xb) else f"covers the other {len(xb)}")
                    + ": check the PSF models there")
            md.setdefault("notes", []).append(note)
            log.warning(note)
            warnings.warn(note, KernelQualityWarning, stacklevel=4 + warn_skip)
        md["fitTime"] = time.perf_counter() - t0
        return KernelFit(kernel, cellSet, md, refResized, psfSize)

    # ------------------------------------------------------------------
    def _candidate_solutions(self, basis: KernelBasis, S, R, regularize=True, md=None):
        """Normal equations (reduced, in the constrained basis) and each candidate's own solution.

        ``md``: where a regularized delta-function fit records its regularization (``regularization``: the
        type, ``lambdaType`` and the strengths used, their smallest and largest over the candidates).
        """
        kc = self.kConfig
        imgs, order, ratios, s_p = constrained_basis(basis)
        cbasis = KernelBasis(imgs, basis.kind, dict(basis.description))
        if basis.kind == "delta-function":
            # the Gram of a delta-function basis is a gather of autocorrelation lags (and the regularization
            # is defined on its pixels): build it in the raw basis and transform the equations
            raw = GramBuilder(basis, kc.fitRegion).build(S, R)
            if regularize and self.useRegularization:
                lam = lambda_for(kc, raw.M, self.hMat)
                raw = NormalEquations(raw.M + lam[:, None, None] * self.hMat[None], raw.b, raw.yy)
                if md is not None:
                    md["regularization"] = {
                        "regularizationType": kc.regularizationType, "lambdaType": kc.lambdaType,
                        "lambdaValue" if kc.lambdaType == "absolute" else "lambdaScaling":
                            float(kc.lambdaValue if kc.lambdaType == "absolute" else kc.lambdaScaling),
                        "lambdaMin": _json_float(float(np.min(lam))), "lambdaMax": _json_float(float(np.max(lam)))}
            elif md is not None:
                md["regularization"] = None
            eq = reduce_constrained(transform_equations(raw, order, ratios, s_p))
        else:
            # the constraint is a fixed linear change of basis: build the equations in the constrained
            # basis directly instead of transforming a thousand Gram matrices afterwards
            eq = reduce_constrained(GramBuilder(cbasis, kc.fitRegion).build(S, R))
        coeffs, rank, cond = solve_candidates(eq, kc.solveRcond)
        return eq, cbasis, coeffs, rank, cond

    def _qa(self, kernel, groups, sci=None):
        """:func:`~psfmatch.qa.match_quality` of ``groups`` of ``(S, R, xs, ys)`` stacks, one dict per group.

        With the survey's science PSF (a :class:`~psfmatch.diagnostics.SurveyCachedPsf`), the science
        stamps' centroids it measured are not measured again."""
        from .diagnostics import SurveyCachedPsf
        from .solve import single_threaded_blas  # small products: one BLAS thread (see its docstring)

        known = sci.science_centroids if isinstance(sci, SurveyCachedPsf) else None
        with single_threaded_blas():
            return match_quality_groups([(S, R, kernel.computeImages(xs, ys) / kernel.kernel_sum,
                                          None if known is None else known(xs, ys, S.shape[1]))
                                         for S, R, xs, ys in groups])

    def _check_between(self, cellSet, pts, images, centroids=None):
        """The ill-posed check at the QA's held-out positions ``pts`` (:meth:`_between_positions`) from the stamps
        ``images`` made there (:func:`~psfmatch.psf.base.compute_kernel_image_pairs`), or None where neither
        PSF could be evaluated.  The PSF models are not called: this may run on a pool thread.  The science
        stamps' centroids measured are added to ``centroids`` (a survey's ``scienceCentroids``)."""
        from .diagnostics import check_ill_posed, survey_psfs

        try:
            held = survey_psfs(None, None, cellSet, positions=pts, images=images)
        except PsfEvaluationError:
            return None  # nowhere evaluable: the QA skips these positions too
        if centroids is not None:
            centroids.update(held.scienceCentroids)
        return check_ill_posed(held, self.config.illPosedTolerance, noun="held-out positions between the candidates")

    def _between_positions(self, cellSet):
        """The QA's held-out positions: :func:`qa_position_count` of them."""
        return cellSet.between_positions(qa_position_count(self.config, len(cellSet.cells)))

    def _between_stamps(self, sci, ref, cellSet, psfSize):
        """Science and reference stamps at the held-out QA positions.

        ``qaPositionsPerCandidate`` per cell, at most ``qaMaxPositions``
        (:meth:`SpatialCellSet.between_positions` chooses them).  Returns
        ``(S, R, xs, ys, n, errors)``; positions where either PSF fails are left out, and their errors
        are ``errors`` (``{index: error}`` among the ``n`` positions).
        """
        pts = self._between_positions(cellSet)
        errors = {}
        S, R, kept = kernel_image_pair_stacks(sci, ref, pts, psfSize, errors_out=errors)
        return S, R, np.array([pts[i].x for i in kept]), np.array([pts[i].y for i in kept]), len(pts), errors


def _smallest_free_kernel(config):
    """The smallest kernel side the automatic choice may make with ``config``, when it chooses the size (else
    None: the size is the user's, or LSST's FWHM rule sets it)."""
    from .autokernel import MIN_KERNEL_SIZE, _free_fields

    kc = config.kernel.active
    if config.autoKernel and not getattr(kc, "scaleByFwhm", False) and _free_fields(config)["kernelSize"]:
        return min(kc.kernelSize, MIN_KERNEL_SIZE)
    return None


def qa_position_count(config, n_cells) -> int:
    """How many held-out positions the QA checks: ``qaPositionsPerCandidate`` per cell, but at least the
    exposure's four corners (an exposure of one to three cells would otherwise check one or two of them, and a PSF
    that varies towards another goes unseen: a deconvolution there, 0.36 of the peak off, with no flag), at most
    ``qaMaxPositions``.  With ``qaPositionsPerCandidate = 0`` there is no held-out check."""
    per = float(config.qaPositionsPerCandidate)
    m = math.ceil(per * int(n_cells))
    if per > 0:
        m = max(m, 4)
    return min(int(config.qaMaxPositions), m)


def estimate_fit_memory(config, n_candidates, psf_size, n_unique=None, kernel_size=None, *,
                        varying_reference=False):
    """Bytes the kernel fit needs at its peak: its largest arrays, as ``(total, {part: bytes})``.

    The parts: the stamp stacks that coexist (the survey's science stamps, the fit's padded stack, the
    distinct candidates' copies while their normal equations are built, and the QA's stamps between the
    candidates: the larger of the two phases), the basis images, the per-candidate normal equations, the
    joint spatial system (the free basis terms times the spatial terms, squared),
    the Fourier products of the Alard-Lupton basis, the regularization matrix of a delta-function basis,
    and the work arrays of the chunks that run on the threads together (:func:`~psfmatch.solve.gram_chunk_work`
    and :func:`~psfmatch.qa.qa_chunk_work` times the threads that have a chunk,
    :func:`~psfmatch.parallel.available_cores` at most) with a fixed allowance of 16 MiB for the
    small arrays.  ``psf_size`` is the stamp side before padding; the padding rule of the config is
    applied.  ``n_unique`` candidates have distinct stamps (1 when neither PSF varies: they share one set
    of normal equations; default all).  ``kernel_size``: the kernel's side instead of the configured
    ``kernelSize``.  ``varying_reference``: the reference PSF varies, so it is realized at every candidate
    (three stacks more: its list, its stack and the distinct candidates' copy).

    Not counted, but bounded under a finite ``maxMemoryGiB``: the spectral products kept for the next fits
    of the process (``psfmatch.solve._SPECTRAL_CACHE``, up to 256 MiB) are trimmed before the fit to what
    this estimate leaves under the limit, and kept during the automatic kernel's trials only within what
    they leave (:func:`~psfmatch.solve.spectral_cache_room`); the trials, each counted at its fit's
    estimate, run only as many at once as fit the limit (:func:`~psfmatch.autokernel.choose_kernel`).

    Measured peaks (tracemalloc of ``fitKernel``, 1 to 16 threads, the demo PSF and a 63 px DECam PSFEx
    model, kernels of 15 to 61 px, cells of 32 to 128 px): 0.54 to 0.97 times the estimate with
    ``autoKernel = False`` and with the demo's automatic kernel, 0.80 to 0.89 with a spatially varying
    reference (1.05 to 1.35 before it was counted).  With the automatic kernel and a PSFEx model the
    fit with the cached products of its trials reaches 1.07 to 1.73 times its estimate when the limit
    leaves room for them (under the default 8 GiB); with ``maxMemoryGiB`` just above the largest trial's
    estimate the whole ``fitKernel`` peaked at 0.53 to 0.83 of the limit (1.0 to 1.66 before the cache and
    the trials' threads were bounded).
    """
    from .qa import qa_chunk_size, qa_chunk_work
    from .solve import gram_chunk_size, gram_chunk_work

    kc = config.kernel.active
    k = int(kc.kernelSize if kernel_size is None else kernel_size)
    if getattr(kc, "scaleByFwhm", False):
        k = max(k, int(kc.kernelSizeMax))
    delta = kc.kernelBasisSet == "delta-function"
    nb = k * k if delta else sum((d + 1) * (d + 2) // 2 for d in kc.alardDegGauss)
    p = int(psf_size)
    if config.doAutoPadPsf:
        p = max(p, nextOddInteger(k * config.autoPadPsfTo))
    else:
        p += int(config.padPsfBy)
    n = max(int(n_candidates), 1)
    u = min(n, int(n_unique or n))
    s = min(int(psf_size), p)  # the science stamps' non-zero pixels (the padding is zeros)
    # side of the Fourier grid of a candidate's normal equations (GramBuilder._full_geometry; the
    # reference's support taken as the whole padded stamp)
    f = min(p + k - 1, max(2 * (s // 2) + k, s // 2 + p // 2 + k // 2 + 1))
    threads = max(1, available_cores())
    stamp = 8 * p * p
    # the QA's positions between the candidates (SpatialCellSet.between_positions: at most this many)
    m = qa_position_count(config, n)
    # while the normal equations are built: the survey's science stamps, the fit's padded stack, and the
    # distinct candidates' science and reference stamps; the spectral path's chunks run on the threads together
    gram_chunks = -(-u // gram_chunk_size(f, nb))
    gram_threads = 1 if delta or kc.fitRegion != "full" else min(threads, gram_chunks)
    gram = (8 * n * s * s + stamp * (n + 2 * u), gram_threads * gram_chunk_work(f, nb, u))
    # the QA: the survey's and the fit's stacks, the stamps between the candidates, the kernel images, and
    # the chunks of both stacks on the threads together
    qa_chunks = -(-n // qa_chunk_size(p, k)) + (-(-m // qa_chunk_size(p, k)) if m else 0)
    # (the held-out positions' stamps live three times: as realized, in their ill-posed survey's stacks, which
    # its report keeps through the QA, and padded for the QA)
    qa = (8 * n * s * s + stamp * (n + 2 * m) + 8 * k * k * (3 * n + 2 * m) + 8 * m * s * s + stamp * 2 * m,
          min(threads, qa_chunks) * qa_chunk_work(p, k, max(n, m), s))
    stamps, work = max(gram, qa, key=sum)
    # (the products are made on the grid of the first stamps the basis meets: counted on the largest)
    fourier = 0 if delta else 8 * nb * (nb + 1) * (p + k - 1) * ((p + k - 1) // 2 + 1)
    # the joint spatial system (solve_spatial): the constrained basis' free terms (the principal components'
    # with a PCA) times the spatial terms, squared; at most four copies at once (its assembly, its symmetrized
    # form, the solve's scaled copy, and the eigenvectors of a rank-deficient one).  Small for the default
    # Alard-Lupton basis (157 unknowns), 9240 for a delta-function basis of 21 px at order 5 without a PCA
    order = int(kc.spatialKernelOrder)
    free = int(kc.numPrincipalComponents) if getattr(kc, "usePcaForSpatialKernel", False) else nb
    unknowns = max(free - 1, 1) * ((order + 1) * (order + 2) // 2) + 1
    parts = {
        "stamps": stamps,
        "basis": 8 * nb * k * k,
        # at most four copies at once: the Gram (and the chunks' parts), its regularized and its constrained
        # (transformed) forms, and the solve's column-scaled copy with its SVD work arrays
        "normal equations": 4 * 8 * (u + 2) * nb * nb,
        "spatial system": 4 * 8 * unknowns * unknowns,
        "Fourier basis products": fourier,
        "regularization": 8 * nb * nb if delta and getattr(kc, "useRegularization", False) else 0,
        # a reference realized at every candidate: its list, its stack and the distinct candidates' copy
        "reference stamps": 3 * stamp * n if varying_reference else 0,
        "work arrays": work + 16 * 2 ** 20,
    }
    return sum(parts.values()), parts


#: Relative difference between a PSF image's recorded pixel scale and the exposure's above which run() warns.
PIXEL_SCALE_TOLERANCE = 0.01

#: :func:`_warn_psf_domain` warns when the exposure extends beyond the science PSF model's fitted region by more
#: than this fraction of the region's size on some side.
PSF_DOMAIN_TOLERANCE = 0.1


def _warn_psf_domain(exposure):
    """Warn when the exposure reaches far beyond the region its science PSF model was fitted on.

    A PSFEx model (and a :class:`~psfmatch.psf.VariableGaussianPsf`) states that region
    (``getBBox()``: a PSFEx model's ``POLZERO +- POLSCAL / 2``); beyond it the model is an
    extrapolation of its polynomial, which grows fast.  Far beyond it (more than
    :data:`PSF_DOMAIN_TOLERANCE` of its size) the model most likely belongs to another CCD, or
    the exposure is transposed, or its origin differs from the model's.
    """
    domain = model_domain(exposure.getPsf())
    if domain is None:
        return
    box = exposure.getBBox()
    w, h = domain.getWidth(), domain.getHeight()
    beyond = {"x <": (domain.getMinX() - box.getMinX()) / w, "x >": (box.getMaxX() - domain.getMaxX()) / w,
              "y <": (domain.getMinY() - box.getMinY()) / h, "y >": (box.getMaxY() - domain.getMaxY()) / h}
    worst = max(beyond.values())
    if worst <= PSF_DOMAIN_TOLERANCE:
        return
    x0, y0, x1, y1 = domain.getMinX(), domain.getMinY(), domain.getMaxX(), domain.getMaxY()
    edges = {"x <": x0, "x >": x1, "y <": y0, "y >": y1}
    sides = ", ".join(f"{side} {edges[side]} by {f:.0%}" for side, f in beyond.items() if f > PSF_DOMAIN_TOLERANCE)
    msg = (f"the exposure (x {box.getMinX()}..{box.getMaxX()}, y {box.getMinY()}..{box.getMaxY()}) reaches beyond the "
           f"region the science PSF model was fitted on (x {x0}..{x1}, y {y0}..{y1}) at {sides} of that region's "
           "size: the PSF there, and so the kernel and the QA, are extrapolations of the model. Check that the model "
           "belongs to this exposure: its CCD, the exposure's orientation (width and height swapped?) and origin "
           "(xy0; a PSFEx model's POLZERO is 1-based, see read_psfex(origin=), psfex:FILE,origin=N on the command "
           "line)")
    log.warning(msg)
    warnings.warn(msg, PsfMatchWarning, stacklevel=3)


#: What an earlier match recorded in an exposure's metadata (:mod:`psfmatch.batch`'s record, and the marker cards of
#: its outputs' headers): it describes that match's configuration, reference and input, so an exposure matched again
#: does not carry it (a re-run of the batch would take the new file for its own complete output).
EARLIER_MATCH_METADATA = ("psfmatchBatch",)
EARLIER_MATCH_CARDS = ("BATCHVER", "BATCHFPR", "BATCHCFG", "BATCHREF", "BATCHOK", "BATCHPSF")


def _drop_earlier_match(metadata) -> None:
    """Remove from ``metadata`` (the matched exposure's copy) what an earlier match recorded."""
    dropped = [key for key in EARLIER_MATCH_METADATA if metadata.pop(key, None) is not None]
    cards = metadata.get("fitsHeader")
    if cards is not None:
        for key in EARLIER_MATCH_CARDS:
            if key in cards:
                del cards[key]
                dropped.append(key)
    if dropped:
        log.info("the exposure's record of an earlier match (%s) is not carried to the matched exposure",
                 ", ".join(dropped))


def _warn_pixel_scales(exposure, reference):
    """Warn when a PSF image records a pixel scale other than the exposure's (its WCS's), or than the other PSF's,
    by more than 1%.

    An :class:`~psfmatch.psf.ImagePsf` read from a file keeps the pixel scale its header gives
    (``pixel_scale``); matching pixels of another size gives a wrong kernel without any other sign.
    """
    from .psf.adapters import GalSimPsf
    from .psf.image_io import pixel_scale_from_wcs

    def recorded(psf):
        inner = getattr(psf, "_psf", psf)  # (a resized model keeps its image's scale)
        ps = getattr(inner, "pixel_scale", None)
        return ps if isinstance(ps, (int, float)) and not isinstance(ps, bool) and ps > 0 else None

    sci_scale, ref_scale = recorded(exposure.getPsf()), recorded(reference)
    if sci_scale is not None and ref_scale is not None and abs(ref_scale / sci_scale - 1.0) > PIXEL_SCALE_TOLERANCE:
        # (with or without a WCS: the reference would be matched in the science PSF's pixels)
        msg = (f"the science PSF has pixels of {sci_scale:.4g} arcsec and the reference PSF {ref_scale:.4g} arcsec: "
               "the match is made in pixels, so the reference would come out "
               f"{sci_scale / ref_scale:.3g} times as wide on the sky as it is; sample both on the exposure's pixels "
               "(psfmatch.psf.read_image_psf(..., target_pixel_scale=...); on the command line "
               "image:FILE,target_pixel_scale=...)")
        log.warning(msg)
        warnings.warn(msg, PsfMatchWarning, stacklevel=3)
    scale = pixel_scale_from_wcs(exposure.getWcs())
    if scale is None:
        return
    for role, psf, ps in (("science", exposure.getPsf(), sci_scale), ("reference", reference, ref_scale)):
        if ps is not None and abs(ps / scale - 1.0) > PIXEL_SCALE_TOLERANCE:
            if isinstance(getattr(psf, "_psf", psf), GalSimPsf):  # drawn at its pixel_scale: draw it at the exposure's instead
                what, remedy = "PSF (a GalSimPsf)", f"make the GalSimPsf with pixel_scale={scale:.6g} (the exposure's)"
            else:
                what, remedy = "PSF image", ("resample it with psfmatch.psf.read_image_psf(..., "
                                             "target_pixel_scale=exposure) (or resample_psf; on the command line "
                                             f"image:FILE,target_pixel_scale={scale:.6g})")
            msg = (f"the {role} {what} has pixels of {ps:.4g} arcsec, the exposure's WCS {scale:.4g} arcsec: "
                   f"the PSF is matched in the exposure's pixels, so it must be sampled on them; {remedy}")
            log.warning(msg)
            warnings.warn(msg, PsfMatchWarning, stacklevel=3)


def checked_zero_point(zeroPoint, kernelSum=1.0) -> float | None:
    """``zeroPoint`` (``run``'s) as a float, or None; :class:`InvalidInputError` for one that is not a finite
    number, or given with a ``kernelSum`` other than 1 (it sets the kernelSum)."""
    if zeroPoint is None:
        return None
    if not _finite_real(zeroPoint):
        raise InvalidInputError(f"zeroPoint must be a finite number of magnitudes (27.0); got {zeroPoint!r}")
    if not (_is_real(kernelSum) and float(kernelSum) == 1.0):
        raise InvalidInputError(f"give kernelSum or zeroPoint, not both: kernelSum={kernelSum!r} with "
                                f"zeroPoint={zeroPoint!r} (zeroPoint sets the kernelSum from the exposure's own "
                                "zero point)")
    return float(zeroPoint)


def checked_kernel_sum(kernelSum) -> float:
    """``kernelSum`` as a float, once it is a positive finite number (:class:`InvalidInputError` naming it)."""
    ks = as_real(kernelSum, "kernelSum")
    if not (math.isfinite(ks) and ks > 0):
        raise InvalidInputError(f"kernelSum must be positive and finite; got {kernelSum!r}")
    return ks


def _rejections(cands) -> str:
    """``"k of n candidates rejected; first: candidate i at (x, y): reason"`` for the messages."""
    bad = [c for c in cands if c.status == CandidateStatus.BAD]
    if not bad:
        return f"none of {len(cands)} candidates rejected"
    c = bad[0]
    return f"{len(bad)} of {len(cands)} candidates rejected; first: candidate {c.id} at ({c.x:.1f}, {c.y:.1f}): {c.reason}"


def _edge_to_peak(stamp) -> float:
    """Largest ``|pixel|`` on the stamp's edge over its peak."""
    edge = np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]])
    return float(np.abs(edge).max() / stamp.max())


def _zero_outside(stamp, shape) -> bool:
    """Whether ``stamp`` is zero outside its central box of ``shape`` (a smaller stamp padded with zeros)."""
    h, w = stamp.shape
    y0, x0 = (h - shape[0]) // 2, (w - shape[1]) // 2
    inner = np.zeros(stamp.shape, dtype=bool)
    inner[y0:y0 + shape[0], x0:x0 + shape[1]] = True
    return not np.any(stamp[~inner])


def _varies(psf) -> bool:
    fn = getattr(psf, "isSpatiallyVarying", None)
    try:
        return bool(fn()) if callable(fn) else True
    except Exception:  # a partial implementation: assume it varies
        return True


def _stamp_size_hint(psfs, position) -> int:
    """The largest stamp side of ``psfs`` at ``position``: from ``getDimensions()`` when a model has it
    (nothing is realized), else from one kernel image; 1 for a model that cannot be evaluated there."""
    size = 1
    for psf in psfs:
        dims = None
        fn = getattr(psf, "getDimensions", None)
        if callable(fn):
            try:
                dims = tuple(int(v) for v in fn())
            except Exception:  # a partial implementation: realize one stamp instead
                dims = None
        if dims is None:
            try:
                dims = psf.computeKernelImage(position).shape
            except PsfEvaluationError:
                continue
        size = max(size, max(dims))
    return size



_ = Point2D
