"""The ``psfmatch`` command line: a thin shell over the library.

Subcommands::

    psfmatch run EXPOSURE.fits --reference-psf SPEC -o OUT.fits [--kernel-out K.fits]
                 [--qa-plot QA.png] [--qa-json QA.json] [-c key=value ...] [-C overrides.py]
                 [--psf SPEC] [--kernel-sum S | --zero-point ZP] [--overwrite] [--debug] [--debug-dir DIR]
    psfmatch demo [--outdir DIR] [--size N] [--seed S] [-c ...] [-C ...] [--debug]
    psfmatch config [-c ...] [-C ...] [--all]
    psfmatch inspect-psf FILE|SPEC [--at X,Y] [--plot FIG.png] [--json]
    psfmatch batch ...   (many exposures on Dask: see :mod:`psfmatch.batch_cli`)

Exit status: 0 on success, 1 on a failure (one line on standard error; the
traceback too with ``-v``), 2 on a usage error, 130 when interrupted (Ctrl-C),
143 (129) when stopped by SIGTERM (SIGHUP), which cleans up as Ctrl-C does.
Outputs are written atomically and only when the whole command succeeded.  A PSF SPEC is one of::

    gaussian:sigma=2.6          gaussian:fwhm=6.1
    doublegaussian:sigma1=2.0,sigma2=4.5,b=0.1
    moffat:fwhm=5.0,beta=3.5
    psfex:FILE  image:FILE  piff:FILE  psfmatch:FILE  or a FILE whose format is recognized

(``size=N`` sets the stamp width of an analytic model; the task resizes the
reference to the science stamp anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import shlex
import sys
import traceback
import warnings

from .config import format_config  # (re-exported: psfmatch.cli.format_config)

__all__ = ["main", "parse_psf_spec", "PSF_SPEC_HELP"]

log = logging.getLogger("psfmatch.cli")

PSF_SPEC_HELP = ("gaussian:sigma=S | gaussian:fwhm=F | doublegaussian:sigma1=S1,sigma2=S2,b=B | "
                 "moffat:fwhm=F,beta=B (each optionally ,size=N odd) | psfex:FILE | image:FILE | piff:FILE | "
                 "psfmatch:FILE | FILE (a file optionally followed by its reader's options, e.g. "
                 "image:FILE,background=1000,recenter=true)")

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_ANALYTIC = {
    "gaussian": ({"sigma", "fwhm", "size"}, "gaussian:sigma=2.6 or gaussian:fwhm=6.1"),
    "doublegaussian": ({"sigma1", "sigma2", "b", "fwhm1", "size"}, "doublegaussian:sigma1=2.0,sigma2=4.5,b=0.1"),
    "moffat": ({"fwhm", "beta", "size"}, "moffat:fwhm=5.0,beta=3.5"),
}
_ALIASES = {"gauss": "gaussian", "double-gaussian": "doublegaussian", "doublegauss": "doublegaussian",
            "dgauss": "doublegaussian"}
_FILE_KINDS = ("psfex", "image", "piff", "psfmatch", "file")


# ---------------------------------------------------------------------------
# PSF specifications


def _odd_size(value, minimum):
    n = max(int(math.ceil(value)), minimum)
    return n if n % 2 == 1 else n + 1


def _stamp_size(spec, params, width):
    """The odd stamp width of an analytic model: ``size=N`` or about ``width`` (at least 11), checked.

    Raises the usual spec error (not an OverflowError) for a stamp beyond
    :data:`psfmatch.psf.psfex.MAX_STAMP_SIZE` pixels, e.g. ``sigma=1e308``.
    """
    from .psf.psfex import MAX_STAMP_SIZE

    if "size" in params:
        size = params["size"]
        if size > MAX_STAMP_SIZE:
            raise _spec_error(spec, f"size={size} is larger than the {MAX_STAMP_SIZE} px limit of a PSF stamp")
        return size
    if not (math.isfinite(width) and width <= MAX_STAMP_SIZE):
        size = f"about {width:.0f} px" if math.isfinite(width) else "infinite"
        raise _spec_error(spec, f"the model is too broad: its stamp (8 sigma or 8 FWHM wide) would be {size}, "
                                f"beyond the {MAX_STAMP_SIZE} px limit of a PSF stamp; give a smaller width")
    return _odd_size(width, 11)


def _spec_error(spec, why):
    """The error for a malformed SPEC (:func:`parse_psf_spec` puts the PSF's role in front)."""
    from .errors import InvalidInputError

    return InvalidInputError(f"{spec!r}: {why}; expected {PSF_SPEC_HELP}")


def _parse_params(spec, kind, text):
    allowed, example = _ANALYTIC[kind]
    params = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise _spec_error(spec, f"{item!r} is not key=value (e.g. {example})")
        key, value = (s.strip() for s in item.split("=", 1))
        key = key.lower()
        if key not in allowed:
            raise _spec_error(spec, f"{kind} takes {', '.join(sorted(allowed))}, not {key!r}")
        if key in params:
            raise _spec_error(spec, f"{key!r} is given twice")
        try:
            v = float(value)
        except ValueError:
            raise _spec_error(spec, f"{key}={value!r} is not a number") from None
        if not (math.isfinite(v) and v > 0) and key != "b":
            raise _spec_error(spec, f"{key} must be positive; got {value}")
        params[key] = v
    if "size" in params:
        s = params["size"]
        if s != int(s) or int(s) % 2 == 0 or s < 3:
            raise _spec_error(spec, f"size must be an odd integer >= 3; got {params['size']:g}")
        params["size"] = int(s)
    return params


def parse_psf_spec(spec, *, read_files=True, role="PSF"):
    """Build a PSF model from a command-line specification.

    Parameters
    ----------
    spec : str
        ``gaussian:sigma=2.6``, ``gaussian:fwhm=6.1``,
        ``doublegaussian:sigma1=2,sigma2=4.5,b=0.1`` (``fwhm1`` instead of ``sigma1``;
        ``sigma2`` defaults to ``2 sigma1``, ``b`` (peak ratio) to 0),
        ``moffat:fwhm=5,beta=3.5``, each with an optional odd ``size=N`` (stamp
        width; default about +-4 sigma, or +-4 FWHM for a Moffat); ``psfex:FILE``,
        ``image:FILE``, ``piff:FILE``, ``psfmatch:FILE``, or a ``FILE`` whose format
        :func:`psfmatch.psf.read_psf` recognizes.
    read_files : bool
        If False, only the syntax is checked and ``None`` is returned for a
        file (used to validate arguments before any work).
    role : str
        What the PSF is for, named in the error for a missing file
        (``"reference PSF"``, ``"science PSF (--psf)"``).

    Returns
    -------
    PSF model or None

    Raises
    ------
    InvalidInputError
        For an unknown kind, a malformed, missing or out-of-range parameter, or
        a stamp wider than 4095 pixels (``size=N``, or implied by the width).
    FileNotFoundError
        For a file that does not exist.
    UnsupportedFormatError
        For a file that no PSF reader recognizes.

    Examples
    --------
    >>> parse_psf_spec("gaussian:sigma=2.6")
    GaussianPsf(23, 23, sigma=2.6)
    >>> parse_psf_spec("moffat:fwhm=5,beta=3.5,size=41")
    MoffatPsf(41, 41, fwhm=5.0, beta=3.5)
    """
    from .errors import InvalidInputError

    try:  # the syntax, and an analytic model's parameters: the error names the PSF's role
        path, fmt = _spec_file(spec)
        if path is None:
            return _analytic_psf(spec)
        options = _spec_options(spec)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{role} {exc}") from None
    text = str(spec).strip()
    if not read_files:
        return None
    if not os.path.exists(path):
        from .errors import MissingFileError

        raise MissingFileError(f"{role} file {path!r} does not exist (and {text!r} is not an analytic "
                               f"model: {PSF_SPEC_HELP})")
    from .psf import read_psf

    return read_psf(path, format=fmt, **options)  # (read_psf refuses an option its format's reader does not take)


def _analytic_psf(spec):
    """The analytic model of a SPEC such as ``gaussian:sigma=2.6`` (InvalidInputError when malformed)."""
    from .psf import DoubleGaussianPsf, GaussianPsf, MoffatPsf

    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    kind_l = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    p = _parse_params(spec, kind_l, rest)
    if kind_l == "gaussian":
        if ("sigma" in p) == ("fwhm" in p):
            raise _spec_error(spec, "give exactly one of sigma and fwhm")
        sigma = p["sigma"] if "sigma" in p else p["fwhm"] / _FWHM_PER_SIGMA
        size = _stamp_size(spec, p, 8 * sigma + 1)
        return GaussianPsf(size, size, sigma)
    if kind_l == "doublegaussian":
        if ("sigma1" in p) == ("fwhm1" in p):
            raise _spec_error(spec, "give exactly one of sigma1 and fwhm1")
        s1 = p["sigma1"] if "sigma1" in p else p["fwhm1"] / _FWHM_PER_SIGMA
        s2 = p.get("sigma2", 2 * s1)
        b = p.get("b", 0.0)
        if b < 0:
            raise _spec_error(spec, f"b (peak ratio of the wing to the core) must be >= 0; got {b:g}")
        size = _stamp_size(spec, p, 8 * (max(s1, s2) if b > 0 else s1) + 1)
        return DoubleGaussianPsf(size, size, s1, s2, b)
    missing = {"fwhm", "beta"} - set(p)
    if missing:
        raise _spec_error(spec, f"moffat needs {' and '.join(sorted(missing))}")
    if p["beta"] <= 1:
        raise _spec_error(spec, f"moffat beta must be > 1; got {p['beta']:g}")
    size = _stamp_size(spec, p, 8 * p["fwhm"] + 1)
    return MoffatPsf(size, size, p["fwhm"], p["beta"])


#: A reader option at the end of a file SPEC: ``,name=value``.
_FILE_OPTION = re.compile(r",\s*([A-Za-z_]\w*)\s*=([^,=]*)$")


def _spec_file(spec):
    """The file behind a PSF SPEC and its format, ``(path, format)``; ``(None, None)`` for an analytic model.

    ``format`` is None when the reader is to identify the file (``file:FILE`` or a bare ``FILE``).
    Only the syntax is checked: the file need not exist.  Reader options after the
    file name are not part of ``path`` (see :func:`_spec_parts`).

    Raises
    ------
    InvalidInputError
        For an empty SPEC, a file kind without a file name, or an unknown kind naming no file.
    """
    return _spec_parts(spec)[:2]


def _spec_parts(spec):
    """``(path, format, options)`` of a PSF SPEC: :func:`_spec_file`'s pair and the text of the reader options.

    A file SPEC may end in the options of its reader, ``,name=value`` each
    (``image:psf.fits,background=1000,recenter=true``): trailing items of that form
    are options unless the whole text names an existing file.  ``options`` is that
    suffix as given (``",background=1000,recenter=true"``; ``""`` without), for
    :func:`_spec_options` to parse.
    """
    text = str(spec).strip()
    if not text:
        raise _spec_error(spec, "it is empty")
    kind, sep, rest = text.partition(":")
    kind_l = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if sep and kind_l in _ANALYTIC:
        return None, None, ""
    if sep and kind_l in _FILE_KINDS:
        path, options = _split_options(rest)
        if not path:
            raise _spec_error(spec, f"{kind_l}: needs a file name")
        _check_option_items(spec, path)
        return path, (None if kind_l == "file" else kind_l), options
    path, options = _split_options(text)
    _check_option_items(spec, path)
    if not os.path.exists(path) and sep and kind.strip().replace("-", "").isalnum() and len(kind.strip()) > 1:
        raise _spec_error(spec, f"unknown kind {kind.strip()!r}, and no file of that name")
    return path, None, options


def _check_option_items(spec, path):
    """Refuse a file name that does not exist but is an existing file followed by items that are not
    ``,name=value`` options (``image:psf.fits,=3``, ``image:psf.fits,recenter``): a malformed option, not a
    missing file."""
    if os.path.exists(path):
        return
    head, comma, _ = path.rpartition(",")
    while comma:
        if head.strip() and os.path.exists(head.strip()):
            raise _spec_error(spec, f"{path[len(head):]!r} after the file {head.strip()!r} is not a list of reader "
                                    "options: give each as ,name=value (e.g. image:FILE,background=1000,recenter=true)")
        head, comma, _ = head.rpartition(",")


def _split_options(text):
    """``text`` as ``(file name, options suffix)``.

    The trailing ``,name=value`` items are options; of the ways to split them off,
    the one with the longest file name that exists is taken (``run,v=2/psf.fits,recenter=true``
    names ``run,v=2/psf.fits``; a file named like an option is a file), else the one
    with every such item an option (a file that does not exist is reported by its
    name without them).
    """
    path = text
    while True:
        if os.path.exists(path.strip()):
            return path.strip(), text[len(path):]
        m = _FILE_OPTION.search(path)
        if m is None:
            return path.strip(), text[len(path):]
        path = path[:m.start()]


#: The reader options that are booleans: ``1`` and ``0`` are taken for them as ``yes`` and ``no``.
_BOOL_OPTIONS = ("recenter", "require_psf_like")

#: The words a boolean reader option takes (``recenter=no``), as in configuration files.
_TRUE_WORDS = ("true", "yes", "on")
_FALSE_WORDS = ("false", "no", "off")


def _option_value(text):
    """A reader option's value: ``true``/``false`` (``yes``/``no``, ``on``/``off``) as bool, then an int, a
    float, else the text (an HDU name)."""
    low = text.lower()
    if low in _TRUE_WORDS + _FALSE_WORDS:
        return low in _TRUE_WORDS
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _spec_options(spec) -> dict:
    """The reader options of a file SPEC as keyword arguments of :func:`psfmatch.psf.read_psf` (empty for none).

    Raises
    ------
    InvalidInputError
        For an option given twice or without a value.
    """
    options = {}
    for item in _spec_parts(spec)[2].split(",")[1:]:
        name, _, value = (t.strip() for t in item.partition("="))
        if not value:
            raise _spec_error(spec, f"the reader option {name!r} needs a value ({name}=VALUE)")
        if name in options:
            raise _spec_error(spec, f"the reader option {name!r} is given twice")
        options[name] = _option_value(value)
        if name in _BOOL_OPTIONS and value in ("1", "0"):  # (recenter=1 as recenter=yes; an HDU index stays an int)
            options[name] = value == "1"
    return options


def _hdu_arg(text):
    """argparse type: an HDU index (digits) or name, or a file name (kept as text)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty HDU; give a name (e.g. MSK) or an index (e.g. 2)")
    return int(text) if text.isdigit() else text


def _spec_type(role):
    """argparse type: validate a PSF SPEC early (usage error, exit 2), keep the text; errors name ``role``."""
    def spec_arg(text):
        from .errors import PsfMatchError

        try:
            parse_psf_spec(text, read_files=False, role=role)
        except PsfMatchError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return spec_arg


_spec_arg = _spec_type("PSF")


def _position_arg(text):
    try:
        x, y = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y (two numbers separated by a comma); got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"position must be finite; got {text!r}")
    return (x, y)


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be positive and finite; got {text!r}")
    return v


def _finite_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite; got {text!r}")
    return v


#: The largest ``psfmatch demo --size`` (a float32 plane of 1 GiB; 100000 asked numpy for 75 GiB before failing).
DEMO_MAX_SIZE = 16384

#: The smallest ``psfmatch demo --size``: the demo places its stars 15 px from the edges.
DEMO_MIN_SIZE = 32


def _int_type(minimum, not_an_int, too_small, maximum=None, too_large=None):
    """An argparse type: an integer ``>= minimum`` (and ``<= maximum`` when given).

    ``not_an_int`` is the message for text that is no integer (``"; got 'x'"`` is added),
    ``too_small`` (``too_large``) the one for a smaller (larger) integer, a format with ``{text}``
    (the text as given).
    """
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{not_an_int}; got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(too_small.format(text=repr(text)))
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(too_large.format(text=repr(text)))
        return v

    return parse


#: argparse type of ``demo --size``: an integer >= :data:`DEMO_MIN_SIZE`.
_demo_size = _int_type(DEMO_MIN_SIZE, "expected an integer number of pixels",
                       f"the demo exposure needs at least {DEMO_MIN_SIZE} x {DEMO_MIN_SIZE} pixels; got {{text}} "
                       "(e.g. --size 512)", DEMO_MAX_SIZE,
                       f"the demo exposure is at most {DEMO_MAX_SIZE} x {DEMO_MAX_SIZE} pixels (1 GiB a plane); got "
                       "{text}")
#: argparse type of a random seed: an integer >= 0.
_seed = _int_type(0, "expected an integer >= 0", "a random seed must be >= 0; got {text}")


# ---------------------------------------------------------------------------
# configuration


def _build_config(args):
    from .config import ModelPsfMatchConfig, apply_overrides, load_overrides

    config = ModelPsfMatchConfig()
    for path in getattr(args, "config_file", None) or []:
        load_overrides(config, path)
    apply_overrides(config, getattr(args, "config", None) or [])
    config.validate()
    return config


# ---------------------------------------------------------------------------
# outputs: staged, then moved into place together


def _check_not_a_directory(path, what):
    """Refuse an output path that exists and is not a regular file (a directory, a FIFO ...): no
    ``--overwrite`` can replace it by a file."""
    from .errors import InvalidInputError

    if os.path.exists(path) and not os.path.isfile(path):
        kind = "a directory" if os.path.isdir(path) else "not a regular file"
        raise InvalidInputError(f"{what} {path} is {kind}; give the name of a file to write")


class _StagedOutputs:
    """Write each output to a temporary file beside it; move them all into place only at the end."""

    def __init__(self, overwrite=False):
        self.overwrite = overwrite
        self.final = []
        self.temps = {}

    def add(self, path, what):
        from .errors import MissingFileError, OutputExistsError, OutputNotWritableError
        from .io.fits import same_file, why_unwritable

        if path is None:
            return None
        path = os.fspath(path)
        if not path.strip():
            from .errors import InvalidInputError

            raise InvalidInputError(f"{what} is an empty file name ({path!r}); give the file to write")
        full = os.path.abspath(path)
        if any(same_file(path, p) for p in self.final):
            raise OutputExistsError(f"{what} {path} is also used for another output; give distinct file names")
        folder = os.path.dirname(full)
        if not os.path.isdir(folder):
            raise MissingFileError(f"cannot write {what} {path}: directory {folder} does not exist; create it "
                                   f"(mkdir -p {shlex.quote(folder)}) or give a path in an existing directory")
        why = why_unwritable(folder)
        if why:
            raise OutputNotWritableError(f"cannot write {what} {path}: directory {folder} is not writable ({why}); make "
                                   "it writable (chmod u+wx) or write the output into another directory")
        _check_not_a_directory(path, what)
        if os.path.lexists(path) and not self.overwrite:
            raise OutputExistsError(f"{what} {path} exists already; pass --overwrite to replace it")
        self.final.append(path)
        return path

    def temp(self, path):
        import tempfile

        folder = os.path.dirname(os.path.abspath(path))
        base = os.path.basename(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial" + os.path.splitext(base)[1], dir=folder)
        os.close(fd)
        os.unlink(tmp)  # writers refuse to write onto an existing file
        self.temps[path] = tmp
        return tmp

    def commit(self):
        """Move every staged file into place, after checking all the destinations (nothing is moved
        when one of them cannot be replaced); a temporary file stays known until it is moved, so that
        :meth:`discard` removes it if a move fails."""
        from .errors import OutputExistsError

        for path in self.final:
            if path not in self.temps:
                continue
            _check_not_a_directory(path, "output")
            if os.path.lexists(path) and not self.overwrite:
                raise OutputExistsError(f"{path} appeared while psfmatch was running; not replaced")
        with _signals_deferred():  # all the outputs or none: no Ctrl-C (SIGTERM) between two moves
            for path in self.final:
                tmp = self.temps.get(path)
                if tmp is not None:
                    os.replace(tmp, path)
                    del self.temps[path]

    def discard(self):
        for tmp in self.temps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.temps.clear()


def _figure_format(path, what):
    """The image format of a figure file name (its extension, PNG without one); checked before any work."""
    from .display import figure_format

    return figure_format(path, what)


def _check_outputs_spare_inputs(outputs, inputs):
    """Refuse an output that would replace an input file (the same file, also through a symbolic link).

    ``outputs`` and ``inputs`` are ``(path, what)`` pairs; a path of None is skipped.

    Raises
    ------
    InvalidInputError
        Naming the output, the input and what the input is, before anything is written.
    """
    from .errors import InvalidInputError
    from .io.fits import same_file

    for path, what in outputs:
        for source, role in inputs:
            if path is not None and source is not None and same_file(path, source):
                raise InvalidInputError(f"{what} {path} would overwrite the input {source} ({role}: the same file, "
                                        "also through a symbolic link); give another output name")


def _config_inputs(args):
    """The ``-C`` override files of a command, as ``(path, what)`` pairs."""
    return [(path, "config file -C") for path in getattr(args, "config_file", None) or []]


# ---------------------------------------------------------------------------
# commands


def _write_products(outputs, result, exposure, *, matched=None, kernel=None, qa_plot=None, qa_json=None,
                    qa_format="png"):
    """Write the requested products to staged temporary files (the caller commits them)."""
    from . import display
    from .io import write_exposure, write_kernel

    if matched:
        write_exposure(result.psfMatchedExposure, outputs.temp(matched), overwrite=True)
    if kernel:
        write_kernel(result.psfMatchingKernel, outputs.temp(kernel), overwrite=True)
    grid = None
    if qa_plot or qa_json:
        kern, cells, md, sci, ref, psf_size, bbox = display._products(result, exposure)
        grid = display.field_qa(kern, sci, ref, psf_size, bbox, cells=cells)
    if qa_json:
        report = display.qa_report(result, exposure, grid=grid)
        display.write_qa_json(report, outputs.temp(qa_json), overwrite=True)
    if qa_plot:
        fig = display.plot_qa(result, exposure, grid=grid)
        display.save_figure(fig, outputs.temp(qa_plot), fmt=qa_format, overwrite=True)
    return grid


def _run_task(args, config, exposure, reference):
    from .task import ModelPsfMatchTask

    return ModelPsfMatchTask(config=config).run(exposure, reference, kernelSum=args.kernel_sum,
                                                zeroPoint=args.zero_point)


def _cmd_run(args) -> int:
    from .errors import MissingPsfError
    from .io import read_exposure
    from .qa import format_report

    if args.variance_kind is not None and args.variance is None:  # it would be ignored: a usage error
        print(f"psfmatch run: error: --variance-kind {args.variance_kind} needs --variance: it says what the "
              "--variance plane holds (an exposure file's own VARIANCE plane is a variance, and without one the "
              "variance is estimated); name the plane with --variance HDU|FILE, or leave --variance-kind out",
              file=sys.stderr)
        return 2
    config = _build_config(args)
    outputs = _StagedOutputs(overwrite=args.overwrite)
    products = ((args.output, "output"), (args.kernel_out, "--kernel-out"), (args.qa_plot, "--qa-plot"),
                (args.qa_json, "--qa-json"))
    inputs = [(args.exposure, "the exposure"), (_spec_file(args.reference_psf)[0], "the reference PSF"),
              (_spec_file(args.psf)[0] if args.psf else None, "the science PSF, --psf"), *_config_inputs(args),
              *((path, option) for path, option in ((args.mask, "--mask"), (args.variance, "--variance"))
                if isinstance(path, str) and os.path.isfile(path))]
    _check_outputs_spare_inputs(products, inputs)
    for path, what in products:
        outputs.add(path, what)
    qa_format = _figure_format(args.qa_plot, "--qa-plot") if args.qa_plot is not None else None
    _setup_debug(args)  # (--debug-dir checked with the outputs, before any reading)
    reference = parse_psf_spec(args.reference_psf, role="reference PSF")
    science = parse_psf_spec(args.psf, role="science PSF (--psf)") if args.psf else None
    planes = {"hdu": args.hdu, "mask": args.mask, "variance": args.variance, "variance_kind": args.variance_kind or "variance"}
    exposure = read_exposure(args.exposure, psf=science, **planes)
    if not exposure.hasPsf():
        from .io.fits import unread_psf_note

        raise MissingPsfError(f"{args.exposure} carries no PSF model{unread_psf_note(args.exposure)}; give the "
                              "exposure's PSF with --psf FILE|SPEC")
    log.info("read %s: %dx%d, PSF %r", args.exposure, exposure.getWidth(), exposure.getHeight(), exposure.getPsf())
    if args.zero_point is not None:  # (run() reads it again: this names the file in the error)
        from .calib import kernel_sum_for_zero_point

        kernel_sum_for_zero_point(exposure.getMetadata(), args.zero_point, args.exposure)
    result = _run_task(args, config, exposure, reference)
    try:
        grid = _write_products(outputs, result, exposure, matched=args.output, kernel=args.kernel_out,
                               qa_plot=args.qa_plot, qa_json=args.qa_json, qa_format=qa_format)
        outputs.commit()
    finally:
        outputs.discard()
    if not args.quiet:
        print(f"psfmatch run: {args.exposure} -> {args.output}")
        print(format_report(result.metadata, (grid or {}).get("summary")))
        for path in outputs.final:
            print(f"wrote {path}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import demo_reference_psf, make_demo_exposure
    from .qa import format_report

    config = _build_config(args)
    outputs = None
    names = {}
    if args.outdir is not None and not args.outdir.strip():
        from .errors import InvalidInputError

        raise InvalidInputError(f"--outdir is an empty name ({args.outdir!r}); give the directory for the demo's "
                                "products, or leave --outdir out")
    if args.outdir:
        if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
            from .errors import InvalidInputError

            raise InvalidInputError(f"--outdir {args.outdir} exists and is not a directory; give a directory for the "
                                    "demo's products (it is created if needed)")
        os.makedirs(args.outdir, exist_ok=True)
        outputs = _StagedOutputs(overwrite=True)
        names = {"input": os.path.join(args.outdir, "demo-exposure.fits"),
                 "matched": os.path.join(args.outdir, "demo-matched.fits"),
                 "kernel": os.path.join(args.outdir, "demo-kernel.fits"),
                 "qa_json": os.path.join(args.outdir, "demo-qa.json")}
        try:
            import matplotlib  # noqa: F401
            names["qa_plot"] = os.path.join(args.outdir, "demo-qa.png")
        except ImportError:
            log.warning("no QA figure: it needs matplotlib (pip install 'psfmatch[plot]')")
        _check_outputs_spare_inputs([(path, what) for what, path in names.items()], _config_inputs(args))
        for what, path in names.items():
            outputs.add(path, what)
    _setup_debug(args)
    exposure = make_demo_exposure(args.size, seed=args.seed)
    result = _run_task(args, config, exposure, demo_reference_psf())
    grid = None
    if outputs is not None:
        try:
            from .io import write_exposure

            # the input too, with its PSF: an exposure to try psfmatch run and batch on
            write_exposure(exposure, outputs.temp(names["input"]), overwrite=True)
            grid = _write_products(outputs, result, exposure, **{k: v for k, v in names.items() if k != "input"})
            outputs.commit()
        finally:
            outputs.discard()
    if not args.quiet:
        print(f"psfmatch demo: matched a {args.size}x{args.size} exposure (PSF sigma 1.6-2.0 px, elliptical) "
              "to a round Gaussian of sigma 2.6 px")
        print(format_report(result.metadata, (grid or {}).get("summary")))
        if outputs is not None:
            for path in outputs.final:
                print(f"wrote {path}")
        else:
            print("(psfmatch demo --outdir DIR also writes the input and matched exposures, the kernel, a QA figure "
                  "and its numbers, demo-qa.json)")
    return 0


def _cmd_config(args) -> int:
    config = _build_config(args)
    sys.stdout.write(format_config(config, all_choices=args.all))
    return 0


def _cmd_inspect_psf(args) -> int:
    import json

    from . import display

    from .errors import InvalidInputError, PsfMatchError
    from .io.fits import same_file
    from .psf.base import model_domain

    psf = parse_psf_spec(args.psf)
    source = _spec_file(args.psf)[0]
    if args.plot and source is not None and same_file(args.plot, source):
        raise InvalidInputError(f"--plot {args.plot} would overwrite the PSF file {source}; give another name")
    outputs = _StagedOutputs(overwrite=args.overwrite)
    outputs.add(args.plot, "--plot")
    fmt = _figure_format(args.plot, "--plot") if args.plot else None
    domain = model_domain(psf)
    try:
        info = display.psf_summary(psf, args.at)
    except PsfMatchError as exc:
        if args.at is None or domain is None or not hasattr(domain, "contains") or domain.contains(args.at):
            raise
        # far outside its domain a model can extrapolate to anything: say where it is defined
        raise InvalidInputError(f"--at {args.at[0]:g},{args.at[1]:g} is outside the model's domain {domain} and the "
                                f"model cannot be evaluated there ({exc}); give --at inside the domain") from None
    if domain is not None and hasattr(domain, "contains") and not domain.contains((info["x"], info["y"])):
        info["outsideDomain"] = True
        log.warning("(%.1f, %.1f) is outside the model's domain %s: the numbers there are an extrapolation",
                    info["x"], info["y"], domain)
    variation = display.psf_variation(psf, domain) if domain is not None and info["spatiallyVarying"] else None
    if args.plot:
        try:
            fig = display.plot_psf(psf, args.at, bbox=domain, title=f"{args.psf}")
            display.save_figure(fig, outputs.temp(args.plot), fmt=fmt, overwrite=True)
            outputs.commit()
        finally:
            outputs.discard()
    if args.json:
        print(json.dumps(display.json_safe({"psf": repr(psf), "at": info, "variation": variation}), indent=1))
        return 0
    if args.quiet:
        return 0
    print(f"PSF model: {psf!r}")
    print(f"at ({info['x']:.1f}, {info['y']:.1f}): stamp {info['width']}x{info['height']} px, "
          f"adaptive-moment sigma {info['sigma']:.3f} px (Gaussian-equivalent FWHM {info['fwhm']:.3f}), "
          f"e1 {info['e1']:+.4f}, e2 {info['e2']:+.4f} (|e| {info['e']:.4f}), "
          f"centroid offset ({info['centroidX']:+.3f}, {info['centroidY']:+.3f}) px")
    print(f"flux in the outermost pixel ring: {info['edgeFluxFraction']:.2e}"
          + ("  (large: the stamp truncates the PSF)" if info["edgeFluxFraction"] > 1e-3 else ""))
    if variation:
        print(f"over {domain.getWidth()}x{domain.getHeight()} px ({variation['n']} positions): "
              f"Gaussian-equivalent FWHM {variation['fwhmMin']:.3f}-{variation['fwhmMax']:.3f} px, "
              f"|e| up to {variation['eMax']:.4f}")
    elif not info["spatiallyVarying"]:
        print("spatially constant")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


# ---------------------------------------------------------------------------
# plumbing


def _setup_debug(args):
    from . import debug

    if getattr(args, "debug_dir", None):
        from .errors import InvalidInputError, OutputNotWritableError

        switched_on = debug.Info is not debug.getInfo or any(
            debug.Info(name).display for name in ("psfmatch.task", "psfmatch.solve"))  # (set in Python before main)
        if not getattr(args, "debug", False) and not switched_on:  # nothing would be drawn there: not even made
            log.warning("--debug-dir %s without --debug: no debug.py is imported, so no debug display is switched "
                        "on and nothing would be written there (the directory is not made); add --debug (with a "
                        "debug.py on the Python path or in the current directory)", args.debug_dir)
            return
        try:
            os.makedirs(args.debug_dir, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"--debug-dir {args.debug_dir}: cannot make that directory ({exc.strerror or exc}); "
                                    "give a directory (an existing one, or a new name in a writable directory)") \
                from None
        from .io.fits import why_unwritable

        why = why_unwritable(args.debug_dir)  # checked now, not when the figures are written after the fit
        if why:
            raise OutputNotWritableError(f"--debug-dir {args.debug_dir}: directory is not writable ({why}); make it "
                                         "writable (chmod u+wx) or give another directory")
        debug.set_output_dir(args.debug_dir)
    if getattr(args, "debug", False):
        mod = debug.import_debug_module()
        if mod is not None:
            log.info("--debug: imported %s", getattr(mod, "__file__", mod))


def _override_type(text):
    """argparse type of ``-c``: a ``KEY=VALUE`` string (a malformed one is a usage error, exit status 2); the key
    and value are checked when the overrides are applied."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"config override {text!r} must look like key=value (e.g. "
                                         "kernel.active.kernelSize=25)")
    return text


def _add_config_options(p):
    p.add_argument("-c", "--config", action="append", metavar="KEY=VALUE", default=[], type=_override_type,
                   help="config override with a dotted path, e.g. kernel.active.kernelSize=25 (repeatable)")
    p.add_argument("-C", "--config-file", action="append", metavar="FILE", default=[],
                   help="config override file: Python (config.kernel.active.kernelSize = 25), TOML or YAML "
                        "(repeatable; applied before -c)")


def _add_task_options(p):
    p.add_argument("--debug", action="store_true",
                   help="import debug.py from the Python path (PYTHONPATH, then the current directory) to switch "
                        "on debug displays, as pipetask --debug does")
    p.add_argument("--debug-dir", metavar="DIR",
                   help="write the debug displays that --debug switches on as PNG files into DIR (default: on "
                        "screen if there is one, else the current directory)")
    add_flux_scale_options(p)


def add_flux_scale_options(p):
    """``--kernel-sum S`` and ``--zero-point ZP`` (one or the other) on the parser ``p``."""
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--kernel-sum", type=_positive_float, default=1.0, metavar="S",
                       help="scale of the kernel: the matched image's flux is S times the input's (default 1); the "
                            "calibration cards (MAGZERO, FLUXMAG0...) follow")
    scale.add_argument("--zero-point", type=_finite_float, default=None, metavar="ZP",
                       help="put the matched exposure on the zero point ZP (magnitudes) instead: S = 10**(0.4 * (ZP "
                            "- its own zero point)), read from MAGZERO, MAGZP, PHOTZP, FLUXMAG0 or a stored photoCalib "
                            "(MAGZPT or PHOTFNU for pixel values per second, BUNIT a rate)")


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    # (its own dest: a subcommand's namespace replaces the main parser's values, so -v demo -v would count 1)
    common.add_argument("-v", "--verbose", action="count", dest="verbose_sub", default=argparse.SUPPRESS,
                        help="more logging (-v info, -vv debug); show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only errors")
    common.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars (shown by default when standard error is a terminal)")

    p = argparse.ArgumentParser(
        prog="psfmatch", description="PSF-match astronomical exposures to a model PSF (LSST's ModelPsfMatchTask).",
        epilog="Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM "
               "(129 by SIGHUP). Run 'psfmatch COMMAND -h' for a command's options.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"psfmatch {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", parents=[common], help="PSF-match an exposure file to a reference PSF",
                       description="PSF-match EXPOSURE to the reference PSF and write the matched exposure; "
                                   "outputs appear only if everything succeeded.")
    r.add_argument("exposure", metavar="EXPOSURE.fits", help="the exposure (psfmatch, LSST-style or plain FITS image)")
    r.add_argument("--reference-psf", "-r", required=True, type=_spec_type("reference PSF"), metavar="SPEC",
                   help=f"the PSF to match to: {PSF_SPEC_HELP}")
    r.add_argument("-o", "--output", required=True, metavar="OUT.fits", help="the matched exposure")
    r.add_argument("--psf", type=_spec_type("science PSF"), metavar="SPEC",
                   help="the exposure's own PSF, if the file carries none (or to replace it)")
    r.add_argument("--kernel-out", metavar="K.fits", help="also write the matching kernel (FITS)")
    r.add_argument("--qa-plot", metavar="QA.png", help="also write the QA figure (needs matplotlib)")
    r.add_argument("--qa-json", metavar="QA.json", help="also write the QA numbers as JSON")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    planes = r.add_argument_group(
        "planes of a plain FITS image", "For a file that is not a psfmatch or LSST-style exposure (e.g. DES's SCI, "
        "MSK and WGT HDUs): which HDUs hold the image, the mask and the variance. An HDU is a name or an index; "
        "--mask and --variance may also name another FITS file.")
    planes.add_argument("--hdu", type=_hdu_arg, metavar="HDU",
                        help="the image HDU (default: the 2-d HDU named IMAGE or SCI, else the first 2-d image)")
    planes.add_argument("--mask", type=_hdu_arg, metavar="HDU|FILE",
                        help="the mask: integer bits (named as psfmatch's default planes, BAD, SAT, ...) or booleans "
                             "(set as BAD); without one the mask is empty")
    planes.add_argument("--variance", type=_hdu_arg, metavar="HDU|FILE",
                        help="the variance plane (see --variance-kind); without one a constant is estimated from the "
                             "pixels' robust scatter, with a warning")
    planes.add_argument("--variance-kind", choices=("variance", "stddev", "invvar"), default=None,
                        help="what --variance holds (so it needs --variance): a variance, a standard deviation (an "
                             "ERR plane) or an inverse variance (a weight map such as WGT, where weight 0 means no "
                             "data); default variance")
    _add_config_options(r)
    _add_task_options(r)
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", parents=[common], help="match a synthetic exposure and print the QA summary",
                       description="Match a synthetic exposure (stars, spatially varying elliptical PSF, defects) "
                                   "to a round Gaussian and print the QA summary; with --outdir also write the "
                                   "matched exposure, the kernel, the QA figure and the QA JSON.")
    d.add_argument("--outdir", metavar="DIR", help="write demo-exposure.fits (the input, with its PSF), "
                                                   "demo-matched.fits, demo-kernel.fits, demo-qa.png and demo-qa.json "
                                                   "into DIR (replacing earlier ones)")
    d.add_argument("--size", type=_demo_size, default=512,
                   help=f"exposure width and height in pixels (default 512, {DEMO_MIN_SIZE} to {DEMO_MAX_SIZE})")
    d.add_argument("--seed", type=_seed, default=0, help="random seed, an integer >= 0 (default 0)")
    _add_config_options(d)
    _add_task_options(d)
    d.set_defaults(func=_cmd_demo)

    c = sub.add_parser("config", parents=[common], help="print the effective configuration with each field's doc",
                       description="Print the configuration after the overrides, as a Python override file "
                                   "(loadable with -C) with each field's documentation.")
    _add_config_options(c)
    c.add_argument("--all", action="store_true", help="also show the kernel configurations that are not active")
    c.set_defaults(func=_cmd_config)

    i = sub.add_parser("inspect-psf", parents=[common], help="size, shape and a figure of a PSF model",
                       description="Print a PSF model's stamp size, FWHM, ellipticity and centroid (and their "
                                   "range over the field for a spatially varying model); optionally draw it.")
    i.add_argument("psf", type=_spec_arg, metavar="FILE|SPEC", help=f"the PSF: {PSF_SPEC_HELP}")
    i.add_argument("--at", type=_position_arg, metavar="X,Y",
                   help="position, 0-based parent pixel coordinates (SExtractor's X_IMAGE minus 1; default: the "
                        "model's average position); write --at=-5,-20 for a negative x")
    i.add_argument("--plot", metavar="FIG.png", help="write a figure (needs matplotlib)")
    i.add_argument("--json", action="store_true", help="print the numbers as JSON")
    i.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    i.set_defaults(func=_cmd_inspect_psf)

    try:  # `psfmatch batch` (many exposures on Dask) lives in its own module
        from .batch_cli import add_batch_parser
    except ImportError:  # pragma: no cover - a build without the batch module
        add_batch_parser = None
    if add_batch_parser is not None:
        add_batch_parser(sub, parents=[common])
    return p


class _WarningsToLog:
    """Show warnings raised while a command runs as one log line each.

    psfmatch both logs its own warnings (for pipelines) and raises them as
    Python warnings (for interactive use); a warning whose text the library has
    just logged is not shown a second time.
    """

    class _Recorder(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = set()

        def emit(self, record):
            self.messages.add(record.getMessage())

    def __enter__(self):
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.showwarning = self._show
        self._logged = self._Recorder()
        logging.getLogger("psfmatch").addHandler(self._logged)
        return self

    def _show(self, message, category, filename, lineno, file=None, line=None):
        if str(message) in self._logged.messages:
            return
        logging.getLogger("psfmatch").warning("%s: %s", category.__name__, message)

    def __exit__(self, *exc):
        logging.getLogger("psfmatch").removeHandler(self._logged)
        return self._cm.__exit__(*exc)


def _configure_logging(verbose, quiet):
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("psfmatch")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("psfmatch %(levelname)s %(name)s: %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # matplotlib's own messages (e.g. the PostScript backend's about transparency, printed by logging's last
    # resort) go through the same handler and level, so that -q silences them too
    mpl = logging.getLogger("matplotlib")
    mpl_saved = (mpl.level, mpl.propagate)
    mpl.addHandler(handler)
    mpl.setLevel(max(level, logging.WARNING))
    mpl.propagate = False

    def restore():
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        mpl.removeHandler(handler)
        mpl.setLevel(mpl_saved[0])
        mpl.propagate = mpl_saved[1]

    return restore


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a command runs, raised in the main thread as Ctrl-C is.

    So the clean-up is Ctrl-C's: staged outputs and temporary files are removed, an older
    output is left as it was, and a batch report is rewritten as ``interrupted``.
    """

    def __init__(self, signum):
        import signal

        self.signum = int(signum)
        try:
            name = signal.Signals(signum).name
        except ValueError:  # pragma: no cover - only the signals installed below are raised
            name = f"signal {signum}"
        super().__init__(name)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs, then act on the first that came.

    :meth:`_StagedOutputs.commit` moves the staged files into place in this block, so that a
    Ctrl-C cannot leave some outputs moved and the others discarded.  A signal that came is
    then raised as it would have been (``KeyboardInterrupt``, :class:`Terminated`) by the
    handler that was in place, once every file is in place.  Main thread only (elsewhere the
    block runs as it is); ignored signals stay ignored.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came = []
    # (ignored: stays so; the system's default: not Python's to defer)
    saved = _install_handlers(("SIGINT", "SIGTERM", "SIGHUP"), lambda signum, frame: came.append(signum),
                              keep=(signal.SIG_IGN, signal.SIG_DFL, None))
    try:
        yield
    finally:
        _restore_handlers(saved)
        if came and callable(saved.get(came[0])):
            saved[came[0]](came[0], None)


def _install_handlers(names, handler, keep):
    """Give the signals ``names`` (those this system has) ``handler``, except where the handler in place is
    one of ``keep``; returns ``{signal: previous handler}`` of those changed (for :func:`_restore_handlers`)."""
    import signal

    saved = {}
    for name in names:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        previous = signal.getsignal(sig)
        if any(previous is k for k in keep):
            continue
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)
            saved[sig] = previous
    return saved


def _restore_handlers(saved):
    """Put back the handlers :func:`_install_handlers` replaced (the system's default where Python had none)."""
    import signal

    for sig, previous in saved.items():
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def _termination_as_interrupt():
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while the block runs (main thread only).

    Without it the process died at once, leaving its staged outputs (hidden ``.NAME.*.partial``
    files as large as the outputs) and a batch report marked ``running``.  A signal that is
    ignored (``nohup``) stays ignored; a second one while cleaning up kills the process as
    before (the handler gives the signal back to the system's default first).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)
        raise Terminated(signum)

    saved = _install_handlers(("SIGTERM", "SIGHUP"), handler, keep=(signal.SIG_IGN,))
    try:
        yield
    finally:
        _restore_handlers(saved)


def _reader_went_away() -> bool:
    """Whether standard output is a pipe that its reader closed (``psfmatch config | head -1``).

    If so, standard output is pointed at the null device, so that Python's own flush at exit
    does not complain either, and True is returned: the command stops quietly (status 1), as
    Unix tools do, instead of printing ``error: [Errno 32] Broken pipe``.
    """
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # (no file descriptor, e.g. captured; no poll on this system)
        return False
    if not closed:
        return False
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    return True


def _one_line(exc) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv=None) -> int:
    """Run the ``psfmatch`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 on a failure (one line on standard error, with the
        traceback when ``-v`` is given), 2 on a usage error, 130 when interrupted
        (Ctrl-C), 128 + the signal's number (143, 129) when stopped by SIGTERM or SIGHUP;
        1 without a message when the reader of standard output stopped reading (``| head``).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code is None else (exc.code if isinstance(exc.code, int) else 2)
    args.verbose = (getattr(args, "verbose", 0) or 0) + (getattr(args, "verbose_sub", 0) or 0)
    args.quiet = bool(getattr(args, "quiet", False))
    from . import debug, progress

    restore_logging = _configure_logging(args.verbose, args.quiet)
    saved_progress = progress.is_enabled()
    progress.set_enabled(sys.stderr.isatty() and not args.quiet and not getattr(args, "no_progress", False))
    try:
        with _termination_as_interrupt(), _WarningsToLog(), debug.scoped():
            status = int(args.func(args) or 0)
            sys.stdout.flush()  # (a reader that stopped reading is seen here, not as Python exits)
            return status
    except BrokenPipeError as exc:
        if not _reader_went_away():
            print(f"psfmatch {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"psfmatch: terminated ({exc})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("psfmatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure: one clear line, traceback with -v
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        from .errors import PsfMatchError

        prefix = "" if isinstance(exc, (PsfMatchError, OSError)) else f"{type(exc).__name__}: "
        print(f"psfmatch {args.command}: error: {prefix}{_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        progress.set_enabled(saved_progress)
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
