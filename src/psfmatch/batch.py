"""Many exposures: PSF matching on Dask, an automatic reference PSF, and a PSF-matched coadd.

The seed's main use case is matching many exposures to one constant model PSF
so that they can be coadded.  This module runs :class:`~psfmatch.ModelPsfMatchTask`
over a list of exposure files on a Dask cluster (``dask.distributed``; an
embedded :class:`~distributed.LocalCluster` by default, or the user's own
cluster), and coadds the matched exposures tile by tile with ``dask.array``.

Matching many exposures (:func:`match_many`)
---------------------------------------------
Each input file becomes one Dask task that runs :func:`match_one` on a worker:
the worker reads the exposure from its path (only the path, the configuration
and the reference PSF travel from the client), matches it, and writes
``outdir/<input file name>`` atomically (a temporary file renamed into place).
A failure on one exposure is caught and recorded in its
:class:`ExposureReport` (path, error type, message, traceback); the others go on.

Resuming.  Every output carries a *completion marker* in its primary header,
written in the same atomic write as the pixels:

============  ===============================================================
card          value
============  ===============================================================
``BATCHVER``  version of the marker (currently 1)
``BATCHFPR``  fingerprint of the input: ``stat:<size>:<mtime_ns>`` (default)
              or ``sha256:<first 48 hex digits of the SHA-256 of its bytes>``
``BATCHCFG``  SHA-256 (40 hex digits) of the configuration (its values and
              which fields were set explicitly) and ``kernelSum``
``BATCHREF``  SHA-256 (40 hex digits) of the reference PSF (type, repr, and
              kernel images at its average position and on a 3 x 3 grid
              1024 px apart around it)
``BATCHPSF``  only when a science PSF was given for the input (``psf=``,
              ``psfmatch batch --psf``): its SHA-256, as ``BATCHREF``'s
``BATCHOK``   ``T``: the output is complete
============  ===============================================================

A re-run skips an input only when its output exists, opens as a psfmatch
exposure file, holds every HDU a matched file has (IMAGE, MASK, VARIANCE, PSF,
METADATA: a file cut at an HDU boundary is caught too), its FITS checksums
verify (a tile-compressed output's, those of its tables of compressed tiles
too), its image, mask and variance planes have one shape, and the marker
matches the current input (and fingerprint mode), configuration, reference PSF
and given science PSF (:func:`check_matched_output`).  A missing, truncated, corrupt, foreign or
stale output is redone (and replaced).

Choosing the reference PSF (:func:`choose_reference_psf`)
----------------------------------------------------------
When no reference is given, a round Gaussian (or double Gaussian) is chosen
that is broader than every science PSF along every axis, so that no match is
a deconvolution.  The adaptive second moments ``C = [[Ixx, Ixy], [Ixy, Iyy]]``
of every exposure's PSF are measured on a ``grid x grid`` lattice of positions
spanning its bounding box (corners included), and ``lambda_max`` is the
largest eigenvalue of ``C`` over all exposures and positions (the squared
sigma of the broadest axis, not the determinant radius, so an elongated PSF is
not deconvolved along its long axis).  The reference sigma is

    sigma_ref**2 = (1 + margin)**2 * lambda_max + floor**2

with ``margin = 0.1`` and ``floor = 0.7`` px by default: the matching kernel
then has a sigma of at least ``sqrt((2 margin + margin**2) lambda_max + floor**2)
>= floor`` along its narrowest axis, no narrower than the narrowest default
Alard-Lupton basis Gaussian (0.7 px), so the kernel is well sampled and well
represented by the basis.  For a double Gaussian the *core* gets
``sigma_ref`` (the wing, ``sigma2 = wing_ratio * sigma1``, is broader still,
so the kernel is a positive mix of two Gaussians).  The choice and the
evidence (where the broadest PSF is) are returned as a :class:`ReferencePsfChoice`
and recorded in the batch report and in every matched file's metadata.

Coadding (:func:`coadd`)
------------------------
Exposures on one pixel grid (same shape, origin ``xy0`` and WCS, as after
warping) and in one image unit, each given once, are combined pixel by pixel
with inverse-variance weights ``w = 1 / V``.  A pixel of an input is
*excluded* when it has ``NO_DATA`` or one of the planes the caller names set,
or a non-finite image or variance value, or a variance ``<= 0``.  Over the contributing inputs::

    image    = sum(w I) / sum(w)
    variance = 1 / sum(w)
    mask     = bitwise AND of the contributing inputs' masks

so a plane is set in the coadd only where *every* contributing input has it
(e.g. a star saturated in all of them); where no input contributes the pixel
is ``NaN`` with infinite variance and exactly ``NO_DATA`` set.  Mask planes are
combined by name (inputs with different plane registries are remapped onto
the first input's registry, extended with any new names).  The work is done
in square tiles (``dask.array``, threaded scheduler) that read only their
window of each input and write straight into the (memory-mapped) output file,
so memory is bounded by the tile size, not by the mosaic size or the number
of inputs (whole-file-compressed inputs, ``.fits.gz``, are first decompressed
once each into a temporary folder beside the output).  The output is a
psfmatch exposure file carrying the inputs' common (reference) PSF.

Examples
--------
>>> from psfmatch.batch import match_many, coadd                  # doctest: +SKIP
>>> reports = match_many(paths, "auto", "matched/")                # doctest: +SKIP
>>> print(reports.summary())                                       # doctest: +SKIP
>>> coadd(reports.output_paths(), "coadd.fits")                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import numbers
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field

import numpy as np

from .calib import CALIBRATION_CARDS, PHOTO_CALIB_KEYS, RATE_ZERO_POINT_CARDS, ZERO_POINT_CARDS, is_rate_unit
from .config import ModelPsfMatchConfig
from .errors import (GridMismatchError, InvalidInputError, MissingDependencyError, PsfMatchError,
                     SchedulerUnreachableError, UnsupportedFormatError)
from .geom import Box2I, Point2D, _finite_real, _is_real, as_point
from .image import Exposure, Mask
from .parallel import catch_warnings

__all__ = [
    "match_many",
    "match_one",
    "choose_reference_psf",
    "survey_psf",
    "coadd",
    "check_matched_output",
    "dask_client",
    "input_fingerprint",
    "output_path_for",
    "ExposureReport",
    "BatchReport",
    "ReferencePsfChoice",
    "CoaddReport",
    "GridMismatchError",
    "SchedulerUnreachableError",
    "MATCHED",
    "SKIPPED",
    "FAILED",
    "COMPLETE",
    "RUNNING",
    "INTERRUPTED",
    "BATCH_FAILED",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MARGIN",
    "DEFAULT_FLOOR",
    "WORKER_MALLOC_ENV",
]

log = logging.getLogger(__name__)

MATCHED = "matched"
SKIPPED = "skipped"
FAILED = "failed"

#: ``state`` of a :class:`BatchReport`: every input was dealt with (matched, skipped or failed).
COMPLETE = "complete"
#: ``state`` of the report written when a batch starts matching; one left on disk after the run ended
#: means the process was killed.
RUNNING = "running"
#: ``state`` of the report of a batch that stopped early (interrupted, or its cluster lost): a re-run finishes it.
INTERRUPTED = "interrupted"
#: ``state`` of the report of a batch stopped by an error that a re-run of the same command cannot fix (no PSF to
#: choose an automatic reference from, say); its ``note`` carries the error and its remedy.
BATCH_FAILED = "failed"

#: Seconds :func:`dask_client` waits for a scheduler given by its address (Dask's own default is 30 s).
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Default fractional margin of the automatic reference sigma over the broadest science PSF axis.
DEFAULT_MARGIN = 0.1

#: Widest stamp (px) the automatic reference may have (as a PSFEx model's, :data:`psfmatch.psf.psfex.MAX_STAMP_SIZE`).
MAX_REFERENCE_STAMP = 4095
#: Default additive floor (pixels, added in quadrature) of the automatic reference sigma.
DEFAULT_FLOOR = 0.7

MARKER_VERSION = 1
_MARKER_KEYS = ("BATCHVER", "BATCHFPR", "BATCHCFG", "BATCHREF", "BATCHOK")
#: Marker card of an output matched with a science PSF given for its input (``psf=``, ``--psf``); absent otherwise.
_PSF_KEY = "BATCHPSF"
_METADATA_KEY = "psfmatchBatch"


# ---------------------------------------------------------------------------
# reports


@dataclass
class ExposureReport:
    """What happened to one input of :func:`match_many`.

    Attributes
    ----------
    path : str
        The input file (absolute).
    status : {"matched", "skipped", "failed"}
        ``skipped``: a complete and valid output from an earlier run was kept.
    output : str or None
        The matched file (None when the input failed).
    reason : str
        Why it was matched (``output missing``, ``stale output: ...``, ``forced``)
        or skipped (``complete``).
    error_type, error_message : str or None
        For a failure: the exception's class name and message.
    traceback : str or None
        For a failure: the formatted traceback (from the worker).
    qa : dict or None
        The task's QA summary (kernel, candidates, solve, residuals at and
        between candidates; :func:`psfmatch.qa.format_report` formats it).
        For a skipped input it is read back from the output file.
    timings : dict
        Seconds spent: ``check`` (validating an existing output), ``read``,
        ``match``, ``write`` and ``total`` (on the worker).
    warnings : list of str
        Warning log records (``psfmatch`` loggers) emitted while matching, and
        the Python warnings (``"IllPosedMatchWarning: ..."``) when the task ran
        in the main thread or in a single-threaded worker alone in its process
        (``warnings.catch_warnings`` is process-global, not thread-safe).  In a
        worker that shares its process with other threads (several workers of
        ``Client(processes=False)``, or several threads per worker) the Python
        warnings are left to the usual display, and the report holds the log
        records (``"WARNING: ..."``) of this exposure's task only: psfmatch
        logs what it warns of, and a truncated reference PSF, which it only
        warns of, is noted in ``qa["notes"]``.
    worker : str or None
        The Dask worker that ran it (None when run in-process).
    psf : str or None
        The science PSF given for this input (its SPEC, or the model's repr);
        None when the file's own PSF was used.
    kernel_sum : float or None
        The ``kernelSum`` it was matched with (with a target zero point, the one
        its own zero point gave; for a skipped input, the one its output records);
        None when it failed before that was known.
    """

    path: str
    status: str
    output: str | None = None
    reason: str = ""
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    qa: dict | None = None
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    worker: str | None = None
    psf: str | None = None
    kernel_sum: float | None = None

    @property
    def ok(self) -> bool:
        """True when the input is matched (now or by an earlier run)."""
        return self.status in (MATCHED, SKIPPED)

    def to_dict(self) -> dict:
        """A JSON-serializable mapping of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> ExposureReport:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(d).items() if k in names})

    def qa_text(self) -> str:
        """The QA summary as text (:func:`psfmatch.qa.format_report`), or ``""`` without QA."""
        if not self.qa:
            return ""
        from .qa import format_report

        try:
            return format_report(self.qa)
        except Exception:  # a partial QA record from an older file
            return json.dumps(self.qa.get("qa", {}), sort_keys=True)

    def line(self) -> str:
        """One line: status, file name and the main number or the error."""
        name = os.path.basename(self.path)
        if self.status == FAILED:
            return f"{self.status:8s} {name}: {self.error_type}: {_one_line(self.error_message)}"
        extra = ""
        q = (self.qa or {}).get("qa", {})

        def worst(key):  # of the candidates and the held-out positions, as the flags are judged
            values = [v for v in (q.get(w, {}).get(key) for w in ("candidates", "between"))
                      if v is not None and not (isinstance(v, float) and math.isnan(v))]
            return max(values) if values else None

        residual, aperture = worst("residualMaxWorst"), worst("apertureFluxMismatchWorst")
        if residual is not None:
            extra = f", worst max|S*K-R|/peak {residual:.2e}"
        if aperture is not None:
            extra += f", aperture flux {aperture:.1e}"
        if q.get("flags"):
            extra += f", flags {','.join(q['flags'])}"
        if self.kernel_sum is not None and self.kernel_sum != 1.0:  # (a zero point's, or --kernel-sum's)
            extra += f", kernelSum {self.kernel_sum:.6g}"
        t = self.timings.get("total")
        tt = f" in {t:.1f} s" if t is not None else ""
        return f"{self.status:8s} {name}{tt} ({self.reason}{extra})"


class BatchReport(list):
    """The reports of a :func:`match_many` call, one :class:`ExposureReport` per input, in input order.

    A ``list`` with a few more attributes and helpers.

    Attributes
    ----------
    outdir : str
        The output directory.
    reference : dict
        The reference PSF used (``repr``) and, when it was chosen automatically,
        the :class:`ReferencePsfChoice` record.
    engine : dict
        The Dask set-up: scheduler address, number of workers, threads, memory
        limit per worker, whether the cluster was started for the call, and
        times: ``startup_time`` (cluster start and worker warm-up),
        ``jobs_time`` (first submission to last result, the automatic
        reference survey excluded) and ``shutdown_time``.
    wall_time : float
        Seconds for the whole call (cluster start-up included).
    settings : dict
        What the call matched with: the configuration (``config``, its values;
        ``explicitFields``; ``configHash``, the marker's ``BATCHCFG``),
        ``kernelSum``, ``zeroPoint`` (None, or the target zero point; each
        report's ``kernel_sum`` is then its own), ``fingerprint``, ``force`` and ``sciencePsf`` (None: each
        file's own PSF; the PSF given for every input; or ``"per input"``).
    state : {"complete", "running", "interrupted", "failed"}
        ``complete``: every input was dealt with.  ``running``: the report written
        when the batch started matching (it replaces an earlier report; one found
        after the run ended means the process was killed).  ``interrupted``: the
        batch stopped early (``KeyboardInterrupt``, a lost cluster); the reports are
        those of the inputs done by then, and a re-run of the same command finishes
        it.  ``failed``: an error that a re-run of the same command cannot fix stopped
        the batch (e.g. no input's PSF could be surveyed for an automatic reference);
        the ``note`` gives the error and its remedy.
    pending : list of str
        The inputs not dealt with (all of them while ``running``).
    note : str
        For a report that is not ``complete``: what happened, and the remedy.
    """

    def __init__(self, reports=(), *, outdir="", reference=None, engine=None, wall_time=float("nan"), settings=None,
                 state=COMPLETE, pending=(), note=""):
        super().__init__(reports)
        self.outdir = outdir
        self.reference = reference or {}
        self.engine = engine or {}
        self.wall_time = wall_time
        self.settings = settings or {}
        self.state = state
        self.pending = list(pending)
        self.note = note

    def by_status(self, status) -> list:
        return [r for r in self if r.status == status]

    @property
    def matched(self) -> list:
        return self.by_status(MATCHED)

    @property
    def skipped(self) -> list:
        return self.by_status(SKIPPED)

    @property
    def failed(self) -> list:
        return self.by_status(FAILED)

    @property
    def ok(self) -> bool:
        """True when every input is matched (now or by an earlier run)."""
        return all(r.ok for r in self)

    @property
    def flagged(self) -> list:
        """The reports of the inputs matched (now or by an earlier run) whose QA raised flags."""
        return [r for r in self if r.ok and ((r.qa or {}).get("qa") or {}).get("flags")]

    def output_paths(self) -> list:
        """The matched files of the inputs that did not fail, in input order."""
        return [r.output for r in self if r.ok]

    def to_dict(self) -> dict:
        """A JSON-serializable mapping; ``pending`` and ``note`` (and a ``pending`` count) only when not complete."""
        d = {"state": self.state, "outdir": self.outdir, "reference": self.reference, "engine": self.engine,
             "settings": self.settings, "wallTime": self.wall_time,
             "counts": {s: len(self.by_status(s)) for s in (MATCHED, SKIPPED, FAILED)},
             "exposures": [r.to_dict() for r in self]}
        if self.state != COMPLETE:
            d["counts"]["pending"] = len(self.pending)
            d.update(pending=self.pending, note=self.note)
        return d

    def write_json(self, path) -> None:
        """Write ``to_dict`` as JSON, atomically (replacing an existing file)."""
        _write_json_atomic(self.to_dict(), path)

    def summary(self) -> str:
        """A human-readable summary: counts, the reference, and one line per failure."""
        n = len(self)
        lines = [f"psfmatch batch: {n} exposure(s): {len(self.matched)} matched, {len(self.skipped)} skipped "
                 f"(already complete), {len(self.failed)} failed; {self.wall_time:.1f} s on "
                 f"{self.engine.get('n_workers', '?')} worker(s)"]
        ref = self.reference
        if ref:
            choice = ref.get("choice") or {}
            how = f" (chosen automatically: {choice['rule']})" if choice.get("rule") else ""
            lines.append(f"reference PSF: {ref.get('repr')}{how}")
            left_out = ref.get("surveyFailures") or choice.get("failures") or []
            if ref.get("kept"):
                lines.append(f"  {ref['kept']}")
            if left_out:
                names = "; ".join(f"{f.get('path')} ({f.get('error_type')})" for f in left_out)
                lines.append(f"  not surveyed for the reference: {len(left_out)} input(s): {names}")
        for r in self.failed:
            lines.append(f"  FAILED {r.path}: {r.error_type}: {_one_line(r.error_message)}")
        flagged = self.flagged
        if flagged:
            lines.append(f"flagged by their QA: {len(flagged)} exposure(s) (their PSF is not the reference where "
                         "flagged; see each one's warnings):")
            for r in flagged:
                lines.append(f"  FLAGGED {r.path}: {', '.join(map(str, r.qa['qa']['flags']))}")
        return "\n".join(lines)

    def __repr__(self):
        return (f"BatchReport({len(self)} exposures: {len(self.matched)} matched, {len(self.skipped)} skipped, "
                f"{len(self.failed)} failed)")


def _write_json_atomic(data, path) -> None:
    """Write ``data`` as strict JSON to ``path`` atomically (a temporary file renamed into place).

    NaN and inf (a QA number whose moments failed) become null: other tools' JSON parsers (jq,
    JavaScript's) refuse Python's ``NaN``.
    """
    from .display import json_safe
    from .io.fits import atomic_write

    text = json.dumps(json_safe(data), indent=1, sort_keys=True, allow_nan=False)
    with atomic_write(path, overwrite=True) as tmp, open(tmp, "w") as fh:
        fh.write(text + "\n")


def _one_line(text, limit=300) -> str:
    """``text`` on one line, cut to ``limit`` characters (None: whole)."""
    text = " ".join(s.strip() for s in str(text or "").splitlines() if s.strip())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------
# file helpers (built on psfmatch.io)


def _read_exposure(path, **kwargs) -> Exposure:
    reader = getattr(Exposure, "readFits", None)
    if callable(reader):
        return reader(path, **kwargs)
    from .io.fits import read_exposure

    return read_exposure(path, **kwargs)


def _science_psf(psf):
    """A science PSF given for an input, as a model: a SPEC (text) is read as ``psfmatch run --psf`` reads it."""
    if isinstance(psf, (str, os.PathLike)):
        from .cli import parse_psf_spec

        return parse_psf_spec(os.fspath(psf), role="science PSF (--psf)")
    return psf


def _missing_psf(path):
    """The :class:`~psfmatch.errors.MissingPsfError` of an input file that carries no PSF: the file and the remedy."""
    from .errors import MissingPsfError
    from .io.fits import unread_psf_note

    return MissingPsfError(
        f"{path} carries no PSF model{unread_psf_note(path)}; give its PSF with psfmatch batch --psf FILE|SPEC (one "
        "for every input), or as a second column of --input-list (one per input); in Python, match_many(psf=...)")


def _psf_label(psf):
    """How a science PSF given for an input is recorded: its SPEC, or the model's repr (None: the file's own)."""
    if psf is None:
        return None
    return os.fspath(psf) if isinstance(psf, (str, os.PathLike)) else repr(psf)


def _write_exposure(exposure, path, overwrite) -> None:
    writer = getattr(exposure, "writeFits", None)
    if callable(writer):
        writer(path, overwrite=overwrite)
        return
    from .io.fits import write_exposure

    write_exposure(exposure, path, overwrite=overwrite)


def output_path_for(path, outdir) -> str:
    """The matched file of input ``path``: ``outdir/<input file name>`` (absolute)."""
    return os.path.join(os.path.abspath(os.fspath(outdir)), os.path.basename(os.fspath(path)))


def input_fingerprint(path, mode="stat") -> str:
    """A short string that changes when the input file changes.

    Parameters
    ----------
    path : str or path-like
    mode : {"stat", "sha256"}
        ``stat``: size and modification time in ns (cheap); ``sha256``: a hash
        of the bytes (robust to touching or copying, reads the whole file).

    Returns
    -------
    str
        ``stat:<size>:<mtime_ns>`` or ``sha256:<48 hex digits>``.
    """
    path = os.fspath(path)
    if mode == "stat":
        st = os.stat(path)
        return f"stat:{st.st_size}:{st.st_mtime_ns}"
    if mode == "sha256":
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()[:48]
    raise InvalidInputError(f"fingerprint must be 'stat' or 'sha256'; got {mode!r}")


def _explicit_fields(config) -> list:
    """The paths of the fields set explicitly to their default values: what ``to_dict`` does not tell.

    A field set to another value shows in the values already; one set explicitly to its default
    looks the same there, yet ``autoKernel`` honours it.  (A configuration without such fields
    hashes as it did before this was recorded, so earlier outputs stay complete.)
    """
    from .config import iter_fields

    fresh = iter_fields(type(config)(), all_choices=True)
    return sorted(path for (path, _, value, explicit), (_, _, default, _) in zip(iter_fields(config, all_choices=True),
                                                                              fresh)
                  if explicit and value == default)


def _json_config(d):
    """``Config.to_dict`` with its non-finite floats as the strings ``"inf"``, ``"-inf"`` and ``"nan"``, which
    ``ModelPsfMatchConfig.from_dict`` reads back (strict JSON would make them null)."""
    if isinstance(d, dict):
        return {k: _json_config(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_json_config(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return repr(d)
    return d


def _config_hash(config, kernel_sum, zero_point=None) -> str:
    """A hash of everything in the configuration that can change a result: the values, ``kernelSum``
    (or the target zero point) and which fields were set explicitly (``autoKernel`` honours a field set
    to its default value)."""
    state = {"config": config.to_dict(), "kernelSum": float(kernel_sum)}
    if zero_point is not None:  # (absent without one: the hash of earlier versions)
        state["zeroPoint"] = float(zero_point)
    explicit = _explicit_fields(config)
    if explicit:  # (absent for a default configuration: the hash of earlier versions)
        state["explicit"] = explicit
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


#: Offsets (px) from a reference PSF's average position of the kernel images :func:`_psf_hash` digests.
_HASH_OFFSETS = tuple((dx, dy) for dy in (-1024.0, 0.0, 1024.0) for dx in (-1024.0, 0.0, 1024.0))


def _psf_hash(psf) -> str:
    """A digest of a reference PSF model, telling whether an earlier output was matched to this one.

    The model's type and repr, and its kernel images at its average position and on a 3 x 3 grid
    1024 px apart around it (:data:`_HASH_OFFSETS`): a spatially varying model whose repr and
    central image stay the same is still told apart (the higher terms of a PSFEx model vanish at
    its ``POLZERO``, its average position).  A position where the model raises counts as such.
    """
    h = hashlib.sha256()
    h.update(type(psf).__qualname__.encode())
    h.update(repr(psf).encode())
    try:
        x0, y0 = as_point(psf.getAveragePosition() if callable(getattr(psf, "getAveragePosition", None))
                          else (0.0, 0.0))
    except Exception:  # the repr alone then
        return h.hexdigest()[:40]
    for dx, dy in _HASH_OFFSETS:
        try:
            img = np.ascontiguousarray(psf.computeKernelImage(Point2D(x0 + dx, y0 + dy)), dtype=np.float64)
        except Exception as exc:  # (outside the model's domain, say): the same model raises the same way
            h.update(f"<{type(exc).__name__}>".encode())
            continue
        h.update(str(img.shape).encode())
        h.update(img.tobytes())
    return h.hexdigest()[:40]


def _marker(fingerprint, config_hash, ref_hash, psf_hash=None) -> dict:
    """The marker cards of an output; ``BATCHPSF`` only for a science PSF given for the input."""
    marker = {"BATCHVER": MARKER_VERSION, "BATCHFPR": fingerprint, "BATCHCFG": config_hash, "BATCHREF": ref_hash}
    if psf_hash is not None:
        marker[_PSF_KEY] = psf_hash
    return marker


def _fingerprint_mode(fingerprint) -> str:
    """The mode of a ``BATCHFPR`` value (``stat``, ``sha256``): the text before its first colon."""
    return str(fingerprint).partition(":")[0]


def _psf_change(stored, now) -> str:
    """Why the science PSF of an output (``BATCHPSF``: ``stored``) differs from the one given now (``now``)."""
    if stored is None:
        return "stale output: a science PSF is given now (--psf), the output was matched with the file's own"
    if now is None:
        return "stale output: the output was matched with a given science PSF (--psf), now with the file's own"
    return "stale output: science PSF (--psf) changed"


def _checksum_fails(hdu) -> bool:
    """Whether ``hdu`` carries a CHECKSUM or DATASUM card that its bytes do not match."""
    return bool(("CHECKSUM" in hdu.header and hdu.verify_checksum() == 0)
                or ("DATASUM" in hdu.header and hdu.verify_datasum() == 0))


def _output_hdus() -> tuple:
    """The HDUs every output of :func:`match_one` has, in file order: a file lacking one was cut short.

    :func:`psfmatch.io.write_exposure` always writes the three planes and the ``METADATA`` table, and
    a matched exposure always carries the reference PSF (its ``PSF`` HDU).
    """
    from .io.psf_persist import EXTNAME as PSF_EXTNAME

    return ("IMAGE", "MASK", "VARIANCE", PSF_EXTNAME, "METADATA")


#: Fragments of astropy's warnings about a damaged file: one cut short (``File may have been truncated``),
#: a header without ``END`` (``There may be extra bytes after the last HDU or the file is corrupted``).
_DAMAGE_WARNINGS = ("truncat", "extra bytes", "corrupt")


def check_matched_output(out_path, marker=None):
    """Whether ``out_path`` is a complete and valid output of :func:`match_one`.

    Parameters
    ----------
    out_path : str or path-like
        The matched file.
    marker : dict, optional
        The expected marker cards (``BATCHVER``, ``BATCHFPR``, ``BATCHCFG``,
        ``BATCHREF``, and ``BATCHPSF`` when a science PSF is given for the
        input); when None only completeness is checked.

    Returns
    -------
    ok : bool
        False also for a file cut short anywhere, at an HDU boundary too (every HDU of
        a matched file, :func:`_output_hdus`, must be present and whole), or one whose
        reading makes astropy warn of truncation or damage.
    reason : str
        ``complete``, or what is wrong (``output missing``, ``unreadable ...``,
        ``no completion marker ...``, ``incomplete output ...``, ``corrupt output ...``,
        ``stale output: input changed``, ``stale output: fingerprint mode changed (stat -> sha256)``
        ...).
    record : dict or None
        The batch record stored in the file's metadata (with the QA summary)
        when the file could be read.
    """
    from astropy.io import fits

    from .errors import CorruptFileError
    from .io.fits import FORMAT_NAME, prescan_fits

    out_path = os.fspath(out_path)
    if not os.path.exists(out_path):
        return False, "output missing", None
    record = None
    try:
        with open(out_path, "rb") as fh:  # a file ending inside a header or a data unit (astropy only warns)
            prescan_fits(fh, out_path)
    except CorruptFileError as exc:
        return False, f"corrupt output ({_one_line(exc)})", None
    except OSError as exc:
        return False, f"unreadable output ({type(exc).__name__}: {_one_line(exc)})", None
    try:
        # warnings.catch_warnings is process-global: only where no other thread can be inside it
        ctx = warnings.catch_warnings(record=True) if _sole_thread() else contextlib.nullcontext([])
        with ctx as caught:
            if _sole_thread():
                warnings.simplefilter("always")
            with fits.open(out_path, memmap=False) as hdul:
                primary = hdul[0].header
                if str(primary.get("PMFORMAT", "")).strip() != FORMAT_NAME:
                    return False, "foreign file (not a psfmatch exposure file)", None
                if primary.get("BATCHOK") is not True or any(k not in primary for k in _MARKER_KEYS):
                    return False, "no completion marker (not written by psfmatch batch)", None
                names = [h.name.upper() for h in hdul]
                lost = [name for name in _output_hdus() if name not in names]
                if lost:
                    return False, f"incomplete output: no {', '.join(lost)} HDU (the file was cut short)", None
                shapes = []
                for name in ("IMAGE", "MASK", "VARIANCE"):
                    data = hdul[name].data
                    if data is None or data.ndim != 2:
                        return False, f"incomplete output: {name} holds no 2-d data", None
                    shapes.append(data.shape)
                if len(set(shapes)) != 1:
                    return False, f"inconsistent output: plane shapes {shapes}", None
                for i, h in enumerate(hdul):  # every HDU is read and its checksums verified
                    _ = h.data
                    if _checksum_fails(h):
                        return False, f"corrupt output (checksum of HDU {i} {h.name!r} fails)", None
                if any(isinstance(h, fits.CompImageHDU) for h in hdul):
                    # a tile-compressed plane's checksums are those of its table of compressed tiles, which
                    # astropy shows only with the compression disabled
                    with fits.open(out_path, memmap=False, disable_image_compression=True) as raw:
                        for i, h in enumerate(raw):
                            if isinstance(h, fits.BinTableHDU) and h.header.get("ZIMAGE") is True:
                                _ = h.data
                                if _checksum_fails(h):
                                    return False, f"corrupt output (checksum of HDU {i} {h.name!r} fails)", None
                try:
                    from .io.fits import _metadata_from_hdu

                    record = _metadata_from_hdu(hdul["METADATA"], out_path).get(_METADATA_KEY)
                except Exception:
                    record = None
                stored = {k: primary.get(k) for k in (*_MARKER_KEYS, _PSF_KEY)}
        bad = [_one_line(w.message) for w in caught if any(k in str(w.message).lower() for k in _DAMAGE_WARNINGS)]
        if bad:
            return False, f"corrupt output ({bad[0]})", None
    except Exception as exc:
        return False, f"unreadable output ({type(exc).__name__}: {_one_line(exc)})", None
    if marker is not None:
        if stored["BATCHVER"] != marker["BATCHVER"]:
            return False, f"stale output: marker version {stored['BATCHVER']} (now {marker['BATCHVER']})", record
        if stored["BATCHFPR"] != marker["BATCHFPR"]:
            then, now = _fingerprint_mode(stored["BATCHFPR"]), _fingerprint_mode(marker["BATCHFPR"])
            if then != now:  # (the input cannot be compared: its fingerprint was taken another way)
                return False, f"stale output: fingerprint mode changed ({then} -> {now})", record
            return False, "stale output: input changed", record
        if stored["BATCHCFG"] != marker["BATCHCFG"]:
            return False, "stale output: configuration or kernelSum changed", record
        if stored["BATCHREF"] != marker["BATCHREF"]:
            return False, "stale output: reference PSF changed", record
        if stored[_PSF_KEY] != marker.get(_PSF_KEY):
            return False, _psf_change(stored[_PSF_KEY], marker.get(_PSF_KEY)), record
    return True, "complete", record


# ---------------------------------------------------------------------------
# one exposure (runs on a worker)


_QA_KEYS = ("kernelBasisSet", "kernelSize", "spatialModelType", "spatialKernelOrder", "spatialKernelOrderRequested",
            "psfSize", "nCandidatesUsed", "nCandidatesBuilt", "nCandidatesRejected", "nUniqueCandidates",
            "spatialSolutionRank", "nSpatialUnknowns", "spatialConditionNum", "spatialKernelSum", "kernelSum",
            "qa", "notes", "fitTime", "convolveTime", "runTime")


def _qa_summary(metadata) -> dict:
    out = {k: metadata[k] for k in _QA_KEYS if k in metadata}
    return json.loads(json.dumps(out, default=str))


class _LogCollector(logging.Handler):
    """Collect the WARNING+ records of this thread (one exposure's task) from the ``psfmatch`` loggers."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        self.thread = threading.get_ident()

    def emit(self, record):
        if record.thread != self.thread:
            return
        try:
            self.messages.append(f"{record.levelname}: {record.getMessage()}")
        except Exception:  # pragma: no cover
            pass


def _sole_thread() -> bool:
    """Whether this task may capture warnings (``warnings.catch_warnings`` is process-global, not thread-safe).

    True in the main thread outside Dask, or on a Dask worker with a single
    thread that has its process to itself: the only ``distributed.Worker`` in
    it, and no ``Client`` there (a ``LocalCluster``'s worker processes, a
    ``dask worker`` process).  Workers started in the caller's process
    (``Client(processes=False)``) are threads beside each other and beside the
    caller's, one thread each or not: False, as whenever this is not certain.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except Exception:  # not on a Dask worker (or no distributed)
        return threading.current_thread() is threading.main_thread()
    if getattr(getattr(worker, "state", None), "nthreads", None) != 1:
        return False
    try:
        from distributed import Client, Worker

        return len(Worker._instances) == 1 and len(Client._instances) == 0
    except Exception:  # (a distributed without these registries: not certain)
        return False


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:
        return None


def match_one(path, referencePsfModel, out_path, config=None, *, kernelSum=1.0, force=False,
              fingerprint="stat", reference_record=None, psf=None, zeroPoint=None) -> ExposureReport:
    """Match one exposure file and write the result atomically; never raises for a bad input file.

    This is the function :func:`match_many` runs on the Dask workers; it can
    also be called directly (it needs no Dask).

    Parameters
    ----------
    path : str or path-like
        The input exposure file (read with :func:`psfmatch.io.read_exposure`;
        it must carry a PSF).
    referencePsfModel : PSF model
        The target PSF.
    out_path : str or path-like
        The matched file to write.
    config : ModelPsfMatchConfig, optional
    kernelSum : float
        Passed to :meth:`ModelPsfMatchTask.run`.
    force : bool
        Redo the match even when ``out_path`` is complete and valid.
    fingerprint : {"stat", "sha256"}
        How the input is fingerprinted for the completion marker (``input_fingerprint``).
    reference_record : dict, optional
        How the reference was chosen; stored in the output's metadata.
    psf : PSF model, str or None
        The exposure's PSF, when the file carries none (or to replace its own):
        a model, or a SPEC read as ``psfmatch run --psf`` reads it
        (:func:`psfmatch.cli.parse_psf_spec`: ``psfex:FILE``, ``FILE``,
        ``gaussian:sigma=2``...).  Its hash is part of the completion marker
        (``BATCHPSF``), so another PSF redoes the output.
    zeroPoint : float, optional
        Put the matched exposure on this zero point instead of giving
        ``kernelSum`` (:meth:`ModelPsfMatchTask.run`'s ``zeroPoint``: the
        ``kernelSum`` comes from the exposure's own zero point, which the report's
        ``kernel_sum`` and the output's metadata record).  An exposure whose zero
        point cannot be read fails.

    Returns
    -------
    ExposureReport
        ``matched``, ``skipped`` (the output was complete and valid) or
        ``failed`` (the exception's type, message and traceback are recorded,
        nothing is written).

    Raises
    ------
    InvalidInputError
        If ``path`` or ``out_path`` is not a file path (None, a number...):
        there is no file to report on.
    """
    from .io.fits import as_path

    t_start = time.perf_counter()
    path = os.path.abspath(as_path(path, "match_one's path"))
    out_path = os.path.abspath(as_path(out_path, "match_one's out_path"))
    report = ExposureReport(path=path, status=FAILED, worker=_worker_name(), psf=_psf_label(psf))
    timings = report.timings
    collector = _LogCollector()
    pm_logger = logging.getLogger("psfmatch")
    pm_logger.addHandler(collector)
    try:
        from .task import ModelPsfMatchTask

        from .io.fits import check_input_file

        from .task import checked_kernel_sum, checked_zero_point

        config = ModelPsfMatchConfig() if config is None else config
        kernelSum = checked_kernel_sum(kernelSum)  # (a typed failure, before the marker is made from it)
        zeroPoint = checked_zero_point(zeroPoint, kernelSum)
        t = time.perf_counter()
        check_input_file(path, "exposure")  # MissingFileError / UnsupportedFormatError, before os.stat
        science = _science_psf(psf)  # (read before the check: a changed PSF file makes the output stale)
        marker = _marker(input_fingerprint(path, fingerprint), _config_hash(config, kernelSum, zeroPoint),
                         _psf_hash(referencePsfModel), None if science is None else _psf_hash(science))
        reason = "forced"
        if not force:
            ok, reason, record = check_matched_output(out_path, marker)
            timings["check"] = time.perf_counter() - t
            if ok:
                report.status, report.output, report.reason = SKIPPED, out_path, reason
                report.qa = (record or {}).get("qa")
                stored = (record or {}).get("kernelSum")
                report.kernel_sum = float(stored) if _finite_real(stored) else None
                return report
        t = time.perf_counter()
        exposure = _read_exposure(path) if science is None else _read_exposure(path, psf=science)
        timings["read"] = time.perf_counter() - t
        if not exposure.hasPsf():
            raise _missing_psf(path)
        if zeroPoint is not None:  # (run() reads it again: this names the file in the report's error)
            from .calib import kernel_sum_for_zero_point

            kernel_sum_for_zero_point(exposure.getMetadata(), zeroPoint, path)
        t = time.perf_counter()
        task = ModelPsfMatchTask(config=config)
        if _sole_thread():  # record the warnings in the report
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = task.run(exposure, referencePsfModel, kernelSum=kernelSum, zeroPoint=zeroPoint)
            report.warnings.extend(f"{w.category.__name__}: {w.message}" for w in caught)
        else:  # threads share the warnings machinery: leave warnings to the usual display
            result = task.run(exposure, referencePsfModel, kernelSum=kernelSum, zeroPoint=zeroPoint)
        timings["match"] = time.perf_counter() - t
        del exposure
        out = result.psfMatchedExposure
        qa = _qa_summary(result.metadata)
        out.metadata[_METADATA_KEY] = {
            "input": path, "inputFingerprint": marker["BATCHFPR"], "configHash": marker["BATCHCFG"],
            "referenceHash": marker["BATCHREF"], "reference": reference_record or {"repr": repr(referencePsfModel)},
            "config": config.to_dict(), "explicitFields": _explicit_fields(config),
            "kernelSum": float(result.metadata["kernelSum"]), "qa": qa,
        }
        if zeroPoint is not None:
            out.metadata[_METADATA_KEY]["zeroPoint"] = result.metadata["zeroPoint"]
        if science is not None:
            out.metadata[_METADATA_KEY]["sciencePsf"] = {"given": _psf_label(psf), "repr": repr(science),
                                                         "hash": marker[_PSF_KEY]}
        from astropy.io import fits

        header = out.metadata.get("fitsHeader")
        header = fits.Header() if header is None else (header.copy() if isinstance(header, fits.Header)
                                                      else fits.Header(header))
        for key in _MARKER_KEYS:
            header.remove(key, ignore_missing=True, remove_all=True)
        header["BATCHVER"] = (marker["BATCHVER"], "psfmatch batch completion marker version")
        header["BATCHFPR"] = marker["BATCHFPR"]  # the values are long: no comments
        header["BATCHCFG"] = marker["BATCHCFG"]
        header["BATCHREF"] = marker["BATCHREF"]
        header.remove(_PSF_KEY, ignore_missing=True, remove_all=True)  # (an input that is itself a batch output)
        if _PSF_KEY in marker:
            header[_PSF_KEY] = marker[_PSF_KEY]
        header["BATCHOK"] = (True, "psfmatch batch output complete")
        out.metadata["fitsHeader"] = header
        t = time.perf_counter()
        _write_exposure(out, out_path, overwrite=True)
        timings["write"] = time.perf_counter() - t
        report.status, report.output, report.reason, report.qa = MATCHED, out_path, reason, qa
        report.kernel_sum = float(result.metadata["kernelSum"])
    except Exception as exc:  # isolate the failure: record it, let the batch go on
        report.status = FAILED
        report.output = None
        report.error_type = type(exc).__name__
        report.error_message = str(exc) or type(exc).__name__
        report.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:]
    finally:
        pm_logger.removeHandler(collector)
        # the task both warns and logs a warning: keep the log's copy only of what was not caught as a warning
        said = {w.split(": ", 1)[-1] for w in report.warnings}
        report.warnings.extend(m for m in collector.messages if m.split(": ", 1)[-1] not in said)
        timings["total"] = time.perf_counter() - t_start
    return report


def _match_task(job: dict) -> dict:
    """The Dask task: :func:`match_one` on a job mapping, returning a plain dict."""
    return match_one(job["path"], job["reference"], job["output"], job["config"], kernelSum=job["kernelSum"],
                     force=job["force"], fingerprint=job["fingerprint"],
                     reference_record=job.get("referenceRecord"), psf=job.get("psf"),
                     zeroPoint=job.get("zeroPoint")).to_dict()


# ---------------------------------------------------------------------------
# the Dask engine


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "psfmatch.batch needs Dask's distributed scheduler: pip install 'psfmatch[batch]' "
            "(or pip install 'dask[distributed]')") from None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _max_local_workers() -> int:
    """The most worker processes :func:`dask_client` starts on this machine: 8 per core, at least 64.

    Beyond that a local cluster only makes the processes contend (and a huge number would exhaust
    the memory while Dask builds the worker specifications).
    """
    return max(64, 8 * _cpu_count())


def _local_workers(n_workers) -> int:
    """``n_workers`` of the local cluster checked: an integer from 1 to :func:`_max_local_workers` (None: the cores)."""
    if n_workers is None:
        return _cpu_count()
    top = _max_local_workers()
    ok = isinstance(n_workers, numbers.Integral) and not isinstance(n_workers, bool) and 1 <= n_workers <= top
    if not ok:
        raise InvalidInputError(f"n_workers must be an integer from 1 to {top} (8 worker processes per core, at least "
                                f"64; this machine has {_cpu_count()} cores) or None for one per core; got "
                                f"{n_workers!r}; for more workers, start a cluster of your own and pass client=")
    return int(n_workers)


def _check_client(client) -> None:
    """Refuse a ``client`` that is none of what :func:`dask_client` takes (before any work)."""
    if client is None or isinstance(client, str) or hasattr(client, "submit") \
            or isinstance(getattr(client, "scheduler_address", None), str):
        return
    raise InvalidInputError(f"client must be a distributed.Client, a cluster, a scheduler address or None; got "
                            f"{type(client).__name__}")


def _valid_num_threads(value) -> bool:
    """Whether ``$PSFMATCH_NUM_THREADS`` = ``value`` is one :func:`psfmatch.parallel.available_cores` honours."""
    value = (value or "").strip()
    return value.isascii() and value.isdigit() and int(value) > 0


def _default_memory_limit(n_workers) -> int:
    """85% of the memory available to this process (cgroup-aware, via Dask), shared by the workers."""
    from distributed.system import MEMORY_LIMIT

    return int(0.85 * MEMORY_LIMIT / max(1, n_workers))


@contextlib.contextmanager
def dask_client(client=None, *, n_workers=None, threads_per_worker=1, memory_limit=None,
                connect_timeout=DEFAULT_CONNECT_TIMEOUT):
    """A ``distributed.Client`` for a batch; starts (and stops) a ``LocalCluster`` when none is given.

    Parameters
    ----------
    client : distributed.Client, cluster, str or None
        An existing client (used as is, left open), a cluster object or the
        address of a running scheduler (``tcp://host:8786``; a client is
        opened and closed), or None to start a ``LocalCluster`` for the
        duration of the ``with`` block.
    n_workers : int, optional
        Workers of the local cluster (default: the number of cores available),
        at most 8 per core (at least 64 are allowed).
    threads_per_worker : int
        Threads per local worker (default 1: the task is CPU-bound numpy code;
        processes, not threads, give the parallelism).
    memory_limit : int or str, optional
        Memory limit *per worker* of the local cluster (bytes or ``"4GiB"``);
        default 85% of the available memory divided by ``n_workers``.
    connect_timeout : float
        Seconds to wait for a scheduler given by its address (default
        :data:`DEFAULT_CONNECT_TIMEOUT`, 10 s; also how long a lost connection
        is retried).

    Yields
    ------
    client : distributed.Client
    info : dict
        What was used (address, workers, threads, memory limit, start-up time, and
        ``psfmatch_threads``: the thread counts psfmatch uses inside the workers' tasks).

    Notes
    -----
    The embedded cluster's workers get Dask's usual one-thread BLAS/OpenMP
    settings, but glibc's ``MALLOC_MMAP_THRESHOLD_`` = 32 MiB and
    ``MALLOC_TRIM_THRESHOLD_`` = 128 MiB (``WORKER_MALLOC_ENV``) instead of
    Dask's ``MALLOC_TRIM_THRESHOLD_`` = 64 KiB: with the latter every large
    numpy temporary of the convolution is a fresh ``mmap`` and the page faults
    cost 30-50% more CPU per exposure (measured on 2048 x 2048 exposures:
    ~700 000 instead of ~65 000 minor page faults for three).  A worker
    may then keep up to ~128 MiB of freed heap.  Unless ``PSFMATCH_NUM_THREADS``
    is set to a positive integer, the workers also get ``PSFMATCH_NUM_THREADS`` = the
    cores left to each task (1 with one worker per core): psfmatch's own threads inside
    workers that already share the cores only contend (8 exposures of 2048 x
    2048 on 2 workers: 4.2 s instead of 4.5 s).  Another non-empty value (``abc``,
    ``0``) is replaced so, with one ``RuntimeWarning`` here (the workers would
    ignore it and use every core).  For your own cluster, set
    these variables in the workers' environment.

    The embedded cluster's worker processes ignore SIGINT once started, and so
    does a worker the nanny restarts later (after a crash; a worker plugin): a
    terminal's Ctrl-C, which reaches every process of its foreground group,
    interrupts the caller (a ``KeyboardInterrupt``; the cluster is then closed)
    instead of killing each worker with a traceback of its own.  This process's
    handler is never changed, so a Ctrl-C while the cluster starts still
    interrupts (the workers starting then may print tracebacks).

    Raises
    ------
    SchedulerUnreachableError
        If no scheduler answers at the address within ``connect_timeout``, also
        when something there accepts the connection but does not answer as a
        Dask scheduler (a dashboard's port, a hung scheduler: a hard deadline of
        ``connect_timeout`` plus a grace of at most 2 s); the message names the
        address and the remedies.
    InvalidInputError
        For a ``connect_timeout`` that is not a positive number.
    """
    _require_distributed()
    _check_client(client)
    connect_timeout = _connect_timeout(connect_timeout)
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    info = {}
    if client is None:
        n = _local_workers(n_workers)
        ml = memory_limit if memory_limit is not None else _default_memory_limit(n)
        env = dict(WORKER_MALLOC_ENV)
        value = os.environ.get("PSFMATCH_NUM_THREADS", "")
        if not _valid_num_threads(value):
            # the workers share the cores: psfmatch's own threads inside each would only contend
            env["PSFMATCH_NUM_THREADS"] = str(_worker_threads(n, int(threads_per_worker)))
            if value.strip():
                warnings.warn(f"PSFMATCH_NUM_THREADS={value.strip()!r} is not a positive integer: the local cluster's "
                              f"workers use {env['PSFMATCH_NUM_THREADS']} psfmatch thread(s) per task instead (the "
                              "cores left to each); set it to a positive integer or unset it", RuntimeWarning,
                              stacklevel=3)
        with _quiet_distributed(), _worker_spawn_env(env):
            cluster = None
            try:  # (the cluster is closed also when a Ctrl-C comes right after its start-up)
                cluster = LocalCluster(n_workers=n, threads_per_worker=int(threads_per_worker), processes=True,
                                       memory_limit=ml, dashboard_address=":0", silence_logs=logging.CRITICAL)
                with Client(cluster) as c:
                    c.wait_for_workers(n)
                    # (a plugin, so that a worker its nanny restarts later ignores SIGINT too)
                    register = getattr(c, "register_plugin", None) or c.register_worker_plugin
                    register(_ignore_sigint_plugin())
                    threads = c.run(_warm_worker)
                    info.update(started_cluster=True, scheduler=cluster.scheduler_address, n_workers=n,
                                threads_per_worker=int(threads_per_worker), memory_limit_per_worker=_bytes(ml),
                                psfmatch_threads=sorted(set(threads.values())),
                                startup_time=time.perf_counter() - t0)
                    yield c, info
            finally:
                if cluster is not None:
                    cluster.close()
        return
    if not hasattr(client, "submit") and isinstance(getattr(client, "scheduler_address", None), str):
        client = client.scheduler_address  # a cluster object (LocalCluster, SpecCluster, dask-jobqueue ...)
    if isinstance(client, str):
        with _connect(Client, client, connect_timeout) as c:
            threads = c.run(_warm_worker)
            info.update(started_cluster=False, scheduler=client, startup_time=time.perf_counter() - t0,
                        psfmatch_threads=sorted(set(threads.values())), **_cluster_info(c))
            yield c, info
        return
    threads = client.run(_warm_worker)
    info.update(started_cluster=False, scheduler=getattr(client.scheduler, "address", None),
                startup_time=time.perf_counter() - t0, psfmatch_threads=sorted(set(threads.values())),
                **_cluster_info(client))
    yield client, info


def _connect_timeout(value) -> float:
    """``connect_timeout`` of :func:`dask_client` checked: a finite number of seconds > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < float("inf")
    if not ok:
        raise InvalidInputError(f"connect_timeout must be a positive number of seconds; got {value!r}")
    return float(value)


def _connect(client_class, address, timeout):
    """A client connected to the scheduler at ``address``, or a :class:`SchedulerUnreachableError` naming it.

    The address is probed first under a hard deadline (:func:`_probe_scheduler`): distributed waits
    for the scheduler's handshake without a timeout, so a service that accepts the connection and
    says nothing (a dashboard's port, a hung scheduler) would hold the client forever.
    """
    _probe_scheduler(address, timeout)
    try:
        return client_class(address, timeout=timeout)
    except OSError as exc:  # (distributed: "Timed out trying to connect to ... after N s")
        raise _unreachable(address, timeout, exc) from exc


def _unreachable(address, timeout, exc=None, silent=False) -> SchedulerUnreachableError:
    """The error for a scheduler address that did not answer: the address, what happened, and the remedies.

    ``silent``: something accepted the connection but sent no Dask handshake within the deadline.
    """
    remedy = ("or give a longer timeout (psfmatch batch --scheduler-timeout, connect_timeout=); omit --scheduler "
              "(client=None) to start a local cluster instead")
    if silent:
        return SchedulerUnreachableError(
            f"something at {address} accepted the connection but did not answer as a Dask scheduler within "
            f"{timeout:g} s: check that this is the scheduler's address (dask scheduler prints it; not the "
            f"dashboard's port, 8787 by default) and that the scheduler is not hung, {remedy}")
    cause, why = exc, ""
    while cause is not None and not why:
        if isinstance(cause, ConnectionRefusedError):
            why = "connection refused"
        cause = cause.__cause__ or cause.__context__
    what = f"no Dask scheduler answered at {address} within {timeout:g} s" + (f" ({why})" if why else "")
    return SchedulerUnreachableError(f"{what}: check that the scheduler is running (dask scheduler prints its "
                                     f"address) and reachable from this machine, {remedy}")


def _probe_scheduler(address, timeout) -> None:
    """Raise :class:`SchedulerUnreachableError` unless a Dask scheduler answers at ``address`` in time.

    Opens one connection with ``distributed.comm.connect`` (the client's default security settings)
    under ``asyncio.wait_for``, a hard deadline that covers the scheduler's handshake too, and closes
    it.  It runs in an event loop of its own, on a thread of its own (the caller's thread may run a
    loop already, as in Jupyter).  An error other than a timeout or an ``OSError`` (TLS settings
    from a security loader, say) is left to the client, which reports it.
    """
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    # distributed's connect gives up retrying at `timeout`; a wait past it (and a grace) is the handshake's
    deadline = timeout + min(2.0, max(0.5, 0.25 * timeout))
    outcome = {}

    async def probe():
        args = Security().get_connection_args("client")
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **args), deadline)
        await comm.close()

    def run():
        try:
            asyncio.run(probe())
        except asyncio.TimeoutError:
            outcome["silent"] = True
        except OSError as exc:
            outcome["error"] = exc
        except Exception:  # left to the client
            pass

    thread = threading.Thread(target=run, name="psfmatch-scheduler-probe", daemon=True)
    with _quiet_distributed(logging.CRITICAL):  # (an abandoned handshake's stream is closed with a warning)
        thread.start()
        thread.join(deadline + 5.0)  # (a name lookup that hangs holds asyncio.run's executor shutdown)
    if thread.is_alive():
        raise _unreachable(address, timeout)
    if outcome.get("silent"):
        raise _unreachable(address, timeout, silent=True)
    if "error" in outcome:
        exc = outcome["error"]
        raise _unreachable(address, timeout, exc) from exc


#: glibc malloc settings of the embedded cluster's worker processes (see :func:`dask_client`).
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(128 * 2 ** 20), "MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20)}


def _worker_threads(n_workers, threads_per_worker) -> int:
    """psfmatch threads per task on an embedded cluster: the cores left to each task, at least 1."""
    return max(1, _cpu_count() // max(1, n_workers * threads_per_worker))


@contextlib.contextmanager
def _worker_spawn_env(env):
    """Set environment variables while worker processes are spawned (they inherit them), then restore."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_distributed(level=logging.ERROR):
    """Keep the embedded cluster's scheduler and nanny chatter (start-up and shutdown) off the caller's log."""
    logger = logging.getLogger("distributed")
    saved = logger.level
    if logger.getEffectiveLevel() < level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def _ignore_sigint_plugin():
    """A worker plugin by which each worker of the embedded cluster, and each one its nanny restarts later,
    ignores SIGINT: a terminal's Ctrl-C reaches every process of its group, and the client handles it.

    The plugin's ``setup`` runs in the worker's main thread (its event loop's), the only one that
    may change a handler.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class IgnoreSigint(WorkerPlugin):
        name = "psfmatch-ignore-sigint"

        def setup(self, worker):
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    return IgnoreSigint()


def _warm_worker():
    """Import what a task needs, once per worker process (so that the first exposure is not charged for it)."""
    import astropy.io.fits
    import astropy.wcs  # noqa: F401

    from . import io, task  # noqa: F401
    from .io import psf_persist  # noqa: F401
    from .parallel import available_cores

    return available_cores()


def _bytes(ml):
    """A memory limit in bytes, for the record; a fraction of the machine's memory (<= 1) as given."""
    try:
        if 0.0 <= float(ml) <= 1.0:
            return ml
    except (TypeError, ValueError):
        pass
    if isinstance(ml, (int, float)):
        return int(ml)
    try:
        from dask.utils import parse_bytes

        return int(parse_bytes(ml))
    except Exception:
        return ml


def _cluster_info(client) -> dict:
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed
        workers = client.scheduler_info()["workers"]
    except Exception:
        return {}
    return {"n_workers": len(workers), "threads_per_worker": sorted({w.get("nthreads") for w in workers.values()}),
            "memory_limit_per_worker": sorted({w.get("memory_limit") for w in workers.values()})}


class _Progress:
    """Progress of a batch: a bar on a terminal, a log line per exposure otherwise, or a callback."""

    def __init__(self, total, mode):
        self.total, self.done = total, 0
        self.callback = mode if callable(mode) else None
        if mode is None:
            mode = "bar" if _isatty(sys.stderr) else "log"
        elif mode is True:
            mode = "bar"
        self.mode = "callback" if self.callback else (mode or "off")
        self._bar = None
        if self.mode == "bar":
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="psfmatch batch", unit="exp", file=sys.stderr, leave=True)
            except ImportError:
                self._draw()

    def _draw(self):
        width = 30
        filled = int(round(width * self.done / max(1, self.total)))
        sys.stderr.write(f"\rpsfmatch batch [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        sys.stderr.flush()

    def update(self, report: ExposureReport):
        self.done += 1
        if self.mode == "callback":
            self.callback(report, self.done, self.total)
        elif self.mode == "bar":
            if self._bar is not None:
                self._bar.update(1)
            else:
                self._draw()
        elif self.mode == "log":
            log.info("[%d/%d] %s", self.done, self.total, report.line())

    def close(self):
        if self.mode == "bar":
            if self._bar is not None:
                self._bar.close()
            else:
                sys.stderr.write("\n")
                sys.stderr.flush()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _file_id(path):
    """``(st_dev, st_ino)`` of the file at ``path`` (through symbolic links), or None when nothing is there."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _path_list(paths, what) -> list:
    """``paths`` (one path, or an iterable of paths) as a list of absolute path strings.

    Raises
    ------
    InvalidInputError
        If ``paths`` is neither a path nor an iterable (None, a number), or one
        of its items is not a path (the message names ``what[i]``).
    """
    from .io.fits import as_path

    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    try:
        items = iter(paths)
    except TypeError:
        raise InvalidInputError(f"{what} must be a file path or a sequence of file paths; got "
                                f"{'None' if paths is None else type(paths).__name__}; pass e.g. "
                                "['a.fits', 'b.fits']") from None
    return [os.path.abspath(as_path(p, f"{what}[{i}]")) for i, p in enumerate(items)]


def _check_paths(paths, outdir):
    """The inputs as absolute paths, once no two of them are the same file (also through symbolic or
    hard links), none of their outputs would replace one of them (through links too) or another's
    output, and ``outdir`` is not a file.

    One ``stat`` per input and per existing output: an output that does not exist yet cannot be an
    input (which exists), and one that exists is the same file as an input exactly when their
    device and inode agree (a shared filesystem answers 20,000 of these in seconds, where resolving
    every path component took minutes).
    """
    paths = _path_list(paths, "paths")
    if not paths:
        raise InvalidInputError("no input exposures were given")
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise InvalidInputError(f"outdir {outdir} exists and is not a directory; give a directory for the matched "
                                "files (it is created if needed)")
    inputs = {}
    for p in paths:
        fid = _file_id(p)
        if fid is not None:
            if fid in inputs:
                _refuse_same_file(inputs[fid], p)
            inputs[fid] = p
    check_outputs = os.path.isdir(outdir)
    seen = {}
    for p in paths:
        out = output_path_for(p, outdir)
        same = inputs.get(_file_id(out)) if check_outputs else None
        if out == p or same is not None:
            raise InvalidInputError(f"the output {out} of {p} would overwrite the input {same or p} (the same file, "
                                    f"also through a symbolic link): choose an outdir other than {os.path.dirname(p)}")
        if out in seen:
            if seen[out] == p:
                raise InvalidInputError(f"input {p} is given twice")
            raise InvalidInputError(f"inputs {seen[out]} and {p} have the same file name; their outputs would "
                                    f"both be {out} (rename one, or run them into different outdirs)")
        seen[out] = p
    return paths


def _refuse_same_file(first, other):
    """Refuse ``other`` when it is not ``first`` itself but the same file on disk (a symbolic or hard link).

    An exposure reached by two paths would be matched twice and count twice in a coadd (its
    variance halved as if two independent exposures had been combined).
    """
    if first == other:
        raise InvalidInputError(f"input {other} is given twice; give each exposure once")
    raise InvalidInputError(f"inputs {first} and {other} are the same file (a symbolic or hard link to it); give "
                            "each exposure once")


def _check_extra_output(path, what, inputs, outdir=None):
    """Refuse a file to write (a report, a coadd) that is one of ``inputs`` or of their outputs in ``outdir``.

    Parameters
    ----------
    path : str or path-like
        The file to be written.
    what : str
        What it is, for the message (``"report_path"``, ``"--coadd"``).
    inputs : sequence of str or path-like
        The input exposures.
    outdir : str or path-like, optional
        The output directory of :func:`match_many` (``outdir/<input file name>``).

    Raises
    ------
    InvalidInputError
        If ``path`` names (also through a symbolic or hard link) an input, an
        output, or a directory.

    Notes
    -----
    Outputs not written yet are compared by name, with the two folders' symbolic
    links resolved once; files that exist, by device and inode (a ``stat`` per
    input only when ``path`` exists).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InvalidInputError(f"{what} {path} is a directory; give the name of a file to write")
    resolved = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    if outdir is not None and os.path.realpath(outdir) == os.path.dirname(resolved):
        for p in inputs:
            if os.path.basename(os.fspath(p)) == os.path.basename(path):
                raise InvalidInputError(f"{what} {path} would overwrite the matched file of {p}; give another file "
                                        "name")
    fid = _file_id(path)
    if fid is not None:
        for p in inputs:
            if _file_id(p) == fid:
                raise InvalidInputError(f"{what} {path} would overwrite the input {p}; give another file name")
            if outdir is not None and _file_id(output_path_for(p, outdir)) == fid:
                raise InvalidInputError(f"{what} {path} would overwrite the matched file of {p}; give another file "
                                        "name")


def match_many(paths, referencePsfModel, outdir, config=None, client=None, *, kernelSum=1.0, n_workers=None,
               threads_per_worker=1, memory_limit=None, force=False, fingerprint="stat", progress=None,
               report_path=None, reference_options=None, psf=None, connect_timeout=DEFAULT_CONNECT_TIMEOUT,
               write_final_report=True, require_same_grid=False, zeroPoint=None,
               require_same_calibration=False) -> BatchReport:
    """PSF-match many exposure files on Dask, writing ``outdir/<input file name>`` for each.

    Parameters
    ----------
    paths : sequence of str or path-like
        The input exposure files (each must carry a PSF; see
        :func:`psfmatch.io.read_exposure`).  File names must be unique.
        Workers read them, so on a remote cluster they (and ``outdir``) must
        be on a file system the workers see.
    referencePsfModel : PSF model, "auto" or None
        The target PSF; ``"auto"`` or None chooses one with
        :func:`choose_reference_psf` (options in ``reference_options``).
    outdir : str or path-like
        Output directory (created if needed, before the cluster starts; it must
        accept new files).
    config : ModelPsfMatchConfig, optional
        Sent to the workers by value.
    client : distributed.Client, str or None
        An existing Dask client, a scheduler address, or None to start a
        ``LocalCluster`` for the call (``n_workers`` worker processes, default
        the number of cores, ``threads_per_worker`` threads each and an
        explicit ``memory_limit`` per worker; see :func:`dask_client`).
    kernelSum : float
        Passed to :meth:`ModelPsfMatchTask.run`.
    zeroPoint : float, optional
        Put every matched exposure on this photometric zero point (magnitudes)
        instead of giving ``kernelSum``: each exposure's own zero point ``Z`` is
        read from its header (``MAGZERO``, ``FLUXMAG0``, ``photoCalib``...:
        :func:`psfmatch.calib.zero_point`) and it is matched with ``kernelSum =
        10**(0.4 * (zeroPoint - Z))`` (:meth:`ModelPsfMatchTask.run`'s
        ``zeroPoint``; each report's ``kernel_sum`` says which).  The inputs' zero
        points are read from their headers before any is matched: a batch with an
        input whose zero point cannot be read is refused.
    n_workers, threads_per_worker, memory_limit
        For the local cluster only (``n_workers``: at most 8 per core, at least 64
        allowed; see :func:`dask_client`).
    force : bool
        Redo every input, even those whose output is complete and valid.
    fingerprint : {"stat", "sha256"}
        How inputs are fingerprinted in the completion marker.
    progress : None, bool, "log" or callable
        None: a progress bar when standard error is a terminal, else one log
        line (logger ``psfmatch.batch``, level INFO) per completed exposure;
        True: a bar; False: nothing; a callable is called as
        ``progress(report, n_done, n_total)`` after each exposure.
    report_path : str or path-like, optional
        Also write the :class:`BatchReport` as JSON there (atomically, each
        time): once the cluster is up and before any exposure is matched, a
        report marked ``running`` replaces an earlier one (so that it is never
        taken for this run's; one still ``running`` after the call ended means
        the process was killed); when the call stops early (``KeyboardInterrupt``,
        a lost cluster), one marked ``interrupted`` with the inputs done and
        those pending (a re-run finishes the batch); when an error that a re-run
        cannot fix stops it (a :class:`~psfmatch.errors.PsfMatchError` such as no
        PSF to choose an automatic reference from), one marked ``failed`` whose
        ``note`` gives the error and its remedy; at the end the final report
        (``complete``).  It must not be a file that a ``psf`` SPEC names.
    reference_options : dict, optional
        Keyword arguments of :func:`choose_reference_psf` for ``"auto"``.
    psf : PSF model, str, sequence or None
        The science PSF of inputs that carry none (or to replace their own):
        one model or SPEC (read as ``psfmatch run --psf`` reads it,
        :func:`psfmatch.cli.parse_psf_spec`) for every input, or a sequence with
        one entry per input (None: that file's own PSF).  A SPEC naming a file
        is read on the worker (a missing file fails that input only).  The PSF
        is part of the completion marker and of the automatic reference's survey.
    connect_timeout : float
        Seconds to wait for a scheduler given by its address (``client``).
    write_final_report : bool
        False leaves the final report to the caller (:meth:`BatchReport.write_json`;
        ``psfmatch batch`` shows the summary first); the ``running`` and
        ``interrupted`` ones are still written to ``report_path``.
    require_same_grid : bool
        The matched exposures are to be coadded (:func:`coadd`): refuse inputs
        that are not on one pixel grid (shape, origin ``xy0``, WCS; the coadd's
        rules), from their headers, before any is matched (``outdir`` is not
        created).  Inputs that cannot be read are left to their matches.
    require_same_calibration : bool
        The matched exposures are to be coadded with :func:`coadd`'s
        ``require_same_calibration``: refuse, from the headers and before any
        is matched, inputs whose matched files would carry different
        calibrations (``MAGZERO``... once rescaled by ``kernelSum`` or brought to
        ``zeroPoint``), which the coadd would refuse after every match.

    Returns
    -------
    BatchReport
        One :class:`ExposureReport` per input, in input order.

    Raises
    ------
    InvalidInputError
        No inputs, an input that is not a file path (None...), duplicate file names, one file given twice (also as a
        symbolic or hard link to it), a ``zeroPoint`` that is not a finite number or is given with a
        ``kernelSum`` other than 1, or an input whose zero point cannot be read (with ``zeroPoint``), inputs
        whose matched files would carry different calibrations (with ``require_same_calibration``),
        an output (or ``report_path``) that
        would overwrite an input or a file that a ``psf`` SPEC names (also
        through a symbolic or hard link), a ``referencePsfModel`` or ``psf``
        that is a PSF class rather than a model (``GaussianPsf``), an
        ``outdir`` that is empty, a file, a symbolic link to nothing or under a
        file, ``reference_options`` that :func:`choose_reference_psf` does not
        take, an ``n_workers`` or ``connect_timeout`` out of range, or a ``psf``
        that is not a PSF model or SPEC (or a sequence of a length other than
        the inputs').
    GridMismatchError
        With ``require_same_grid``, if an input's grid differs from the first
        readable input's (the message names it, what differs and the remedies).
    SchedulerUnreachableError
        If no scheduler answers at the address ``client`` within ``connect_timeout``.
    OutputNotWritableError
        If ``outdir`` cannot be created or accepts no new file (no permission, a
        read-only file system): before the cluster starts.
    MissingDependencyError
        If ``dask[distributed]`` is not installed (before ``outdir`` is created).

    Notes
    -----
    Failures of single exposures never raise: they are recorded (path, error
    type, message, traceback) and the batch goes on; a worker that dies (for
    example killed at its memory limit) is recorded the same way (a
    ``KilledWorker``, whose message then names the memory limit per worker and
    the remedies).  The summary is not logged: show ``report.summary()``.  A re-run
    skips the inputs whose outputs are complete and valid (see the module
    docstring), so an interrupted batch resumes where it stopped.  When a
    stale output is redone and the redo fails, the stale file is left in place
    but not reported as an output (``report.output`` is None) and it is redone
    again by the next run.
    """
    t0 = time.perf_counter()
    started = time.time()  # (wall clock: compared with the files' modification times)
    outdir = _outdir_path(outdir)
    paths = _check_paths(paths, outdir)
    if report_path is not None:
        from .io.fits import as_path

        report_path = as_path(report_path, "match_many's report_path")
        _check_extra_output(report_path, "report_path", paths, outdir)
    config = ModelPsfMatchConfig() if config is None else config
    if not isinstance(config, ModelPsfMatchConfig):
        raise InvalidInputError(f"config must be a ModelPsfMatchConfig; got {type(config).__name__}")
    config = config.copy()
    config.validate()
    if fingerprint not in ("stat", "sha256"):
        raise InvalidInputError(f"fingerprint must be 'stat' or 'sha256'; got {fingerprint!r}")
    from .task import checked_kernel_sum, checked_zero_point

    kernelSum = checked_kernel_sum(kernelSum)
    zeroPoint = checked_zero_point(zeroPoint, kernelSum)
    auto = referencePsfModel is None or (isinstance(referencePsfModel, str) and referencePsfModel == "auto")
    if not auto and not callable(getattr(referencePsfModel, "computeKernelImage", None)):
        raise InvalidInputError(f"referencePsfModel must be a PSF model, 'auto' or None; got "
                                f"{type(referencePsfModel).__name__}")
    if not auto:
        from .psf.base import as_psf

        as_psf(referencePsfModel, "referencePsfModel")  # (a class, GaussianPsf for GaussianPsf(...), is refused)
    reference_options = _check_reference_options(reference_options)
    psfs = _science_psfs(psf, len(paths))
    _check_spared_files(paths, outdir, _psf_files(psfs, paths, psf), report_path=report_path)
    _require_distributed()  # what can fail before the cluster starts, before outdir is made
    _check_client(client)
    connect_timeout = _connect_timeout(connect_timeout)
    if client is None:
        _local_workers(n_workers)
    grids = paths
    if require_same_grid:  # (last: it opens every input)
        grids = _check_coadd_grid(paths, "match_many(require_same_grid=True)",
                                  "pass require_same_grid=False to match them without a coadd")
    if zeroPoint is not None or require_same_calibration:  # (the headers again: the grid check's when it ran)
        _check_batch_calibration(grids, f"match_many(zeroPoint={zeroPoint})" if zeroPoint is not None and not
                                 require_same_calibration else "match_many(require_same_calibration=True)",
                                 zero_point=zeroPoint, kernel_sum=kernelSum, require_same=require_same_calibration)
    _make_outdir(outdir)
    settings = {"config": _json_config(config.to_dict()), "explicitFields": _explicit_fields(config),
                "configHash": _config_hash(config, kernelSum, zeroPoint), "kernelSum": float(kernelSum),
                "zeroPoint": zeroPoint,
                "fingerprint": fingerprint, "force": bool(force), "sciencePsf": _science_psf_setting(psf)}
    reports = [None] * len(paths)  # (filled as the exposures finish: an interrupted run reports those done)
    reference = {}

    def partial_report(state, note, engine):
        done = [r for r in reports if r is not None]
        pending = [p for p, r in zip(paths, reports) if r is None]
        return BatchReport(done, outdir=outdir, reference=reference, engine=engine, settings=settings,
                           wall_time=time.perf_counter() - t0, state=state, pending=pending, note=note)

    with dask_client(client, n_workers=n_workers, threads_per_worker=threads_per_worker,
                     memory_limit=memory_limit, connect_timeout=connect_timeout) as (c, engine):
        if report_path is not None:  # before any work: an earlier run's report must not pass for this one's
            partial_report(RUNNING, _running_note(), engine).write_json(report_path)
        try:
            if auto:
                choice = choose_reference_psf(paths, client=c, psfs=psfs, **reference_options)
                referencePsfModel = choice.psf
                reference.update({"repr": repr(choice.psf), "choice": choice.to_dict()})
                earlier = _earlier_reference(paths, outdir, choice, reference_options) if choice.failures else None
                if earlier is not None:  # (an input the survey could not read must not narrow the night's reference)
                    referencePsfModel, record, n_outputs = earlier
                    reference.update({"repr": repr(referencePsfModel), "choice": record,
                                      "surveyFailures": choice.failures,
                                      "kept": f"kept from {n_outputs} complete output(s) rather than the rule's "
                                              f"sigma = {choice.sigma:.4g} px without the input(s) that could "
                                              f"not be surveyed"})
                    log.warning("reference PSF: %s kept from %d earlier output(s) rather than %s chosen without %s "
                                "(not surveyed)", referencePsfModel, n_outputs, choice.psf,
                                ", ".join(f["path"] for f in choice.failures))
                else:
                    log.info("reference PSF chosen automatically: %s (%s)", choice.psf, choice.rule)
            else:
                reference.update({"repr": repr(referencePsfModel)})
            t_jobs = time.perf_counter()
            _run_jobs(c, paths, referencePsfModel, outdir, config, kernelSum, force, fingerprint, progress,
                      reference, engine, psfs=psfs, reports=reports, zero_point=zeroPoint)
            engine["jobs_time"] = time.perf_counter() - t_jobs
            _remove_stale_temporaries([output_path_for(p, outdir) for p in paths], started)
        except BaseException as exc:  # Ctrl-C, a lost cluster, an error...: say so in the report, with what was done
            if report_path is not None:
                n_done = sum(r is not None for r in reports)
                what = f"{type(exc).__name__}{': ' + _one_line(exc) if str(exc) else ''}"
                if _rerun_finishes(exc):
                    state = INTERRUPTED
                    note = (f"this batch stopped after {n_done} of {len(paths)} exposure(s) ({what}); re-run the "
                            "same command to finish it (the complete outputs are skipped)")
                else:
                    state = BATCH_FAILED
                    when = ("before any exposure was matched" if n_done == 0
                            else f"after {n_done} of {len(paths)} exposure(s)")
                    what = f"{type(exc).__name__}: {_one_line(exc, None)}"  # (whole: the remedy comes last)
                    note = (f"this batch failed {when}: {what}; re-running the same command fails the same way: "
                            "do what the error says, then run the batch again")
                try:
                    partial_report(state, note, engine).write_json(report_path)
                except Exception as write_exc:  # (the interruption is what the caller must see)
                    log.warning("could not write the report of the %s batch to %s: %s", state, report_path,
                                _one_line(write_exc))
            raise
        t_close = time.perf_counter()
    engine["shutdown_time"] = time.perf_counter() - t_close
    out = BatchReport(reports, outdir=outdir, reference=reference, engine=engine,
                      wall_time=time.perf_counter() - t0, settings=settings)
    # (the summary is the caller's to show, out.summary(): psfmatch batch prints it, so not logged here too)
    log.debug("match_many done: %r in %.1f s", out, out.wall_time)
    if report_path is not None and write_final_report:
        out.write_json(report_path)
    return out


def _remove_stale_temporaries(outputs, before) -> list:
    """Remove the temporary files that writers of ``outputs`` killed before ``before`` (a wall-clock time) left.

    :func:`~psfmatch.io.fits.atomic_write` writes ``.<name>.<random>.tmp`` beside each output and renames
    it into place; a process killed while writing (SIGKILL, a lost machine) leaves it, partial.  Once
    this batch's writers are done, every such file of its outputs last modified before the batch
    started is a dead writer's.  Returns the paths removed (logged).
    """
    from .io.fits import _COMPRESSED_SUFFIXES

    removed = []
    by_dir = {}
    for out in outputs:
        by_dir.setdefault(os.path.dirname(os.path.abspath(out)), set()).add(os.path.basename(out))
    for directory, names in by_dir.items():
        patterns = []
        for name in names:
            ext = os.path.splitext(name)[1].lower()
            suffix = ".tmp" + (ext if ext in _COMPRESSED_SUFFIXES else "")
            patterns.append(re.compile(re.escape("." + name + ".") + r"[A-Za-z0-9_]+" + re.escape(suffix)))
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(".") or not any(p.fullmatch(entry.name) for p in patterns):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < before:
                    os.unlink(entry.path)
                    removed.append(entry.path)
            except OSError as exc:  # (someone else's file, or gone already: left as it is)
                log.info("could not remove the temporary file %s: %s", entry.path, _one_line(exc))
    if removed:
        log.info("removed %d temporary file(s) that a killed run left: %s", len(removed), ", ".join(removed))
    return removed


def _earlier_reference(paths, outdir, choice, options):
    """The automatic reference the complete outputs of ``paths`` were matched to, when it may stand for ``choice``.

    ``choice`` was made without some inputs (its survey could not read them): a narrower reference than the
    one the night's outputs were matched to, which would have every complete output redone now, and again
    once the inputs are readable.  The reference recorded in the most outputs (a ``psfmatchBatch`` record
    with an automatic choice) is kept when its rule's parameters are ``choice``'s (kind, margin, floor,
    wing ratio, b, and the stamp when one was given) and its sigma is at least ``choice``'s, so that it is
    still broader than every PSF surveyed now.  Returns ``(psf, choice record, number of outputs)`` or None.
    """
    from astropy.io import fits

    from .io.fits import _metadata_from_hdu

    found = {}
    for p in paths:
        out = output_path_for(p, outdir)
        if not os.path.isfile(out):
            continue
        try:
            with catch_warnings("ignore"):
                with fits.open(out, memmap=False) as hdul:
                    if hdul[0].header.get("BATCHOK") is not True:
                        continue
                    record = _metadata_from_hdu(hdul["METADATA"], out).get(_METADATA_KEY) or {}
        except Exception:  # (an output that cannot be read is redone: nothing to learn from it)
            continue
        prev = (record.get("reference") or {}).get("choice")
        if isinstance(prev, dict) and record.get("referenceHash"):
            found.setdefault(record["referenceHash"], []).append(prev)
    if not found:
        return None
    records = max(found.values(), key=len)
    prev = records[0]
    try:
        kind, sigma, stamp = str(prev["kind"]), float(prev["sigma"]), int(prev["stamp"])
        sigma2 = b = None
        same = (kind == choice.kind and float(prev["margin"]) == choice.margin
                and float(prev["floor"]) == choice.floor and sigma >= choice.sigma
                and (options.get("stamp") is None or stamp == choice.stamp))
        if same and kind == "doublegaussian":
            sigma2, b = float(prev["sigma2"]), float(prev["b"])
            same = math.isclose(sigma2 / sigma, choice.sigma2 / choice.sigma, rel_tol=1e-12) and b == choice.b
        if not same:
            return None
        psf = _reference_psf(kind, stamp, sigma, sigma2, b)
    except (KeyError, TypeError, ValueError, PsfMatchError):
        return None
    return psf, prev, len(records)


def _rerun_finishes(exc) -> bool:
    """Whether a batch stopped by ``exc`` is finished by re-running the same command (its report: ``interrupted``).

    So it is for an interruption (``KeyboardInterrupt``, ``SystemExit``, a cancelled task) and for a
    lost cluster or engine (a connection error, ``OSError``, one of Dask's or Tornado's errors); not
    for psfmatch's own errors (:class:`~psfmatch.errors.PsfMatchError`: bad input, no PSF to choose
    an automatic reference from...) nor for other errors, which a re-run meets again.
    """
    if isinstance(exc, PsfMatchError):
        return False
    if not isinstance(exc, Exception) or isinstance(exc, (OSError, TimeoutError)):
        return True
    return type(exc).__module__.partition(".")[0] in ("distributed", "tornado", "asyncio", "concurrent")


def _psf_files(psfs, paths, given):
    """The files that the science PSFs of a batch name, as ``(path, what)`` pairs (each file once).

    ``psfs`` is :func:`_science_psfs`'s list (SPECs with absolute paths, models or None), ``given``
    the ``psf`` argument as the caller gave it (one PSF for every input, or one per input).
    """
    if psfs is None:
        return []
    from .cli import _spec_file

    single = isinstance(given, (str, os.PathLike)) or callable(getattr(given, "computeKernelImage", None))
    files = {}
    for path, spec in zip(paths, psfs):
        if isinstance(spec, str):
            file = _spec_file(spec)[0]
            if file is not None and file not in files:
                files[file] = ("the science PSF (psf=, --psf)" if single
                               else f"the science PSF of {path} (psf=, --psf or --input-list)")
    return [(file, what) for file, what in files.items()]


def _check_spared_files(paths, outdir, spared, report_path=None):
    """Refuse an output of the batch that would replace a file the batch reads (a science or reference PSF...).

    Parameters
    ----------
    paths : list of str
        The inputs (absolute); their outputs are ``outdir/<input file name>``.
    outdir : str
        The output directory (absolute).
    spared : sequence of (str or None, str)
        The files the outputs must not replace and what each is (for the message); None is skipped.
    report_path : str or path-like, optional
        The report, also refused when it is one of ``spared``.

    Raises
    ------
    InvalidInputError
        Naming the output, the file it would replace and the remedy, before any work.

    Notes
    -----
    A file is compared by name, the symbolic links of its folder and of ``outdir`` resolved (once a
    folder: a file not written yet cannot be told apart otherwise), and, when it exists, by device
    and inode (a hard link, or a symbolic link to it): one ``stat`` per input only when one exists.
    """
    spared = [(os.path.abspath(os.fspath(f)), what) for f, what in spared if f is not None]
    if not spared:
        return
    folders = {}

    def key(path):
        folder = os.path.dirname(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        return folders[folder], os.path.basename(path)

    by_name = {key(f): (f, what) for f, what in spared}
    by_id = {fid: (f, what) for f, what in spared for fid in [_file_id(f)] if fid is not None}
    real_outdir = os.path.realpath(outdir)
    check_ids = bool(by_id) and os.path.isdir(outdir)
    for p in paths:
        out = output_path_for(p, outdir)
        hit = by_name.get((real_outdir, os.path.basename(out)))
        if hit is None and check_ids:
            hit = by_id.get(_file_id(out))
        if hit is not None:
            raise InvalidInputError(f"the output {out} of {p} would overwrite {hit[1]} {hit[0]} (the same file, also "
                                    f"through a link), which the batch reads: give another outdir, or move that file "
                                    f"out of {outdir}")
    if report_path is not None:
        report = os.path.abspath(os.fspath(report_path))
        hit = by_name.get(key(report)) or by_id.get(_file_id(report))
        if hit is not None:
            raise InvalidInputError(f"report_path {report} would overwrite {hit[1]} {hit[0]} (the same file, also "
                                    "through a link), which the batch reads; give another file name for the report")


def _running_note() -> str:
    """The note of a ``running`` report: when, where and by which process the batch was started."""
    import platform

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return (f"this batch started at {started} (host {platform.node() or '?'}, process {os.getpid()}) and has not "
            "finished: if that process no longer runs, it was killed; re-run the same command to finish the batch "
            "(the complete outputs are skipped)")


def _science_psfs(psf, n) -> list | None:
    """``psf`` of :func:`match_many` as one entry per input (None: every file's own PSF).

    SPECs naming files are made absolute and read on the workers (which record them as given); a
    single SPEC is also read now, so that its errors come before any work (as the reference's), those
    of a sequence are checked for their syntax only.
    """
    def one(value, where):
        if value is None:
            return value
        if callable(getattr(value, "computeKernelImage", None)):
            from .psf.base import as_psf

            as_psf(value, f"psf{where}")  # (a class, GaussianPsf for GaussianPsf(...), is refused)
            return value
        if not isinstance(value, (str, os.PathLike)):
            raise InvalidInputError(f"psf{where} must be a PSF model, a SPEC (e.g. psfex:FILE) or None; got "
                                    f"{type(value).__name__}")
        from .cli import _spec_parts, parse_psf_spec

        text = os.fspath(value)
        parse_psf_spec(text, read_files=False, role=f"science PSF{where}")
        path, fmt, options = _spec_parts(text)  # (the reader's options, ",background=1000", kept)
        if path is None:
            return text
        return (f"{fmt}:" if fmt else "") + os.path.abspath(path) + options

    if psf is None:
        return None
    if isinstance(psf, (str, os.PathLike)) or callable(getattr(psf, "computeKernelImage", None)):
        given = one(psf, "")
        _science_psf(given)
        return [given] * n
    try:
        entries = list(psf)
    except TypeError:
        raise InvalidInputError(f"psf must be a PSF model, a SPEC, a sequence of them (one per input) or None; got "
                                f"{type(psf).__name__}") from None
    if len(entries) != n:
        raise InvalidInputError(f"psf has {len(entries)} entries for {n} inputs; give one per input (None for a "
                                "file's own PSF), or a single PSF for every input")
    entries = [one(value, f" of input {i}") for i, value in enumerate(entries)]
    return None if all(e is None for e in entries) else entries


def _science_psf_setting(psf):
    """``settings["sciencePsf"]`` of a report: None, the PSF given for every input, or ``"per input"``."""
    if psf is None or isinstance(psf, (str, os.PathLike)) or callable(getattr(psf, "computeKernelImage", None)):
        return _psf_label(psf)
    return "per input"


def _outdir_path(outdir) -> str:
    """``outdir`` of :func:`match_many` as an absolute path; an empty one is refused (not taken as ``.``)."""
    try:
        text = os.fsdecode(os.fspath(outdir))
    except TypeError:
        raise InvalidInputError(f"outdir must be a directory path; got {type(outdir).__name__}") from None
    if not text.strip():
        raise InvalidInputError(f"outdir is empty ({text!r}); give the directory for the matched files (it is "
                                "created if needed), e.g. 'matched'")
    return os.path.abspath(text)


def _make_outdir(outdir) -> None:
    """Create ``outdir`` (and its parents) if needed, and check that files can be created in it.

    Raises
    ------
    InvalidInputError
        If ``outdir`` is a symbolic link to nothing, or a folder on its path is a file.
    OutputNotWritableError
        If it cannot be created (no permission, a read-only file system...) or no file can be
        created in it: the matches would all fail at their writes.
    """
    from .io.fits import why_unwritable
    from .errors import OutputNotWritableError

    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        if os.path.islink(outdir) and not os.path.exists(outdir):
            raise InvalidInputError(f"outdir {outdir} is a symbolic link to {os.readlink(outdir)}, which does not "
                                    "exist; create its target directory or give another outdir") from None
        parent = os.path.dirname(outdir)
        while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if os.path.lexists(parent) and not os.path.isdir(parent):
            kind = ("a symbolic link to nothing" if not os.path.exists(parent) else
                    "a file" if os.path.isfile(parent) else "not a directory")
            raise InvalidInputError(f"outdir {outdir} cannot be created: {parent} on its path is {kind}; give an "
                                    "outdir in an existing directory") from None
        raise OutputNotWritableError(f"cannot create outdir {outdir} in {parent} ({exc.strerror or exc}); create it "
                                     "yourself, or give an outdir in a writable directory") from exc
    why = why_unwritable(outdir)
    if why:
        raise OutputNotWritableError(f"outdir {outdir} is not writable ({why}): no matched file could be written "
                                     "there; make it writable (chmod u+wx) or give another outdir")


def _check_reference_options(options) -> dict:
    """``reference_options`` of :func:`match_many` as a dict, once every key is a parameter of
    :func:`choose_reference_psf` (checked before the cluster starts, not when the survey runs)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidInputError(f"reference_options must be a dict of choose_reference_psf's keyword arguments; "
                                f"got {type(options).__name__}")
    import inspect

    allowed = [name for name, par in inspect.signature(choose_reference_psf).parameters.items()
               if par.kind == par.KEYWORD_ONLY and name not in ("client", "psfs")]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise InvalidInputError(f"reference_options {unknown} are not options of choose_reference_psf; it takes "
                                f"{', '.join(allowed)}")
    _reference_parameters(**options)  # their values too, before outdir and the cluster
    return dict(options)


def _run_jobs(client, paths, reference, outdir, config, kernel_sum, force, fingerprint, progress, ref_record,
              engine=None, psfs=None, reports=None, zero_point=None):
    """Run :func:`match_one` on every input; ``reports`` (one slot per input) is filled as they finish."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {}
    for i, p in enumerate(paths):
        job = {"path": p, "output": output_path_for(p, outdir), "reference": reference, "config": config,
               "kernelSum": float(kernel_sum), "force": bool(force), "fingerprint": fingerprint,
               "referenceRecord": ref_record, "psf": None if psfs is None else psfs[i], "zeroPoint": zero_point}
        key = f"psfmatch-match-{os.path.basename(p)[:60]}-{token}-{i}"
        fut = client.submit(_match_task, job, key=key, pure=False)
        futures[fut.key] = (i, fut)
    if reports is None:
        reports = [None] * len(paths)
    bar = _Progress(len(paths), progress)
    try:
        for fut in as_completed([f for _, f in futures.values()]):
            i = futures[fut.key][0]
            try:
                rep = ExposureReport.from_dict(fut.result())
            except Exception as exc:  # the engine failed on this one (worker died, unpicklable input...)
                rep = ExposureReport(path=paths[i], status=FAILED, reason="engine failure",
                                     psf=_psf_label(None if psfs is None else psfs[i]),
                                     error_type=type(exc).__name__, error_message=_engine_failure(exc, engine),
                                     traceback="".join(traceback.format_exception(type(exc), exc,
                                                                                  exc.__traceback__))[-8000:])
            reports[i] = rep
            fut.release()
            bar.update(rep)
    finally:
        bar.close()
        for _, f in futures.values():
            if not f.done():
                f.cancel()
    return reports


def _engine_failure(exc, engine=None) -> str:
    """The message recorded for an exposure whose task the engine could not run.

    A ``KilledWorker`` (every worker that ran the task died) is most often a worker killed at its
    memory limit: the message then names the limit per worker and the remedies.
    """
    text = str(exc) or type(exc).__name__
    if type(exc).__name__ != "KilledWorker":  # (distributed's class, recognised without importing it)
        return text
    engine = engine or {}
    limit = engine.get("memory_limit_per_worker")
    limits = [x for x in (limit if isinstance(limit, (list, tuple)) else [limit]) if x is not None]
    try:
        from dask.utils import format_bytes
    except ImportError:  # pragma: no cover - dask is there when a worker could be killed
        def format_bytes(n):
            return f"{n} bytes"

    def say(x):
        try:
            v = float(x)
        except (TypeError, ValueError):
            return str(x)
        if v == 0:
            return "no limit"
        return f"{v:g} of the machine's memory" if v <= 1 else format_bytes(int(v))

    said = [say(x) for x in limits]
    if said and all(x == "no limit" for x in said):
        why = "the workers have no memory limit, so most likely the machine ran out of memory"
    else:
        where = f"their memory limit of {' / '.join(said)} per worker" if said else "their memory limit"
        why = f"most likely they were killed at {where} (the exposure needs more)"
    if engine.get("started_cluster", True):
        remedy = ("raise the memory limit per worker (psfmatch batch --memory-limit, match_many(memory_limit=)) or "
                  "run fewer workers (--workers, n_workers=) so that each gets more memory")
    else:
        remedy = "give the cluster's workers more memory, or run fewer of them on each machine"
    # (first: the summary line shows only the start of a long message)
    return f"the workers that ran this exposure died: {why}; {remedy} (distributed: {text.strip()})"


# ---------------------------------------------------------------------------
# the automatic reference PSF


@dataclass
class ReferencePsfChoice:
    """The reference PSF chosen by :func:`choose_reference_psf`, with the evidence.

    Attributes
    ----------
    psf : GaussianPsf or DoubleGaussianPsf
        The reference model.
    kind : {"gaussian", "doublegaussian"}
    sigma : float
        Sigma (core sigma for a double Gaussian), pixels.
    sigma2, b : float or None
        Wing sigma and wing-to-core peak ratio of a double Gaussian.
    stamp : int
        Stamp width and height (odd).
    margin, floor : float
        The rule's parameters: ``sigma**2 = (1 + margin)**2 * lambda_max + floor**2``.
    lambda_max : float
        Largest eigenvalue of the science PSFs' adaptive-moment covariance over
        all exposures and positions, pixels squared.
    broadest : dict
        Where it was found: ``path``, ``x``, ``y``, ``ixx``, ``iyy``, ``ixy``.
    max_determinant_radius : float
        Largest adaptive-moment determinant radius seen (for information).
    n_exposures, n_positions : int
        How many exposures and positions were measured.
    failures : list of dict
        Exposures that could not be surveyed (path, error type, message); an
        in-memory one is named by its index and type (``"sources[2] (Exposure)"``).
    rule : str
        The rule in words.
    """

    psf: object
    kind: str
    sigma: float
    stamp: int
    margin: float
    floor: float
    lambda_max: float
    broadest: dict
    max_determinant_radius: float
    n_exposures: int
    n_positions: int
    sigma2: float | None = None
    b: float | None = None
    failures: list = field(default_factory=list)
    rule: str = ""

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "psf"}
        d["psf"] = repr(self.psf)
        return json.loads(json.dumps(d, default=str))


def _reference_psf(kind, stamp, sigma, sigma2=None, b=None):
    """The reference PSF of an automatic choice: a round Gaussian, or a double Gaussian (``sigma2``, ``b``)."""
    from .psf import DoubleGaussianPsf, GaussianPsf

    if kind == "gaussian":
        return GaussianPsf(stamp, stamp, sigma)
    return DoubleGaussianPsf(stamp, stamp, sigma, sigma2, b)


def _first_few(items, sep="; ", n=5) -> str:
    """The first ``n`` of ``items`` (strings) joined by ``sep``, and how many more there are."""
    items = list(items)
    return sep.join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _grid_positions(bbox: Box2I, grid: int):
    grid = max(1, int(grid))
    if grid == 1:
        c = bbox.getCenter()
        return [(float(c[0]), float(c[1]))]
    xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), grid)
    ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), grid)
    return [(float(x), float(y)) for y in ys for x in xs]


def _psf_and_bbox(path, psf=None):
    """The PSF (``psf`` when given: a model or SPEC) and the bounding box of an exposure file, reading the pixels
    only when needed."""
    from .io import read_exposure_info

    psf = _science_psf(psf)
    try:
        info = read_exposure_info(path, psf=psf is None)
        if info.layout == "psfmatch":
            return (info.psf if psf is None else psf), info.getBBox()
    except UnsupportedFormatError:
        pass  # a plain image: read_exposure finds its PSF (or says why not)
    exp = _read_exposure(path) if psf is None else _read_exposure(path, psf=psf)
    return exp.getPsf(), exp.getBBox()


def survey_psf(source, grid=5, psf=None) -> dict:
    """Adaptive second moments of an exposure's PSF over a grid of positions.

    Parameters
    ----------
    source : str, path-like, Exposure or (psf, Box2I)
        An exposure file, an exposure, or a PSF and the box it covers.
    grid : int
        ``grid x grid`` positions spanning the box (corners included).
    psf : PSF model, str or None
        For a file: its PSF when it carries none (or to replace its own), a
        model or a SPEC (as :func:`match_one`'s ``psf``).

    Returns
    -------
    dict
        ``path``, ``ok``, ``lambda_max`` (largest covariance eigenvalue, px^2),
        ``x``, ``y``, ``ixx``, ``iyy``, ``ixy`` (where it is largest),
        ``max_determinant_radius``, ``n_positions``, ``n_failed``; or
        ``ok = False`` with ``error_type`` and ``error_message``.
    """
    label = source if isinstance(source, (str, os.PathLike)) else type(source).__name__
    out = {"path": os.fspath(label) if isinstance(label, os.PathLike) else label, "ok": False}
    try:
        if isinstance(source, (str, os.PathLike)):
            psf, bbox = _psf_and_bbox(os.fspath(source), psf)
            if psf is None:
                raise _missing_psf(os.path.abspath(os.fspath(source)))
        elif isinstance(source, Exposure):
            psf, bbox = source.getPsf(), source.getBBox()
            if psf is None:
                from .errors import MissingPsfError

                raise MissingPsfError(f"the Exposure of box {bbox} does not contain a Psf model; attach its PSF "
                                      "(exposure.setPsf(psf)) or survey a (psf, exposure.getBBox()) pair instead")
        else:
            psf, bbox = source
        if psf is None:
            from .errors import MissingPsfError

            raise MissingPsfError(f"the (psf, bbox) pair of box {bbox} has psf None; give the PSF model as its "
                                  "first item")
        from .psf.base import as_psf

        psf = as_psf(psf)
        best = None
        dmax = 0.0
        n_ok = n_failed = 0
        last = None
        for x, y in _grid_positions(bbox, grid):
            try:
                q = psf.computeShape((x, y))
            except PsfMatchError as exc:
                n_failed += 1
                last = exc
                continue
            n_ok += 1
            lam = float(np.linalg.eigvalsh(np.array([[q.ixx, q.ixy], [q.ixy, q.iyy]]))[-1])
            dmax = max(dmax, q.getDeterminantRadius())
            if best is None or lam > best["lambda_max"]:
                best = {"lambda_max": lam, "x": x, "y": y, "ixx": float(q.ixx), "iyy": float(q.iyy),
                        "ixy": float(q.ixy)}
        if best is None:
            from .errors import PsfComputeShapeError

            raise PsfComputeShapeError(bbox.getCenter(), f"the PSF shape could not be measured at any of the "
                                                         f"{n_failed} survey positions (last: {last})")
        out.update(best, ok=True, max_determinant_radius=float(dmax), n_positions=n_ok, n_failed=n_failed)
    except Exception as exc:
        out.update(error_type=type(exc).__name__, error_message=str(exc))
    return out


def choose_reference_psf(sources, *, kind="gaussian", margin=DEFAULT_MARGIN, floor=DEFAULT_FLOOR, grid=5,
                         wing_ratio=2.0, b=0.1, stamp=None, psfs=None, client=None) -> ReferencePsfChoice:
    """A round reference PSF broader than every science PSF along every axis.

    See the module docstring for the rule:
    ``sigma**2 = (1 + margin)**2 * lambda_max + floor**2``.

    Parameters
    ----------
    sources : sequence of paths, Exposures or (psf, Box2I) pairs
        The exposures of the set.
    kind : {"gaussian", "doublegaussian"}
        A round Gaussian, or a double Gaussian whose core has the rule's sigma.
    margin : float
        Fractional margin (>= 0) on the broadest axis sigma.
    floor : float
        Added in quadrature (pixels, >= 0): the smallest kernel sigma.
    grid : int
        Survey ``grid x grid`` positions per exposure, corners included.
    wing_ratio, b : float
        Double Gaussian only: ``sigma2 = wing_ratio * sigma1`` (> 1) and the
        wing-to-core peak ratio ``b`` (LSST's convention).
    stamp : int, optional
        Odd stamp width; default ``max(21, 2 ceil(4 sigma_outer) + 1)``.
    psfs : sequence, optional
        One entry per source: the PSF of a file that carries none (or to
        replace its own), a model or SPEC, or None (as :func:`match_many`'s ``psf``).
    client : distributed.Client, optional
        Survey the files on these Dask workers (in parallel); in-process otherwise.

    Returns
    -------
    ReferencePsfChoice

    Raises
    ------
    InvalidInputError
        For bad parameters, or when no exposure could be surveyed.
    """
    p = _reference_parameters(kind, margin, floor, grid, wing_ratio, b, stamp)
    kind, margin, floor, grid, wing_ratio, b, stamp = (p[k] for k in ("kind", "margin", "floor", "grid",
                                                                       "wing_ratio", "b", "stamp"))
    if isinstance(sources, (str, os.PathLike, Exposure)):
        sources = [sources]
    try:
        sources = list(sources)
    except TypeError:
        raise InvalidInputError(f"choose_reference_psf needs a sequence of exposures (paths, Exposures or (psf, "
                                f"bbox) pairs); got {type(sources).__name__}") from None
    if not sources:
        raise InvalidInputError("choose_reference_psf needs at least one exposure")
    sources = [os.path.abspath(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else s for s in sources]
    psfs = [None] * len(sources) if psfs is None else list(psfs)
    if len(psfs) != len(sources):
        raise InvalidInputError(f"psfs has {len(psfs)} entries for {len(sources)} sources; give one per source")
    if client is not None:
        futures = client.map(survey_psf, sources, [grid] * len(sources), psfs, pure=False)
        surveys = client.gather(futures)
    else:
        surveys = [survey_psf(s, grid, p) for s, p in zip(sources, psfs)]
    good = [s for s in surveys if s["ok"]]
    # an in-memory source is named by its place in ``sources`` (its survey's path is only its type)
    failures = [{"path": s["path"] if isinstance(src, str) else f"sources[{i}] ({s['path']})",
                 "error_type": s.get("error_type"), "error_message": s.get("error_message")}
                for i, (src, s) in enumerate(zip(sources, surveys)) if not s["ok"]]
    for f in failures:
        log.info("reference survey: %s skipped (%s: %s)", f["path"], f["error_type"], _one_line(f["error_message"]))
    if failures and good:  # (the reference may be narrower than a PSF it did not see)
        from .errors import PsfMatchWarning

        names = _first_few(f"{f['path']} ({f['error_type']}: {_one_line(f['error_message'], 120)})"
                           for f in failures)
        warnings.warn(f"choose_reference_psf: {len(failures)} of {len(sources)} exposure(s) could not be surveyed "
                      f"and are left out of the choice: {names}; the reference may be narrower than their PSFs "
                      "(ReferencePsfChoice.failures)", PsfMatchWarning, stacklevel=2)
    if not good:
        raise InvalidInputError(f"no exposure's PSF could be surveyed to choose a reference PSF; first failure: "
                                f"{failures[0]['path']}: {failures[0]['error_type']}: {failures[0]['error_message']}")
    i_top = max((i for i, sv in enumerate(surveys) if sv["ok"]), key=lambda i: surveys[i]["lambda_max"])
    top = dict(surveys[i_top])
    on_file = isinstance(sources[i_top], str)
    if not on_file:  # an in-memory source, named by its place (its path is its type)
        top["path"] = f"sources[{i_top}] ({top['path']})"
    lam = top["lambda_max"]
    try:
        sigma = math.sqrt((1.0 + margin) ** 2 * lam + floor ** 2)
        outer = sigma * (wing_ratio if kind == "doublegaussian" and b > 0 else 1.0)
        if stamp is None:
            stamp = max(21, 2 * int(math.ceil(4.0 * outer)) + 1)
    except (OverflowError, ValueError):
        sigma = float("inf")
    if not math.isfinite(sigma):
        raise InvalidInputError(f"margin {margin:g} and floor {floor:g} give no finite reference sigma; give a "
                                "smaller margin or floor")
    if stamp > MAX_REFERENCE_STAMP:
        raise InvalidInputError(f"the reference (sigma {sigma:.4g} px) would need a stamp of {stamp} px, more than "
                                f"{MAX_REFERENCE_STAMP}; give a smaller margin, floor or stamp")
    sigma2, bb = (None, None) if kind == "gaussian" else (wing_ratio * sigma, float(b))
    psf = _reference_psf(kind, stamp, sigma, sigma2, bb)
    rule = (f"sigma^2 = (1 + {margin:g})^2 * lambda_max + {floor:g}^2 with lambda_max = {lam:.4g} px^2 "
            f"(broadest axis sigma {math.sqrt(lam):.4g} px, "
            f"{os.path.basename(top['path']) if on_file else top['path']} at "
            f"({top['x']:.0f}, {top['y']:.0f})) -> sigma = {sigma:.4g} px")
    return ReferencePsfChoice(psf=psf, kind=kind, sigma=sigma, sigma2=sigma2, b=bb, stamp=stamp, margin=float(margin),
                              floor=float(floor), lambda_max=lam,
                              broadest={k: top[k] for k in ("path", "x", "y", "ixx", "iyy", "ixy")},
                              max_determinant_radius=max(s["max_determinant_radius"] for s in good),
                              n_exposures=len(good), n_positions=sum(s["n_positions"] for s in good),
                              failures=failures, rule=rule)


# ---------------------------------------------------------------------------
# the coadd


@dataclass
class CoaddReport:
    """What :func:`coadd` wrote.

    Attributes
    ----------
    output : str
        The coadd file.
    inputs : list of str
    shape : (int, int)
        ``(height, width)``.
    xy0 : (int, int)
    tile_size : int
    n_tiles : int
    excluded_planes : list of str
        Planes whose pixels were excluded (``NO_DATA`` always).
    coverage : float
        Fraction of pixels with at least one contributing input.
    psf : str
        ``repr`` of the attached PSF (None when the inputs carry none).
    time : float
        Seconds.
    unused_inputs : list of str
        Inputs that contributed no pixel (also named in a warning; ``NCOMBINE``
        counts the others).
    flagged_inputs : dict
        ``{input: QA flags}`` of the inputs whose own match was flagged
        (``ILL_POSED``, ``RESIDUAL_HIGH``...: read from the batch record in
        their metadata; also named in a warning): combined all the same.
    """

    output: str
    inputs: list
    shape: tuple
    xy0: tuple
    tile_size: int
    n_tiles: int
    excluded_planes: list
    coverage: float
    psf: str | None
    time: float
    unused_inputs: list = dataclasses.field(default_factory=list)
    flagged_inputs: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _same_calibration_value(name, a, b) -> bool:
    """Whether two values of the calibration entry ``name`` agree: magnitudes (``MAGZERO``...) to 1e-9 mag (a zero
    point brought to 27 by kernelSum holds 27.000000000000004), fluxes per count (``FLUXMAG0``, ``PHOTFLAM`` of
    1e-19...) to 1e-9 of their size."""
    if _is_real(a) and _is_real(b):
        a, b = float(a), float(b)
        scale = max(1.0, abs(a), abs(b)) if name in ZERO_POINT_CARDS else max(abs(a), abs(b))
        return abs(a - b) <= 1e-9 * scale
    return a == b


#: Calibration entries that may differ between coadd inputs on one flux scale (each exposure's own
#: uncertainty): a coadd keeps one only when every input carries it with one value.
_UNCOMPARED_CALIBRATION = ("photoCalib calibrationErr",)


def _calibration_of(inp) -> dict:
    """An input's calibration: its cards (``MAGZERO``...) and its stored ``photoCalib``'s entries, by name."""
    return _calibration_entries(inp.calibration, inp.metadata)


def _calibration_entries(cards, metadata) -> dict:
    """The calibration ``cards`` (name to value) with ``metadata``'s own entries named as calibration cards (an
    NDData's dict meta; blind to case, where no card has the name) and its ``photoCalib``'s entries, by name."""
    found = dict(cards)
    if isinstance(metadata, dict):
        for key, raw in metadata.items():
            name = str(key).upper()
            if name in CALIBRATION_CARDS and key not in ("fitsHeader", "photoCalib"):
                found.setdefault(name, raw[0] if isinstance(raw, tuple) and len(raw) == 2 else raw)
    photo = metadata.get("photoCalib") if isinstance(metadata, dict) else None
    if isinstance(photo, dict):
        found.update({f"photoCalib {key}": photo[key] for key in PHOTO_CALIB_KEYS if key in photo})
    return found


#: The remedies for coadd inputs on different zero points.
_ZERO_POINT_REMEDY = ("put every exposure on one zero point while matching it (match_many(..., zeroPoint=ZP), "
                      "psfmatch batch --zero-point ZP; run(..., zeroPoint=ZP) for one exposure), or pass "
                      "require_same_calibration=False (psfmatch batch --coadd-mixed-calibration) to coadd them "
                      "without a calibration")


def _common_calibration(cals, required, early=None, rates=True) -> dict:
    """The calibration every coadd input carries with one value (:func:`coadd`'s header and metadata), by name:
    the cards of :data:`psfmatch.calib.CALIBRATION_CARDS` and ``"photoCalib calibrationMean"``-style entries.

    Parameters
    ----------
    cals : list of (str, dict)
        Each input's path and calibration (:func:`_calibration_of`).
    required : bool
        Refuse inputs that carry a calibration entry with different values (else log it).
    early : str, optional
        What asks, when the calibrations are those the inputs' matched files will have, checked before any
        match (``"--coadd coadd.fits"``): only a conflict is looked for, and its message says so.
    rates : bool
        Whether every input's pixel values are per second (:func:`psfmatch.calib.is_rate_unit`).  If not,
        the zero points of a count rate (``MAGZPT``, ``PHOTFNU``) say nothing of the pixels' flux scale
        (exposures of different lengths on one scale have different ones): they are not compared, and kept
        only when every input has the same.

    Raises
    ------
    InvalidInputError
        If ``required`` and two inputs carry one with different values.
    """
    common = {}
    for name in sorted(set().union(*(cal for _, cal in cals))):
        carriers = [(path, cal[name]) for path, cal in cals if name in cal]
        ref_path, ref_value = carriers[0]
        odd = next(((path, value) for path, value in carriers[1:]
                    if not _same_calibration_value(name, value, ref_value)), None)
        if odd is not None and (name in _UNCOMPARED_CALIBRATION or (not rates and name in RATE_ZERO_POINT_CARDS)):
            if early is None:
                log.info("coadd inputs %s and %s have %s %r and %r: the coadd gets none", odd[0], ref_path, name,
                         odd[1], ref_value)
            continue
        if odd is not None:
            if early is None:
                msg = (f"coadd input {odd[0]} has {name} = {odd[1]!r} and {ref_path} has {ref_value!r}: their "
                       f"pixels are on different flux scales, which the coadd would average; {_ZERO_POINT_REMEDY}")
            else:
                msg = (f"{early}: input {odd[0]} would be matched with {name} = {odd[1]!r} and {ref_path} with "
                       f"{ref_value!r}: their pixels would be on different flux scales, which the coadd would "
                       f"average, so no exposure was matched; {_ZERO_POINT_REMEDY}")
            if required:
                raise InvalidInputError(msg)
            log.warning(msg)
            continue
        if early is not None:
            continue
        if len(carriers) < len(cals):
            bare = next(path for path, cal in cals if name not in cal)
            log.warning("coadd input %s has no %s and %s has %s = %r: the coadd gets none (the inputs' flux scales "
                        "cannot be compared on a card only some carry)", bare, name, ref_path, name, ref_value)
            continue
        common[name] = ref_value
    return common


def _inspect_input(path):
    """The coadd input's :class:`~psfmatch.io.ExposureFileInfo` with its metadata (no pixels read)."""
    from .io import read_exposure_info

    try:
        return read_exposure_info(path, metadata=True)  # (the metadata for its photoCalib)
    except UnsupportedFormatError as exc:
        raise InvalidInputError(f"coadd input: {exc}; coadd reads psfmatch or LSST-style exposure files") from None


#: Largest distance, in pixels, between where two inputs' distortions (SIP polynomials, lookup tables) put one
#: pixel, for :func:`coadd` to take them as one grid.
DISTORTION_TOLERANCE_PX = 1e-3


def _same_wcs(a, b, shape) -> bool:
    """Whether two inputs' WCSs are one: their core (``wcsprm``) within 1e-10, and their distortions, which the
    core's comparison does not see, putting the pixels of an image of ``shape`` at one place
    (:func:`_same_distortion`)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        from astropy.wcs import WCSCOMPARE_ANCILLARY

        same = bool(a.wcs.compare(b.wcs, cmp=WCSCOMPARE_ANCILLARY, tolerance=1e-10))
    except Exception:
        return a.to_header_string(relax=True) == b.to_header_string(relax=True)
    return same and _same_distortion(a, b, shape)


def _same_distortion(a, b, shape) -> bool:
    """Whether two WCSs with one core put a grid of 9 x 9 pixels over an image of ``shape`` (height, width) on the
    same sky, within :data:`DISTORTION_TOLERANCE_PX`, through their SIP polynomials and distortion lookup tables
    (``cpdis``, ``det2im``), which ``wcsprm.compare`` ignores: SIP ``A_0_2`` of 0 and of 3e-2 place a corner of
    a 30 x 20 image 3 px apart.  True at once when neither has a distortion."""
    names = ("sip", "cpdis1", "cpdis2", "det2im1", "det2im2")
    if all(getattr(w, n, None) is None for w in (a, b) for n in names):
        return True
    if all(_same_distortion_part(getattr(a, n, None), getattr(b, n, None)) for n in names):
        return True  # the same polynomials and tables (one WCS read twice: a strong SIP need not invert)
    h, w = int(shape[0]), int(shape[1])
    ys, xs = np.meshgrid(np.linspace(0, max(h - 1, 0), 9), np.linspace(0, max(w - 1, 0), 9), indexing="ij")
    pix = np.column_stack([xs.ravel(), ys.ravel()])
    try:
        with catch_warnings("ignore"):
            back = a.all_world2pix(b.all_pix2world(pix, 0), 0, tolerance=1e-6, maxiter=50)
    except Exception:  # (no convergence: mappings far apart)
        return False
    d = np.hypot(*(back - pix).T)
    return bool(np.all(np.isfinite(d)) and d.max() <= DISTORTION_TOLERANCE_PX)


def _same_distortion_part(x, y) -> bool:
    """Whether two SIP objects or two distortion lookup tables (or two Nones) hold the same numbers."""
    if x is None or y is None:
        return x is None and y is None
    fields = ("a", "b", "ap", "bp", "crpix", "a_order", "b_order", "ap_order", "bp_order", "data", "cdelt", "crval")
    for name in fields:
        u, v = getattr(x, name, None), getattr(y, name, None)
        if (u is None) != (v is None):
            return False
        if u is not None and not np.array_equal(np.asarray(u), np.asarray(v)):
            return False
    return True


def _grid_difference(inp, first):
    """How ``inp``'s pixel grid differs from ``first``'s, or None where :func:`coadd` takes them as one grid.

    Both have ``path``, ``shape`` ``(height, width)``, ``xy0`` and ``wcs`` (an
    :class:`~psfmatch.io.ExposureFileInfo`, or :func:`_input_grid`'s record).  The shape is
    compared first, then the origin, then the WCS (:func:`_same_wcs`).

    Returns
    -------
    (str, str or None) or None
        What differs (``"has shape 31x20 (width x height), a.fits has 30x20"``) and a hint for
        the remedy; None when the grids are one.
    """
    if tuple(inp.shape) != tuple(first.shape):
        return (f"has shape {inp.shape[1]}x{inp.shape[0]} (width x height), {first.path} has "
                f"{first.shape[1]}x{first.shape[0]}", "warp them first")
    if tuple(inp.xy0) != tuple(first.xy0):
        return f"has origin xy0 = {tuple(inp.xy0)}, {first.path} has {tuple(first.xy0)}", None
    if not _same_wcs(inp.wcs, first.wcs, first.shape):
        if first.wcs is None:
            what = f"has a WCS and {first.path} has none"
        elif inp.wcs is None:
            what = f"has no WCS and {first.path} has one"
        else:
            what = f"has a WCS different from {first.path}'s"
        return what, "same WCS; warp them first"
    return None


@dataclass(frozen=True)
class _InputGrid:
    """The pixel grid of an input exposure file (:func:`_input_grid`)."""

    path: str
    shape: tuple
    xy0: tuple
    wcs: object
    #: The mask planes its matched file will have, but for ``NO_DATA``, which matching may add (a plain image:
    #: the default planes).
    mask_planes: tuple = ()
    #: The calibration cards of its primary and image headers as an exposure read from it keeps them, every
    #: card of a repeated keyword (:func:`psfmatch.calib.calibration_header`).
    calibration: object = None
    #: Its stored metadata (the psfmatch layout: a ``photoCalib``...), else empty.
    metadata: dict = field(default_factory=dict)
    #: The image's unit (``BUNIT``), which the reader puts in ``metadata["unit"]``.
    unit: str | None = None

    def calibration_metadata(self) -> dict:
        """Metadata holding its calibration as an exposure read from it holds it (a new dict each time)."""
        import copy

        from astropy.io import fits

        md = copy.deepcopy(self.metadata)
        if self.unit is not None:
            md.setdefault("unit", self.unit)
        md["fitsHeader"] = fits.Header() if self.calibration is None else self.calibration.copy()
        return md


def _plain_image_hdu(hdul):
    """The HDU that :func:`~psfmatch.io.read_exposure` reads from a plain FITS image, chosen from the headers only.

    As the reader chooses it: the 2-d image HDU named ``IMAGE`` or ``SCI``, else the first 2-d image HDU;
    None when there is none.
    """
    from astropy.io import fits

    def two_d(header):
        sizes = [header.get(f"NAXIS{i}") for i in (1, 2)]
        return header.get("NAXIS") == 2 and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                for n in sizes)

    images = [h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
              and not isinstance(h, fits.GroupsHDU) and two_d(h.header)]
    return next((h for h in images if h.name.upper() in ("IMAGE", "SCI")), None) or next(iter(images), None)


def _input_grid(path):
    """The pixel grid that the matched file of input ``path`` will have, read from its headers (no pixels).

    Matching keeps an exposure's grid, so this is the grid :func:`coadd` will find in the
    matched file: shape, origin ``xy0`` and WCS as :func:`~psfmatch.io.read_exposure` takes
    them (psfmatch and LSST-style files through :func:`~psfmatch.io.read_exposure_info`; a
    plain image from the HDU the reader chooses, see :func:`_plain_image_hdu`).

    Returns
    -------
    _InputGrid or None
        None for a file that cannot be read as an exposure (missing, damaged, a kernel
        file...): its match fails and is reported (and then no coadd is made).
    """
    from .calib import calibration_header
    from .io import read_exposure_info
    from .io.fits import _image_wcs, _xy0_from_header, header_unit, open_fits

    try:
        try:
            info = read_exposure_info(path, psf=False, metadata=True)
            return _InputGrid(info.path, tuple(info.shape), tuple(info.xy0), info.wcs, tuple(info.mask_planes),
                              info.calibration_header, dict(info.metadata), info.unit)
        except UnsupportedFormatError:  # not psfmatch's or LSST's layout: a plain image, perhaps
            pass
        with open_fits(path, "exposure") as (hdul, _):
            if str(hdul[0].header.get("PMFORMAT", "")).strip():
                return None  # a psfmatch file that is no complete exposure (a kernel, a truncated file): it fails
            hdu = _plain_image_hdu(hdul)
            if hdu is None:
                return None
            where = f"{path}[{hdu.name or 0}]"
            header = hdu.header
            headers = (hdul[0].header,) + (() if hdu is hdul[0] else (header,))
            return _InputGrid(os.fspath(path), (int(header["NAXIS2"]), int(header["NAXIS1"])),
                              tuple(_xy0_from_header(header, where)), _image_wcs(hdul, hdu, where)[0],
                              tuple(Mask(shape=(1, 1)).getMaskPlaneDict()),  # (matched with the default planes)
                              calibration_header(*headers), unit=header_unit(header))
    except Exception:  # unreadable: its match fails and is reported
        return None


def _check_coadd_grid(paths, where, alternative):
    """Refuse inputs to be coadded that are not on one pixel grid, from their headers, before any is matched.

    The coadd of the matched files would refuse them (:func:`coadd`'s own check, on the same
    grids with the same tolerance: :func:`_grid_difference`) -- but only once every input had
    been matched.  Inputs that cannot be read are left out (their matches fail and are
    reported); the first readable input is the reference, as the first matched file is the coadd's.

    Parameters
    ----------
    paths : list of str
        The input exposure files, in the batch's order.
    where : str
        What asked for the coadd, for the message (``"--coadd coadd.fits"``).
    alternative : str
        The remedy that keeps the batch without the check (``"leave --coadd out ..."``).

    Returns
    -------
    list of _InputGrid
        The readable inputs' grids, with their mask planes (for ``--coadd-exclude``'s check).

    Raises
    ------
    GridMismatchError
        Naming the first input off the first readable input's grid, what differs, and the remedies.
    """
    first, grids = None, []
    for p in paths:
        grid = _input_grid(p)
        if grid is None:
            continue
        grids.append(grid)
        if first is None:
            first = grid
            continue
        difference = _grid_difference(grid, first)
        if difference is not None:
            raise GridMismatchError(
                f"{where}: input {grid.path} {difference[0]}: a coadd needs every input on one pixel grid (one "
                "shape, origin xy0 and WCS), so no exposure was matched; warp the inputs onto one grid first, or "
                f"leave {os.path.basename(grid.path)} out of the batch, or {alternative}")
    return grids


def _check_batch_calibration(grids, where, *, zero_point=None, kernel_sum=1.0, require_same=False):
    """Refuse, before any exposure is matched, a batch whose inputs' zero points cannot be read (with
    ``zero_point``) or whose matched files the coadd would refuse for their calibrations (``require_same``).

    The calibrations are read from the headers (and a psfmatch file's stored metadata: :func:`_input_grid`)
    and rescaled as matching will rescale them (:mod:`psfmatch.calib`): by ``kernel_sum``, or to
    ``zero_point``.  Inputs that cannot be read are left out (their matches fail and are reported).

    Parameters
    ----------
    grids : list of _InputGrid or str
        The inputs (paths are read with :func:`_input_grid`).
    where : str
        What asks, for the messages (``"--coadd coadd.fits"``, ``"match_many(zeroPoint=27.0)"``).

    Raises
    ------
    InvalidInputError
        Naming the inputs whose zero point cannot be read, or the first pair whose matched files would be
        on different flux scales, and the remedies.
    """
    from .calib import calibration_cards, kernel_sum_for_zero_point, rescale_calibration, set_zero_point

    grids = [g for g in (_input_grid(g) if isinstance(g, (str, os.PathLike)) else g for g in grids) if g is not None]
    cals, unreadable, units = [], [], []
    for g in grids:
        md = g.calibration_metadata()
        units.append(md.get("unit"))
        factor = kernel_sum
        if zero_point is not None:
            try:
                factor = kernel_sum_for_zero_point(md, zero_point, g.path)[0]
            except InvalidInputError as exc:
                unreadable.append(str(exc))
                continue
        rescale_calibration(md, factor)  # (what it cannot rescale is returned, not warned of: only compared here)
        if zero_point is not None:
            set_zero_point(md, zero_point)
        cals.append((g.path, _calibration_entries(calibration_cards(md["fitsHeader"]), md)))
    if unreadable:
        raise InvalidInputError(
            f"{where}: the zero point of {len(unreadable)} of {len(grids)} input(s) cannot be read, so no exposure "
            f"was matched: {unreadable[0]}" + (f" (and {len(unreadable) - 1} more like it)" if len(unreadable) > 1
                                               else "") + "; or leave them out of the batch")
    if require_same:
        _common_calibration(cals, True, early=where, rates=all(is_rate_unit(unit) for unit in units))


def _psf_differs(a, b, position) -> str | None:
    """Why two inputs' PSFs are not one reference (None when they are), from their images at ``position``.

    Each matched exposure carries the reference resized to the stamp its own fit used (the automatic
    kernel may choose other sizes for other exposures): stamps of different sizes are compared on the
    smaller one, each cropped there and renormalized, which gives back the same image for one model.
    """
    if a is None or b is None:
        return None if a is None and b is None else "one of them has no PSF"
    ia, ib = a.computeKernelImage(position), b.computeKernelImage(position)
    if ia.shape != ib.shape:
        from .psf.base import pad_or_crop

        h, w = min(ia.shape[0], ib.shape[0]), min(ia.shape[1], ib.shape[1])
        ia, ib = (pad_or_crop(x, w, h) for x in (ia, ib))
        if not (ia.sum() > 0 and ib.sum() > 0):
            return f"stamps of {ia.shape[::-1]} and {ib.shape[::-1]} pixels have no flux in common"
        ia, ib = ia / ia.sum(), ib / ib.sum()
    d = float(np.abs(ia - ib).max() / max(ia.max(), 1e-300))
    return None if d <= 1e-6 else f"kernel images differ by {d:.2g} of the peak"


def _remap_table(src_planes, dst_planes):
    """``(source bit, output bit)`` pairs mapping a mask onto the output's planes by name; None if identical."""
    pairs = [(int(bit), int(dst_planes[name])) for name, bit in src_planes.items()]
    return None if all(s == d for s, d in pairs) else tuple(pairs)


def _read_window(hdu, sl):
    """A copy of ``hdu``'s pixels in the window ``sl``, reading (about) only that window from the file.

    Plain image HDUs are memory-mapped (only the pages of the window are read);
    scaled or compressed ones go through astropy's ``section``.
    """
    from astropy.io import fits

    h = hdu.header
    if isinstance(hdu, fits.CompImageHDU) or "BSCALE" in h or "BZERO" in h:
        return np.array(hdu.section[sl])
    return np.array(hdu.data[sl])


def _plane_names(exclude_planes) -> list:
    """``exclude_planes`` of :func:`coadd` as a list of plane names, ``NO_DATA`` first.

    None means none (besides ``NO_DATA``); a string is a comma-separated list.
    """
    if exclude_planes is None:
        exclude_planes = []
    elif isinstance(exclude_planes, str):
        exclude_planes = [p.strip() for p in exclude_planes.split(",") if p.strip()]
    try:
        names = list(exclude_planes)
    except TypeError:
        raise InvalidInputError(f"exclude_planes must be a sequence of mask plane names (or None); got "
                                f"{type(exclude_planes).__name__}") from None
    bad = [p for p in names if not isinstance(p, str)]
    if bad:
        raise InvalidInputError(f"exclude_planes must hold mask plane names (strings) such as 'BAD'; got {bad!r}")
    return list(dict.fromkeys(["NO_DATA", *names]))


def _check_coadd_name(path, what):
    """Refuse a coadd file name asking for whole-file compression (the coadd is written through a memory map;
    a tile-compressed ``.fz`` name is written uncompressed first, then compressed)."""
    if os.fspath(path).lower().endswith((".gz", ".bz2", ".xz", ".zip")):
        raise InvalidInputError(
            f"{what} {os.fspath(path)}: the coadd writes its planes in place through a memory map and cannot "
            "compress the whole file; give a name without the compression suffix, or a tile-compressed .fits.fz "
            "name (lossless, as fpack's)")


def _compress_in_place(tmp) -> None:
    """Rewrite the uncompressed coadd ``tmp`` as a losslessly tile-compressed file (for a ``.fz`` name).

    The planes are read through a memory map and compressed one at a time (the memory of one
    plane's compressed tiles, and astropy's working copy of the plane); the other HDUs are copied.
    """
    from astropy.io import fits

    from .io.fits import lossless_compressed_hdu

    fd, packed = tempfile.mkstemp(prefix=".psfmatch-fz.", suffix=".partial.fits", dir=os.path.dirname(tmp))
    os.close(fd)
    os.unlink(packed)  # created anew by the writer, with the permissions of any new file (mkstemp's are 0600)
    try:
        with fits.open(tmp, memmap=True) as hdul:
            out = [fits.PrimaryHDU(header=hdul[0].header.copy())]
            for h in hdul[1:]:
                if h.name in ("IMAGE", "MASK", "VARIANCE"):
                    out.append(lossless_compressed_hdu(h.data, h.header.copy(), h.name))
                else:
                    out.append(h.copy())
            fits.HDUList(out).writeto(packed, output_verify="exception", checksum=True)
        os.replace(packed, tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(packed)
        raise


def _integer_arg(value, name, minimum, what) -> int:
    """``value`` as an int ``>= minimum``, else :class:`InvalidInputError` naming ``name``.

    Integers of any kind (numpy's too) and integral floats (``16.0``) are taken; fractions,
    booleans, strings and non-finite values are refused, not truncated.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and float(value).is_integer() and int(value) >= minimum
    if not ok:
        raise InvalidInputError(f"{name} must be an integer >= {minimum} ({what}); got {value!r}")
    return int(value)


def _reference_parameters(kind="gaussian", margin=DEFAULT_MARGIN, floor=DEFAULT_FLOOR, grid=5, wing_ratio=2.0,
                          b=0.1, stamp=None) -> dict:
    """:func:`choose_reference_psf`'s parameters checked and normalized (:class:`InvalidInputError` naming one)."""
    from .kernel.kernel import as_real

    kind = str(kind).lower().replace("-", "").replace("_", "")
    if kind not in ("gaussian", "doublegaussian"):
        raise InvalidInputError(f"kind must be 'gaussian' or 'doublegaussian'; got {kind!r}")
    out = {"kind": kind, "grid": _integer_arg(grid, "grid", 1, "positions per axis surveyed in each exposure"),
           "stamp": None if stamp is None else _integer_arg(stamp, "stamp", 3, "the odd width of the reference")}
    for name, v, lo in (("margin", margin, 0.0), ("floor", floor, 0.0), ("wing_ratio", wing_ratio, None),
                        ("b", b, None)):
        x = as_real(v, name) if not isinstance(v, bool) else float("nan")
        if not math.isfinite(x) or (lo is not None and x < lo):
            raise InvalidInputError(f"{name} must be a finite number{'' if lo is None else ' >= 0'}; got {v!r}")
        out[name] = x
    if kind == "doublegaussian" and not (out["wing_ratio"] > 1 and out["b"] >= 0):
        raise InvalidInputError(f"a double Gaussian needs wing_ratio > 1 and b >= 0; got {wing_ratio!r}, {b!r}")
    if out["stamp"] is not None and out["stamp"] % 2 == 0:
        raise InvalidInputError(f"stamp must be an odd integer >= 3; got {stamp!r}")
    return out


def _same_unit(a, b) -> bool:
    """Whether two ``BUNIT`` values name one unit (``ct`` and ``count`` do; no unit only matches no unit)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    try:
        from astropy import units

        return units.Unit(a, parse_strict="silent") == units.Unit(b, parse_strict="silent")
    except Exception:
        return False


def _unit_text(unit) -> str:
    return repr(unit) if unit is not None else "none"


def _whole_file_compressed(path) -> bool:
    """Whether ``path`` is a compressed file (gzip, bzip2, zip, LZW) rather than FITS bytes (``SIMPLE``).

    Tile-compressed FITS (``.fits.fz``) is FITS: its tiles are read one window at a time.
    """
    with open(path, "rb") as fh:
        return fh.read(6) != b"SIMPLE"


def _decompress(src, dst):
    """Write the decompressed bytes of the whole-file-compressed FITS file ``src`` to ``dst``.

    gzip and bzip2 are streamed (memory stays small); zip and LZW go through astropy once.
    """
    import bz2
    import gzip
    import zlib

    from .errors import CorruptFileError

    with open(src, "rb") as fh:
        head = fh.read(3)
    opener = gzip.open if head[:2] == b"\x1f\x8b" else bz2.open if head == b"BZh" else None
    if opener is None:
        from astropy.io import fits

        from .io.fits import read_guard

        with read_guard(src, "coadd input"), fits.open(src, memmap=False) as hdul:
            hdul.writeto(dst)
        return
    with opener(src, "rb") as fin, open(dst, "wb") as fout:
        while True:
            try:
                chunk = fin.read(1 << 24)
            except (OSError, EOFError, zlib.error) as exc:
                raise CorruptFileError(f"coadd input {src}: cannot decompress it: the file is damaged or "
                                       f"truncated ({type(exc).__name__}: {exc})") from exc
            if not chunk:
                break
            fout.write(chunk)


@contextlib.contextmanager
def _uncompressed_inputs(paths, folder):
    """The files the coadd's tiles read: each input, or an uncompressed copy of a whole-file-compressed one.

    astropy cannot read a window of a gzip (bzip2, zip, LZW) file without decompressing the whole
    file, which every tile would do again.  Such inputs are decompressed once, each into a file of a
    temporary folder in ``folder`` (beside the coadd), removed on exit, also on error.
    """
    import shutil
    import tempfile

    compressed = [i for i, p in enumerate(paths) if _whole_file_compressed(p)]
    if not compressed:
        yield list(paths)
        return
    tmpdir = tempfile.mkdtemp(prefix=".psfmatch-coadd-inputs-", dir=folder)
    try:
        readable = list(paths)
        for i in compressed:
            readable[i] = os.path.join(tmpdir, f"input{i}.fits")
            log.info("coadd: decompressing %s once (%s)", paths[i], readable[i])
            _decompress(paths[i], readable[i])
        yield readable
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _coadd_block(block_info=None, *, specs, nodata_out, contributed=None):
    """One tile of the coadd: read the tile from every input and combine (see :func:`coadd`).

    ``contributed``, a ``(lock, counts)`` pair, gets each input's number of contributing pixels added."""
    from astropy.io import fits

    loc = block_info[None]["array-location"]
    (y0, y1), (x0, x1) = loc[1], loc[2]
    shape = (y1 - y0, x1 - x0)
    sum_w = np.zeros(shape)
    sum_wi = np.zeros(shape)
    and_mask = np.full(shape, -1, dtype=np.int64)
    count = np.zeros(shape, dtype=np.int32)
    sl = (slice(y0, y1), slice(x0, x1))
    used = np.zeros(len(specs), dtype=np.int64)
    for i, (path, exclude_bits, remap) in enumerate(specs):
        # (astropy's default memory-maps plain planes too; memmap=True would refuse scaled integer planes, BSCALE/BZERO)
        with fits.open(path, lazy_load_hdus=True) as hdul:
            img = _read_window(hdul["IMAGE"], sl).astype(np.float64)
            var = _read_window(hdul["VARIANCE"], sl).astype(np.float64)
            msk = _read_window(hdul["MASK"], sl).astype(np.int64)
        with np.errstate(invalid="ignore"):
            good = np.isfinite(img) & np.isfinite(var) & (var > 0) & ((msk & exclude_bits) == 0)
        if remap is not None:
            out = np.zeros_like(msk)
            for s, d in remap:
                out |= ((msk >> s) & 1) << d
            msk = out
        w = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)
        sum_w += w
        sum_wi += w * np.where(good, img, 0.0)
        and_mask &= np.where(good, msk, -1)
        count += good
        used[i] = int(np.count_nonzero(good))
    if contributed is not None:
        lock, counts = contributed
        with lock:
            counts += used
    covered = count > 0
    safe = np.where(covered, sum_w, 1.0)
    image = np.where(covered, sum_wi / safe, np.nan)
    variance = np.where(covered, 1.0 / safe, np.inf)
    mask = np.where(covered, and_mask, nodata_out)
    # the 32 bits as the int32 value the MASK plane holds (a bit remapped to 31 is 2**31 in int64, which float64
    # carries to the int32 plane as INT_MIN, losing the pixel's other bits); float64 holds every int32 exactly
    mask = (mask & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    return np.stack([image, variance, mask.astype(np.float64)])


def _image_header(name, bitpix, shape, wcs_header, xy0, unit=None):
    from astropy.io import fits

    from .io.fits import _xy0_to_header

    h = fits.Header()
    h["XTENSION"] = ("IMAGE", "Image extension")
    h["BITPIX"] = bitpix
    h["NAXIS"] = 2
    h["NAXIS1"] = int(shape[1])
    h["NAXIS2"] = int(shape[0])
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["EXTNAME"] = name
    h["EXTTYPE"] = name
    h["INHERIT"] = True
    if wcs_header is not None:
        h.update(wcs_header)
    _xy0_to_header(h, xy0)
    if unit is not None and name == "IMAGE":
        h["BUNIT"] = unit
    return h


def coadd(matched_paths, out_path, *, exclude_planes=(), tile_size=1024, overwrite=False, require_same_psf=True,
          num_workers=None, require_same_calibration=True) -> CoaddReport:
    """Inverse-variance weighted coadd of exposures on one pixel grid, computed in tiles.

    Parameters
    ----------
    matched_paths : sequence of str or path-like
        PSF-matched exposure files (psfmatch's layout, e.g. from
        :func:`match_many`) with one shape, origin ``xy0``, WCS and image
        unit (``BUNIT``), each given once.  Whole-file-compressed inputs
        (``.fits.gz``, ``.fits.bz2``) are first decompressed, once each, into
        a temporary folder beside ``out_path`` (removed afterwards, also on
        error), which needs the disk space of the uncompressed inputs;
        tile-compressed ones (``.fits.fz``) are read a window at a time.
    out_path : str or path-like
        The coadd file (psfmatch's exposure layout; written atomically).  A
        ``.fz`` name (``coadd.fits.fz``) gives a losslessly tile-compressed
        file, as :func:`~psfmatch.io.write_exposure` writes: the coadd is
        written uncompressed beside it first (the disk space of the
        uncompressed file), then compressed one plane at a time (the memory
        of one plane).
    exclude_planes : sequence of str, str or None
        Mask planes whose pixels are left out, besides ``NO_DATA`` (always);
        a string is a comma-separated list, None none.
        A name no input knows is an error (a likely typo).
    tile_size : int
        Side of the square tiles (>= 16); memory is about
        ``threads x tile_size**2 x 130`` bytes (measured), whatever the mosaic size and
        the number of inputs.
    overwrite : bool
        Replace an existing ``out_path``.
    require_same_psf : bool
        Refuse inputs whose PSFs differ at the box's centre or any of its
        corners (they were not matched to one reference); otherwise the
        first input's PSF is attached.  Each
        matched exposure carries the reference on the stamp its own fit used:
        stamps of different sizes count as one PSF when they agree on the
        smaller one (to 1e-6 of the peak, each renormalized there), and the
        coadd carries the largest.
    num_workers : int, optional
        Threads of dask's threaded scheduler (>= 1; default: the cores available, at most 4).
    require_same_calibration : bool
        Refuse inputs whose photometric calibration cards (``MAGZERO``,
        ``FLUXMAG0``, ``PHOTFLAM``...: :data:`psfmatch.calib.CALIBRATION_CARDS`)
        or stored ``photoCalib`` (``calibrationMean``, ``calibrationErr``)
        differ: their pixels are on different flux scales (scale them to one
        zero point first, with ``kernelSum``).  A card every input carries with
        one value goes into the coadd's primary header, a common ``photoCalib``
        into its metadata; one that differs (allowed here with False) or that
        only some inputs carry is left out, with a logged warning.

    Returns
    -------
    CoaddReport

    Raises
    ------
    GridMismatchError
        If an input's shape, origin or WCS differs from the first input's
        (the message names the file and the mismatch).  WCSs are compared
        to 1e-10 in every value of their core, and their distortions (SIP
        polynomials, lookup tables) to where they put a 9 x 9 grid of pixels
        (:data:`DISTORTION_TOLERANCE_PX`).
    InvalidInputError
        No inputs, an input or ``out_path`` that is not a file path (None...),
        one file given twice (also as a symbolic or hard link to it), an
        unknown plane in ``exclude_planes``, differing PSFs, image units or
        calibrations (``require_same_calibration``),
        an input without IMAGE/MASK/VARIANCE, a ``tile_size`` or
        ``num_workers`` that is not an integer in range, or an ``out_path``
        that is one of the inputs or a directory, or that asks for
        whole-file compression (``.gz``...).
    CorruptFileError, FileNotFoundError
        For an unreadable or missing input.
    OutputExistsError
        If ``out_path`` exists and ``overwrite`` is False.
    OutputNotWritableError
        If the directory of ``out_path`` does not accept the file (no permission,
        a read-only or full file system); an ``OSError`` naming the output.
    MissingDependencyError
        If ``dask.array`` is not installed.

    Notes
    -----
    Rules (see also the module docstring): weights ``1/V`` per pixel;
    excluded are pixels with ``NO_DATA`` or an ``exclude_planes`` plane set,
    a non-finite image or variance, or a variance ``<= 0``; output image
    ``sum(w I) / sum(w)``, variance ``1 / sum(w)``, mask the bitwise AND of
    the contributing inputs' masks (planes matched by name); pixels with no
    contributing input are ``NaN``, variance ``inf``, mask ``NO_DATA``.
    """
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise MissingDependencyError("psfmatch.batch.coadd needs dask.array: pip install 'psfmatch[batch]' (or "
                                     "pip install 'dask[array]')") from None
    from astropy.io import fits

    from .io import atomic_write, psf_to_hdus
    from .io.fits import FORMAT_NAME, FORMAT_VERSION, _mask_planes_to_header, _metadata_to_hdu, as_path

    t0 = time.perf_counter()
    paths = _path_list(matched_paths, "matched_paths")
    out_path = as_path(out_path, "coadd's out_path")
    if not paths:
        raise InvalidInputError("coadd needs at least one input exposure")
    ids = {}
    for p in paths:  # one exposure counted twice would halve its variance
        fid = _file_id(p)
        if fid is not None:
            if fid in ids:
                _refuse_same_file(ids[fid], p)
            ids[fid] = p
    tile_size = _integer_arg(tile_size, "tile_size", 16, "the side of the square tiles in pixels")
    nthreads = (min(4, _cpu_count()) if num_workers is None
                else _integer_arg(num_workers, "num_workers", 1, "the threads, or None for the default"))
    _check_extra_output(out_path, "coadd output", paths)
    _check_coadd_name(out_path, "coadd output")
    exclude_planes = _plane_names(exclude_planes)

    inputs = [_inspect_input(p) for p in paths]
    first = inputs[0]
    for inp in inputs[1:]:
        difference = _grid_difference(inp, first)
        if difference is not None:
            what, hint = difference
            raise GridMismatchError(f"coadd input {inp.path} {what}: the inputs must be on one pixel grid"
                                    + (f" ({hint})" if hint else ""))
    H, W = first.shape
    bbox = Box2I(first.xy0, (W, H))
    # the centre and the corners: PSF models that vary over the box and agree at its centre are not one reference
    places = [bbox.getCenter()] + [Point2D(x, y) for y in (bbox.getMinY(), bbox.getMaxY())
                                   for x in (bbox.getMinX(), bbox.getMaxX())]
    psf = first.psf
    for inp in inputs[1:]:
        why = _psf_differs(first.psf, inp.psf, places[0])
        if why is None and first.psf is not None:
            why = next((f"{w} at ({p.x:g}, {p.y:g})" for p in places[1:]
                        if (w := _psf_differs(first.psf, inp.psf, p)) is not None), None)
        if why is not None:
            msg = (f"coadd input {inp.path} and {first.path} do not carry the same PSF ({why}); coadd exposures "
                   "matched to one reference PSF, or pass require_same_psf=False")
            if require_same_psf:
                raise InvalidInputError(msg)
            log.warning(msg)
        elif psf is not None and np.prod(inp.psf.getDimensions()) > np.prod(psf.getDimensions()):
            psf = inp.psf  # the same reference on a larger stamp: its wings kept
    for inp in inputs[1:]:
        if not _same_unit(inp.unit, first.unit):
            raise InvalidInputError(
                f"coadd input {inp.path} has image unit (BUNIT) {_unit_text(inp.unit)} and {first.path} has "
                f"{_unit_text(first.unit)}: the coadd would average pixels in different units; bring the inputs "
                "to one unit (calibrate them) first")
    flagged = _flagged_inputs(inputs, psf)
    calibration = _common_calibration([(inp.path, _calibration_of(inp)) for inp in inputs], require_same_calibration,
                                      rates=all(is_rate_unit(inp.unit) for inp in inputs))
    known = set().union(*(inp.mask_planes for inp in inputs))
    unknown = [p for p in exclude_planes if p != "NO_DATA" and p not in known]
    if unknown:
        raise InvalidInputError(f"exclude_planes {unknown} are not mask planes of any input; known planes: "
                                f"{sorted(known)}")

    # the output's mask planes: the first input's registry, extended by name
    out_mask = Mask(shape=(1, 1), planes=first.mask_planes)
    for inp in inputs:
        for name in inp.mask_planes:
            out_mask.addMaskPlane(name)
    if "NO_DATA" not in out_mask.getMaskPlaneDict():
        out_mask.addMaskPlane("NO_DATA")
    nodata_out = out_mask.getPlaneBitMask("NO_DATA")  # (the int32 value: negative at bit 31)
    out_planes = out_mask.getMaskPlaneDict()
    specs = []
    for inp in inputs:
        bits = 0
        for name in exclude_planes:
            if name in inp.mask_planes:
                bits |= 1 << int(inp.mask_planes[name])
        specs.append((inp.path, bits, _remap_table(inp.mask_planes, out_planes)))

    dtype = np.dtype(np.float64) if any(inp.dtype == np.float64 for inp in inputs) else np.dtype(np.float32)
    bitpix = -64 if dtype == np.float64 else -32
    wcs_header = None
    if first.wcs is not None:
        with catch_warnings("ignore"):
            wcs_header = first.wcs.to_header(relax=True)

    primary = fits.Header()
    primary["SIMPLE"] = True
    primary["BITPIX"] = 8
    primary["NAXIS"] = 0
    primary["EXTEND"] = True
    primary["PMFORMAT"] = (FORMAT_NAME, "written by psfmatch")
    primary["PMVERS"] = (FORMAT_VERSION, "psfmatch exposure format version")
    primary["NCOMBINE"] = (len(paths), "number of coadded exposures")
    for name, value in calibration.items():
        if not name.startswith("photoCalib "):
            primary[name] = (value, "the inputs' common calibration")
    headers = [_image_header("IMAGE", bitpix, (H, W), wcs_header, first.xy0, first.unit),
               _image_header("MASK", 32, (H, W), wcs_header, first.xy0),
               _image_header("VARIANCE", bitpix, (H, W), wcs_header, first.xy0)]
    _mask_planes_to_header(headers[1], out_planes)
    itemsize = {"IMAGE": dtype.itemsize, "MASK": 4, "VARIANCE": dtype.itemsize}
    metadata = {"coadd": {
        "inputs": paths, "nInputs": len(paths), "weights": "inverse variance per pixel (1/V)",
        "excludedPlanes": exclude_planes,
        "excludedAlso": "non-finite image or variance, variance <= 0",
        "maskRule": "bitwise AND of the contributing inputs' masks; NO_DATA where no input contributes",
        "tileSize": tile_size, "psf": repr(psf) if psf is not None else None}}
    photo = {name.split(" ", 1)[1]: value for name, value in calibration.items() if name.startswith("photoCalib ")}
    if "calibrationMean" in photo:  # the inputs' common photoCalib
        metadata["photoCalib"] = photo
    extra = []
    if psf is not None:
        extra.extend(psf_to_hdus(psf, bbox=bbox))
    extra.append(_metadata_to_hdu(metadata))

    ny, nx = -(-H // tile_size), -(-W // tile_size)
    ychunks = tuple(min(tile_size, H - i * tile_size) for i in range(ny))
    xchunks = tuple(min(tile_size, W - i * tile_size) for i in range(nx))

    with atomic_write(out_path, overwrite=overwrite) as tmp, \
            _uncompressed_inputs(paths, os.path.dirname(os.path.abspath(tmp))) as readable:
        # the tiles read each input's window: from an uncompressed copy of a whole-file-compressed input
        specs = [(readable[i], bits, remap) for i, (_, bits, remap) in enumerate(specs)]
        counts = np.zeros(len(specs), dtype=np.int64)  # each input's contributing pixels
        block_fn = functools.partial(_coadd_block, specs=tuple(specs), nodata_out=int(nodata_out),
                                     contributed=(threading.Lock(), counts))
        tiles = da.map_blocks(block_fn, chunks=((3,), ychunks, xchunks), dtype=np.float64,
                              name=f"psfmatch-coadd-{uuid.uuid4().hex[:8]}")
        offsets = {}
        with open(tmp, "wb") as fh:
            fh.write(primary.tostring().encode("ascii"))
            for h in headers:
                fh.write(h.tostring().encode("ascii"))
                offsets[h["EXTNAME"]] = fh.tell()
                nbytes = H * W * itemsize[h["EXTNAME"]]
                padded = -(-nbytes // 2880) * 2880
                fh.seek(padded - 1, os.SEEK_CUR)  # a sparse, zero-filled data unit
                fh.write(b"\0")
        with fits.open(tmp, mode="append") as hdul:
            for hdu in extra:
                hdul.append(hdu)
        big = ">f8" if dtype == np.float64 else ">f4"
        img = np.memmap(tmp, dtype=big, mode="r+", offset=offsets["IMAGE"], shape=(H, W))
        var = np.memmap(tmp, dtype=big, mode="r+", offset=offsets["VARIANCE"], shape=(H, W))
        msk = np.memmap(tmp, dtype=">i4", mode="r+", offset=offsets["MASK"], shape=(H, W))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with dask.config.set(scheduler="threads", num_workers=nthreads):
                da.store([tiles[0], tiles[1], tiles[2]], [img, var, msk], lock=False)
        nodata = 0
        for y in range(0, H, tile_size):
            nodata += int(np.count_nonzero(np.asarray(msk[y:y + tile_size]) & nodata_out))
        for m in (img, var, msk):
            m.flush()
        del img, var, msk
        unused = [paths[i] for i in np.flatnonzero(counts == 0)]
        if unused:  # NCOMBINE counts the exposures combined (the header keeps its length: one card rewritten)
            primary["NCOMBINE"] = len(paths) - len(unused)
            with open(tmp, "r+b") as fh:
                fh.write(primary.tostring().encode("ascii"))
            _warn_unused_inputs(unused, len(paths), nodata == H * W)
        if os.fspath(out_path).lower().endswith(".fz"):
            _compress_in_place(tmp)
    report = CoaddReport(output=os.path.abspath(os.fspath(out_path)), inputs=paths, shape=(H, W),
                         xy0=tuple(first.xy0), tile_size=tile_size, n_tiles=ny * nx, excluded_planes=exclude_planes,
                         coverage=1.0 - nodata / float(H * W), psf=repr(psf) if psf is not None else None,
                         time=time.perf_counter() - t0, unused_inputs=unused, flagged_inputs=flagged)
    log.info("coadd of %d exposures written to %s (%dx%d, %d tiles, coverage %.3f) in %.1f s", len(paths) - len(unused),
             report.output, W, H, report.n_tiles, report.coverage, report.time)
    return report


def _flagged_inputs(inputs, psf) -> dict:
    """``{path: flags}`` of the coadd inputs whose own QA flagged their match (the batch record in their metadata,
    ``psfmatchBatch.qa.qa.flags``), logged and warned (:class:`~psfmatch.errors.PsfMatchWarning`): where a match
    is flagged (ILL_POSED: a deconvolution; RESIDUAL_HIGH...) its PSF is not the reference, so neither is the
    coadd's there."""
    from .errors import PsfMatchWarning

    flagged = {}
    for inp in inputs:
        record = (getattr(inp, "metadata", None) or {}).get(_METADATA_KEY)
        qa = ((record or {}).get("qa") or {}).get("qa") if isinstance(record, dict) else None
        flags = qa.get("flags") if isinstance(qa, dict) else None
        if flags:
            flagged[inp.path] = [str(f) for f in flags]
    if flagged:
        names = _first_few(f"{p} ({', '.join(f)})" for p, f in flagged.items())
        msg = (f"coadd: {len(flagged)} of {len(inputs)} input(s) carry QA flags from their own match: {names}; "
               f"where a match is flagged its PSF is not the reference, so the coadd's PSF ({psf!r}) does not hold "
               "there. Leave them out, or match them again as their flags' remedies say (see their reports)")
        log.warning(msg)
        warnings.warn(msg, PsfMatchWarning, stacklevel=3)
    return flagged


def _warn_unused_inputs(unused, n, empty):
    """Log and warn (:class:`~psfmatch.errors.PsfMatchWarning`) that the coadd inputs ``unused`` gave no pixel."""
    from .errors import PsfMatchWarning

    names = _first_few(unused, ", ")
    msg = (f"coadd: {len(unused)} of {n} input(s) contributed no pixel ({names}): every pixel has a variance <= 0 "
           "or not finite (an exposure written without a variance plane has zeros), a non-finite value, or a mask "
           "bit excluded; NCOMBINE counts the others" + ("; the coadd holds no data (coverage 0)" if empty else "")
           + ". Give them a variance plane, or leave them out")
    log.warning(msg)
    warnings.warn(msg, PsfMatchWarning, stacklevel=3)

