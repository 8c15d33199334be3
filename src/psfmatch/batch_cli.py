"""The ``psfmatch batch`` subcommand: many exposures on Dask, optionally coadded.

::

    psfmatch batch INPUTS... --reference-psf SPEC|auto --outdir DIR [--coadd OUT.fits]
                   [--psf SPEC] [--scheduler ADDRESS [--scheduler-timeout S]] [--workers N]
                   [--memory-limit 4GiB] [--force] [--fingerprint stat|sha256]
                   [--input-list FILE] [--report REPORT.json] [--coadd-exclude PLANE,...]
                   [--reference-kind gaussian|doublegaussian] [--reference-margin M]
                   [--reference-floor F] [-c KEY=VALUE ...] [-C FILE ...] [--kernel-sum S | --zero-point ZP]

Each input is matched on a Dask worker (a ``LocalCluster`` of ``--workers``
processes, default one per core, unless ``--scheduler`` names a running
scheduler) and written as ``DIR/<input file name>``.  Inputs whose outputs are
complete and valid from an earlier run are skipped, so re-running the same
command resumes an interrupted batch.  The JSON report is marked ``running``
as soon as the matching starts (replacing an earlier report), ``interrupted``
(with the inputs done) when the batch is stopped (Ctrl-C, SIGTERM, a lost cluster),
``failed`` (with the error and its remedy) when an error that re-running the
same command cannot fix stops it, and is complete at the end.  No output
(a matched file, the report, the coadd) may replace a file the command reads
(an input, a PSF file, the input list, a ``-C`` file).
Exit status: 0 when every input is
matched, 1 when any failed (the others are still written, a summary lists
the failures, and the coadd is not made: re-running the same command once
the inputs are fixed finishes the batch and writes it), 2 on a usage error,
130 when interrupted (Ctrl-C), 143 (129) when stopped by SIGTERM (SIGHUP):
re-running the same command finishes the batch.  The parser is registered on the main
``psfmatch`` command by :func:`add_batch_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

__all__ = ["add_batch_parser", "run_batch_command"]

DEFAULT_REPORT_NAME = "psfmatch-batch-report.json"


def _reference_arg(text):
    """argparse type: ``auto`` or a PSF SPEC whose syntax is checked now (usage error, exit 2)."""
    if text.strip().lower() == "auto":
        return "auto"
    from .cli import _spec_type

    return _spec_type("reference PSF")(text)


def _positive_int(text):
    from .cli import _int_type

    return _int_type(1, "expected a positive integer", "expected a positive integer; got {text}")(text)


def _workers(text):
    """argparse type of ``--workers``: an integer from 1 to 8 per core (at least 64; see ``batch.dask_client``)."""
    from .batch import _cpu_count, _max_local_workers
    from .cli import _int_type

    top = _max_local_workers()
    return _int_type(1, "expected a positive integer", "expected a positive integer; got {text}", top,
                     f"expected at most {top} worker processes (8 per core, at least 64; this machine has "
                     f"{_cpu_count()} cores); got {{text}}: give fewer, or start a Dask cluster of your own and pass "
                     "--scheduler ADDRESS without --workers (which sizes the local cluster only)")(text)


def _outdir(text):
    """argparse type of ``--outdir``: not empty (an unset shell variable would make it the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected the directory for the matched files; got {text!r}")
    return text


def _nonnegative_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text!r}")
    return v


def _positive_float(text):
    v = _nonnegative_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return v


#: The smallest ``--coadd-tile`` (as :func:`psfmatch.batch.coadd` requires).
MIN_COADD_TILE = 16

#: The ``--coadd-tile`` used when the option is not given.
DEFAULT_COADD_TILE = 1024


def _tile_size(text):
    """argparse type of ``--coadd-tile``: an integer >= :data:`MIN_COADD_TILE`."""
    v = _positive_int(text)
    if v < MIN_COADD_TILE:
        raise argparse.ArgumentTypeError(f"coadd tiles must be at least {MIN_COADD_TILE} pixels wide; got {text!r}")
    return v


def _memory_limit(text):
    """argparse type of ``--memory-limit``, as Dask reads it; kept as text.

    ``auto``; a number from 0 to 1, the fraction of the machine's memory (0: no limit); or a size
    (``4GiB``, ``500MB``, ``2e9`` bytes).
    """
    value = text.strip()
    if value.lower() == "auto":  # Dask's own choice
        return "auto"
    try:
        if 0.0 <= float(value) <= 1.0:
            return value  # a fraction of the memory (Dask's reading of a number <= 1), 0 for no limit
    except ValueError:
        pass
    try:
        from dask.utils import parse_bytes
    except ImportError:  # the batch fails later with a clear MissingDependencyError
        return value
    try:
        n = parse_bytes(value)
    except (ValueError, TypeError, OverflowError):
        n = None
    if not n or n <= 0:
        raise argparse.ArgumentTypeError(f"expected a memory size per worker such as 4GiB, 500MB or 2e9 (bytes), a "
                                         f"fraction of the machine's memory (0.5; 0 for no limit) or auto; got {text!r}")
    return value


_ADDRESS = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d+)/?$")


def _scheduler_address(text):
    """argparse type of ``--scheduler``: ``[PROTOCOL://]HOST:PORT``."""
    value = text.strip()
    m = _ADDRESS.match(value)
    if m is None or not 0 < int(m.group(1)) < 65536:
        raise argparse.ArgumentTypeError(f"expected the address of a running Dask scheduler with its port, e.g. "
                                         f"tcp://head:8786; got {text!r}")
    return value


def add_batch_parser(subparsers, parents=()):
    """Register the ``batch`` subcommand on an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``.
    parents : sequence of ArgumentParser
        Parent parsers whose options the subcommand shares (the main command's
        ``-v``/``-q``/``--no-progress``).

    Returns
    -------
    argparse.ArgumentParser
        The ``batch`` parser; its ``func`` default is :func:`run_batch_command`.
    """
    b = subparsers.add_parser(
        "batch", parents=list(parents), help="PSF-match many exposures on Dask (and coadd them)",
        description="PSF-match many exposures to one reference PSF on a Dask cluster (a local one by default) "
                    "and write DIR/<input name> for each; failures are isolated and reported, and a re-run "
                    "skips the inputs whose outputs are complete, so an interrupted batch resumes. Optionally "
                    "coadd the matched exposures (inverse-variance weighted; they must share one pixel grid).",
        epilog="Exit status: 0 when every input matched, 1 when any failed (the others are written, the coadd is "
               "not; re-run the same command once the inputs are fixed), 2 on a usage error, 130 when interrupted "
               "(Ctrl-C), 143 when stopped by SIGTERM (129 by SIGHUP): re-run the same command to finish the batch.")
    b.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="exposure files (psfmatch or LSST-style FITS with a PSF, or plain FITS images with --psf)")
    b.add_argument("--input-list", metavar="FILE",
                   help="a text file with more inputs, one per line: a path, optionally followed by that input's "
                        "PSF (FILE or SPEC, as --psf; quote a path with spaces in it)")
    b.add_argument("--psf", type=_spec_type_lazy("science PSF"), metavar="SPEC",
                   help="the PSF of every input (that the input list gives none), for files that carry none (or to "
                        "replace their own), read as psfmatch run --psf reads it: a PSFEx model, an image, a SPEC; "
                        "a re-run with another PSF redoes the outputs")
    b.add_argument("--reference-psf", "-r", required=True, type=_reference_arg, metavar="SPEC|auto",
                   help="the PSF to match to (gaussian:sigma=2.6, doublegaussian:..., moffat:..., a file), or "
                        "'auto': a round Gaussian a margin broader than the broadest science PSF axis over all "
                        "inputs (sigma^2 = (1+margin)^2 lambda_max + floor^2)")
    # (no defaults for the three 'auto' options, so that one given with a reference PSF is seen: a usage error)
    b.add_argument("--reference-kind", choices=("gaussian", "doublegaussian"), default=None,
                   help="shape of an 'auto' reference (default gaussian; doublegaussian: core as the rule, wing "
                        "twice as broad, peak ratio 0.1; needs -r auto)")
    b.add_argument("--reference-margin", type=_nonnegative_float, default=None, metavar="M",
                   help="fractional margin of an 'auto' reference (default 0.1; needs -r auto)")
    b.add_argument("--reference-floor", type=_nonnegative_float, default=None, metavar="F",
                   help="pixels added in quadrature to an 'auto' reference sigma (default 0.7; needs -r auto)")
    b.add_argument("--outdir", "-o", required=True, type=_outdir, metavar="DIR",
                   help="output directory (created if needed)")
    b.add_argument("--coadd", metavar="OUT.fits", help="also coadd the matched exposures into OUT.fits")
    # (no defaults here, so that either given without --coadd is seen: a usage error)
    b.add_argument("--coadd-exclude", metavar="PLANE,...", default=None,
                   help="mask planes left out of the coadd besides NO_DATA (e.g. BAD,SAT,CR; needs --coadd)")
    b.add_argument("--coadd-tile", type=_tile_size, default=None, metavar="N",
                   help=f"coadd tile size in pixels (default {DEFAULT_COADD_TILE}, at least {MIN_COADD_TILE}; memory "
                        "scales with its square; needs --coadd)")
    b.add_argument("--coadd-mixed-calibration", action="store_const", const=True, default=None,
                   help="coadd even inputs whose zero points (MAGZERO, FLUXMAG0...) differ, leaving the coadd "
                        "without one; by default they are refused (needs --coadd)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace an existing coadd file (and a --report file that is not a psfmatch batch report)")
    b.add_argument("--scheduler", type=_scheduler_address, metavar="ADDRESS",
                   help="address of a running Dask scheduler (e.g. tcp://host:8786); default: start a local cluster")
    b.add_argument("--scheduler-timeout", type=_positive_float, default=None, metavar="S",
                   help="seconds to wait for the --scheduler to answer (default 10; needs --scheduler)")
    b.add_argument("--workers", type=_workers, metavar="N",
                   help="worker processes of the local cluster (default: one per core; at most 8 per core; not with "
                        "--scheduler)")
    b.add_argument("--memory-limit", type=_memory_limit, metavar="BYTES",
                   help="memory limit per local worker, e.g. 4GiB (default: 85%% of the memory / workers; not with "
                        "--scheduler)")
    b.add_argument("--force", action="store_true", help="redo every input, even those already complete")
    b.add_argument("--fingerprint", choices=("stat", "sha256"), default="stat",
                   help="how inputs are recognised as unchanged on a re-run: size and mtime (default) or a "
                        "SHA-256 of the bytes")
    b.add_argument("--report", metavar="REPORT.json",
                   help=f"where to write the JSON report (default DIR/{DEFAULT_REPORT_NAME}); an earlier report is "
                        "replaced, any other existing file only with --overwrite. Its 'state' is 'running' from the "
                        "start of the matching (a report left so was killed), 'interrupted' (with the inputs done and "
                        "pending) when the batch is stopped (re-run the same command to finish it), 'failed' (with "
                        "the error and its remedy) when an error that a re-run cannot fix stops it, 'complete' at the "
                        "end")
    from .cli import _override_type, add_flux_scale_options

    add_flux_scale_options(b)  # --kernel-sum S, or --zero-point ZP: each input's S from its own zero point
    b.add_argument("-c", "--config", action="append", metavar="KEY=VALUE", default=[], type=_override_type,
                   help="config override with a dotted path, e.g. kernel.active.kernelSize=25 (repeatable)")
    b.add_argument("-C", "--config-file", action="append", metavar="FILE", default=[],
                   help="config override file: Python, TOML or YAML (repeatable; applied before -c)")
    b.set_defaults(func=run_batch_command)
    return b


def _spec_type_lazy(role):
    """argparse type of a PSF SPEC, as ``psfmatch run`` checks it (imported when used)."""
    def spec_arg(text):
        from .cli import _spec_type

        return _spec_type(role)(text)

    return spec_arg


def _inputs(args):
    """The input paths: the INPUT arguments, then those of ``--input-list``."""
    return _inputs_and_psfs(args)[0]


def _inputs_and_psfs(args):
    """The input paths and, for each, the PSF SPEC that ``--input-list`` gives it (None otherwise)."""
    paths = list(args.inputs or [])
    psfs = [None] * len(paths)
    if args.input_list:
        for path, psf in _read_input_list(args.input_list, with_psfs=True):
            paths.append(path)
            psfs.append(psf)
    return paths, psfs


def _list_line(text, listing, lineno):
    """``(path, psf)`` of a line of ``--input-list``: a path, optionally followed by its PSF (FILE or SPEC).

    A line that names an existing file (or has no blank and opens with no quote) is one path, spaces
    and all, as before PSFs could be listed; otherwise it is split as a shell would (quotes keep a
    path with spaces whole, and are removed from a quoted path with none: ``"a.fits"`` is ``a.fits``).
    """
    from .errors import UnsupportedFormatError

    if os.path.exists(text) or not (any(c.isspace() for c in text) or text[:1] in ("'", '"')):
        return text, None
    remedy = ("give the input's path, optionally followed by its PSF (FILE or SPEC), separated by blanks; quote a "
              "path with spaces in it")
    try:
        fields = shlex.split(text)
    except ValueError as exc:
        raise UnsupportedFormatError(f"--input-list {listing!r} line {lineno} ({text!r}): {exc}; {remedy}") from None
    if len(fields) > 2:
        raise UnsupportedFormatError(f"--input-list {listing!r} line {lineno} ({text!r}) has {len(fields)} fields; "
                                     f"{remedy}")
    if len(fields) == 1:
        return fields[0], None
    from .cli import parse_psf_spec

    parse_psf_spec(fields[1], read_files=False, role=f"science PSF of {fields[0]} (--input-list line {lineno})")
    return fields[0], fields[1]


def _read_input_list(path, with_psfs=False):
    """The inputs listed in the ``--input-list`` text file: one per line, blank and ``#`` lines skipped.

    Parameters
    ----------
    path : str
        The text file.
    with_psfs : bool
        Return ``(input, psf)`` pairs: a line may give its input's PSF (FILE or SPEC) after the path
        (None when it gives none).  Otherwise, the paths only.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist.
    UnsupportedFormatError
        If it is a directory or not a text file (a FITS file given by mistake, say), or a line has
        more than two fields or unbalanced quotes.
    InvalidInputError
        For a malformed PSF SPEC.
    """
    from .errors import MissingFileError, UnsupportedFormatError

    if not os.path.exists(path):
        raise MissingFileError(f"input list {path!r} does not exist")
    remedy = ("--input-list must be a text file with one input path per line (give exposure files as INPUT "
              "arguments)")
    if os.path.isdir(path):
        raise UnsupportedFormatError(f"--input-list {path!r} is a directory; {remedy}")
    with open(path, "rb") as fh:
        if fh.read(9) == b"SIMPLE  =":  # (its header is text: refused before its pixels are read)
            raise UnsupportedFormatError(f"--input-list {path!r} is a FITS file; {remedy}")
        fh.seek(0)
        data = fh.read()
    try:
        text = data.decode()
        bad = data.find(b"\0")  # (valid UTF-8, yet binary)
    except UnicodeDecodeError as exc:
        bad = exc.start
    if bad >= 0:
        raise UnsupportedFormatError(f"--input-list {path!r} is not a text file (byte {bad} is not UTF-8 text); "
                                     f"{remedy}")
    entries = [_list_line(line.strip(), path, lineno) for lineno, line in enumerate(text.splitlines(), 1)
               if line.strip() and not line.lstrip().startswith("#")]
    return entries if with_psfs else [p for p, _ in entries]


def _config(args):
    from .config import ModelPsfMatchConfig, apply_overrides, load_overrides

    config = ModelPsfMatchConfig()
    for path in args.config_file or []:
        load_overrides(config, path)
    apply_overrides(config, args.config or [])
    config.validate()
    return config


def _is_batch_report(path) -> bool:
    """Whether ``path`` holds a JSON report written by ``psfmatch batch`` (which a re-run may replace)."""
    try:
        with open(path) as fh:
            if fh.read(1) != "{":
                return False
            fh.seek(0)
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"outdir", "counts", "exposures"} <= data.keys()


def _check_destination(path, what, paths, outdir, *, overwrite, replaceable=None):
    """Check a file that the batch writes at the end (``--report``, ``--coadd``) before any work.

    Refuses an input, a matched file, a directory, a missing folder (other than
    ``outdir``, which is created), and an existing file without ``--overwrite``
    unless ``replaceable(path)`` says it may be replaced anyway.
    """
    from .batch import _check_extra_output
    from .io.fits import same_file
    from .errors import MissingFileError, OutputExistsError

    _check_extra_output(path, what, paths, outdir)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) and not same_file(folder, outdir):
        raise MissingFileError(f"cannot write {what} {path}: directory {folder} does not exist; create it "
                               f"(mkdir -p {shlex.quote(folder)}) or give a path in an existing directory")
    if os.path.lexists(path) and not overwrite and not (replaceable is not None and replaceable(path)):
        kind = "is not a psfmatch batch report" if replaceable is not None else "exists already"
        raise OutputExistsError(f"{what} {path} {kind}; pass --overwrite to replace it, or choose another name")


def _coadd_only_options(args):
    """The coadd options given without ``--coadd`` (which would otherwise be ignored), as written on the command line.

    Returns
    -------
    list of str
        ``--coadd-exclude``, ``--coadd-tile`` and ``--coadd-mixed-calibration`` where given while
        ``--coadd`` is not; empty otherwise.
    """
    if args.coadd:
        return []
    return [option for option, value in (("--coadd-exclude", args.coadd_exclude), ("--coadd-tile", args.coadd_tile),
                                         ("--coadd-mixed-calibration", args.coadd_mixed_calibration))
            if value is not None]


def _auto_only_options(args):
    """The options of an automatic reference given with a reference PSF (which would ignore them).

    Returns
    -------
    list of str
        ``--reference-kind``, ``--reference-margin`` and ``--reference-floor`` where given while
        ``--reference-psf`` is not ``auto``; empty otherwise.
    """
    if args.reference_psf == "auto":
        return []
    return [option for option, value in (("--reference-kind", args.reference_kind),
                                         ("--reference-margin", args.reference_margin),
                                         ("--reference-floor", args.reference_floor)) if value is not None]


def _ignored_options_error(args):
    """The usage error of options that would be ignored: coadd options without ``--coadd``, or options of an
    automatic reference with another ``-r``; None when there are none."""
    stray = _coadd_only_options(args)
    if stray:
        names, one = " and ".join(stray), len(stray) == 1
        ignored = "it would be" if one else "they would be"
        return (f"{names} {'needs' if one else 'need'} --coadd (without a coadd {ignored} ignored); add --coadd "
                f"OUT.fits to make the coadd, or leave {names} out")
    stray = _auto_only_options(args)
    if stray:
        names, one = " and ".join(stray), len(stray) == 1
        return (f"{names} {'shapes' if one else 'shape'} the automatic reference of -r auto; with -r "
                f"{args.reference_psf} {'it would be' if one else 'they would be'} ignored: give -r auto, or leave "
                f"{names} out")
    return None


def _cluster_option_error(args):
    """The usage error of cluster options that the chosen cluster would ignore, or None.

    ``--workers`` and ``--memory-limit`` size the local cluster, which ``--scheduler`` replaces;
    ``--scheduler-timeout`` is how long to wait for that ``--scheduler``.
    """
    if args.scheduler is not None:
        local = [option for option, value in (("--workers", args.workers), ("--memory-limit", args.memory_limit))
                 if value is not None]
        if local:
            names, one = " and ".join(local), len(local) == 1
            return (f"{names} {'sizes' if one else 'size'} the local cluster, which --scheduler {args.scheduler} "
                    f"replaces ({'it would be' if one else 'they would be'} ignored): size your own cluster when you "
                    f"start it, or leave --scheduler out to start a local one")
    elif args.scheduler_timeout is not None:
        return ("--scheduler-timeout is how long to wait for the --scheduler ADDRESS (without one a local cluster is "
                "started, and the timeout would be ignored): add --scheduler ADDRESS, or leave --scheduler-timeout out")
    return None


def _check_coadd_options(args, paths):
    """Check ``--coadd``'s name, the inputs' grid and the ``--coadd-exclude`` planes before any exposure is matched.

    The planes are looked up in the inputs' mask planes (headers only), plus ``NO_DATA``, which
    matching adds; a plain image (no mask of its own) is matched with the default planes.  Inputs
    that cannot be read are left out here: their matches fail and are reported.
    """
    from .batch import _check_batch_calibration, _check_coadd_grid, _check_coadd_name, _plane_names
    from .errors import InvalidInputError

    _check_coadd_name(args.coadd, "--coadd")
    # inputs off one pixel grid: the coadd would refuse them only after every input had been matched (the
    # headers read for it also give the mask planes; the inputs that cannot be read are left out)
    grids = _check_coadd_grid(paths, f"--coadd {args.coadd}", "leave --coadd out to match them without a coadd")
    # and on different zero points (once matched): the coadd would refuse them after every match too
    _check_batch_calibration(grids, f"--coadd {args.coadd}", zero_point=args.zero_point, kernel_sum=args.kernel_sum,
                             require_same=not args.coadd_mixed_calibration)
    names = [name for name in _plane_names(args.coadd_exclude) if name != "NO_DATA"]
    if not names:
        return
    known = {"NO_DATA"}.union(*(g.mask_planes for g in grids))
    unknown = [name for name in names if name not in known]
    if unknown and grids:
        raise InvalidInputError(f"--coadd-exclude {','.join(unknown)}: not a mask plane of any input; known planes: "
                                f"{','.join(sorted(known))}")


def _science_psfs(args, listed):
    """``psf`` of ``match_many``: None, the ``--psf`` SPEC, or one entry per input (its ``--input-list`` PSF, else
    the ``--psf`` SPEC, else None).  ``--psf`` is read now (as ``psfmatch run`` reads it), so that a missing or
    unreadable file is an error before any work; the workers read it again, each for its input."""
    from .cli import parse_psf_spec

    if args.psf:
        parse_psf_spec(args.psf, role="science PSF (--psf)")
    if not any(listed):
        return args.psf
    return [spec if spec else args.psf for spec in listed]


def run_batch_command(args) -> int:
    """Run ``psfmatch batch`` from parsed arguments.

    Every argument is checked before any exposure is matched.  The summary is
    printed (with ``-q``: only the failures, on standard error) before the
    report and the coadd are written, so it is shown even when one of those
    writes fails.

    Returns
    -------
    int
        0 when every input matched (and the coadd, if asked for, was written),
        1 when any input failed (the coadd is then not made, so that re-running
        the same command once the inputs are fixed writes it) or the coadd
        could not be made, 2 on a usage error found after parsing (no inputs,
        ``--coadd-exclude`` / ``--coadd-tile`` without ``--coadd``, or
        ``--reference-kind`` / ``--reference-margin`` / ``--reference-floor``
        without ``-r auto``, ``--workers`` / ``--memory-limit`` with
        ``--scheduler``, or ``--scheduler-timeout`` without it).
    """
    from . import progress as progress_mod
    from .batch import _check_paths, _check_spared_files, _one_line, coadd, match_many
    from .io.fits import same_file
    from .errors import InvalidInputError, PsfMatchError

    quiet = bool(getattr(args, "quiet", False))
    for error in (_ignored_options_error(args), _cluster_option_error(args)):
        if error:
            print(f"psfmatch batch: error: {error}", file=sys.stderr)
            return 2
    paths, listed_psfs = _inputs_and_psfs(args)
    if not paths:
        print("psfmatch batch: error: no inputs (give INPUT files or --input-list FILE)", file=sys.stderr)
        return 2
    outdir = os.path.abspath(args.outdir)
    paths = _check_paths(paths, outdir)
    report_path = args.report or os.path.join(outdir, DEFAULT_REPORT_NAME)
    _check_destination(report_path, "--report", paths, outdir, overwrite=args.overwrite,
                       replaceable=_is_batch_report)
    if args.coadd:
        _check_destination(args.coadd, "--coadd", paths, outdir, overwrite=args.overwrite)
        if same_file(args.coadd, report_path):
            raise InvalidInputError(f"--coadd {args.coadd} and the report {report_path} are the same file; give "
                                    "distinct names")
        _check_coadd_options(args, paths)
    elif args.zero_point is not None:  # every input's zero point is read before any is matched (match_many too)
        from .batch import _check_batch_calibration

        _check_batch_calibration(paths, f"--zero-point {args.zero_point!r}", zero_point=args.zero_point)
    # nor may they replace the command's other inputs: the reference PSF's file, the input list, -C files
    from .cli import _check_outputs_spare_inputs, _config_inputs, _spec_file

    others = [(None if args.reference_psf == "auto" else _spec_file(args.reference_psf)[0], "the reference PSF"),
              (args.input_list, "the input list, --input-list"), *_config_inputs(args),
              (_spec_file(args.psf)[0] if args.psf else None, "the science PSF, --psf"),
              *((_spec_file(s)[0], f"the PSF of {p} in --input-list") for p, s in zip(paths, listed_psfs) if s)]
    _check_outputs_spare_inputs([(report_path, "--report"), (args.coadd, "--coadd")], others)
    _check_spared_files(paths, outdir, others)  # nor the matched files (DIR/<input name>)
    config = _config(args)
    if args.reference_psf == "auto":
        reference = "auto"
    else:
        from .cli import parse_psf_spec

        reference = parse_psf_spec(args.reference_psf, role="reference PSF")
    psf = _science_psfs(args, listed_psfs)
    ref_opts = {"kind": args.reference_kind or "gaussian"}
    if args.reference_margin is not None:
        ref_opts["margin"] = args.reference_margin
    if args.reference_floor is not None:
        ref_opts["floor"] = args.reference_floor

    if progress_mod.is_enabled():
        progress = True
    elif quiet:
        progress = False
    else:
        def progress(report, done, total):
            print(f"psfmatch batch: [{done}/{total}] {report.line()}", file=sys.stderr, flush=True)

    timeout = {} if args.scheduler_timeout is None else {"connect_timeout": args.scheduler_timeout}
    # (the report is marked running before any match, interrupted if stopped; its final write comes after the summary)
    reports = match_many(paths, reference, outdir, config=config, client=args.scheduler,
                         kernelSum=args.kernel_sum, zeroPoint=args.zero_point, n_workers=args.workers,
                         memory_limit=args.memory_limit,
                         force=args.force, fingerprint=args.fingerprint, progress=progress,
                         reference_options=ref_opts, psf=psf, report_path=report_path, write_final_report=False,
                         **timeout)
    status = 0 if reports.ok else 1

    def say(line, failure=False):  # -q: only the failures, on standard error
        if not quiet:
            print(line, flush=True)
        elif failure:
            print(line, file=sys.stderr, flush=True)

    if quiet:
        for r in reports.failed:
            say(f"psfmatch batch: FAILED {r.path}: {r.error_type}: {_one_line(r.error_message)}", failure=True)
    else:
        say(reports.summary())
    reports.write_json(report_path)  # a failure here (disk full ...) is one error line after the summary
    say(f"report: {os.path.abspath(report_path)}")
    if args.coadd:
        if not reports.ok:  # a coadd of some inputs would be a wrong product, and block the re-run
            say(f"coadd: not written: {len(reports.failed)} of {len(reports)} input(s) failed; fix them and re-run "
                "the same command (the matched exposures are skipped) to write the coadd", failure=True)
            status = 1
        else:
            try:
                c = coadd(reports.output_paths(), args.coadd, exclude_planes=args.coadd_exclude,
                          tile_size=args.coadd_tile or DEFAULT_COADD_TILE, overwrite=args.overwrite,
                          require_same_calibration=not args.coadd_mixed_calibration)
                say(f"coadd: {c.output}: {c.shape[1]}x{c.shape[0]} px, coverage {c.coverage:.3f}, {c.time:.1f} s")
                if c.flagged_inputs:  # (also with -q: the coadd's PSF does not hold where they are)
                    say(f"coadd: {len(c.flagged_inputs)} of {len(c.inputs)} input(s) combined despite QA flags "
                        "from their match: " + "; ".join(f"{p} ({', '.join(f)})" for p, f in c.flagged_inputs.items()),
                        failure=True)
            except (PsfMatchError, OSError) as exc:
                say(f"coadd: FAILED: {type(exc).__name__}: {exc}", failure=True)
                status = 1
    return status
