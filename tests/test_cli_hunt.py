"""The ``psfmatch`` command end to end: signals, the input list's quoting, options that do nothing.

Defects found by driving the installed command as a user would (see each test's docstring).
"""

import contextlib
import json
import os
import signal
import time

import pytest

from psfmatch import cli
from psfmatch.cli import main
from psfmatch.demo import make_demo_exposure

posix_only = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


class _TestKill(Exception):
    """What the test's own SIGTERM handler raises: a command that does not handle SIGTERM sees it."""


@contextlib.contextmanager
def _sigterm_handled_by_the_test():
    """A SIGTERM handler of the test's own while the block runs (so that no SIGTERM can kill pytest),
    and SIGHUP ignored (as under ``nohup``); both restored afterwards."""
    def handler(signum, frame):
        raise _TestKill(signum)

    saved = signal.signal(signal.SIGTERM, handler), signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGHUP, saved[1])


def _terminate_me():
    """Send SIGTERM to this process and wait for its Python handler to run (it raises)."""
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(200):
        time.sleep(0.005)
    raise AssertionError("SIGTERM was not delivered")


@pytest.fixture(scope="module")
def small_exposure(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "exposure.fits"
    make_demo_exposure(64, seed=1, n_stars=4).writeFits(str(path))
    return str(path)


# ---------------------------------------------------------------------------
# SIGTERM


@posix_only
def test_sigterm_during_run_removes_the_staged_outputs_and_exits_143(small_exposure, tmp_path, capsys, monkeypatch):
    """``timeout -s TERM 5 psfmatch run BIG.fits ... -o m.fits --kernel-out k.fits`` killed the process on the
    spot: it left ``.m.fits.*.partial.fits`` and ``.k.fits.*.partial.fits`` (100 MB for a DECam CCD) beside
    the outputs, as SIGTERM had no handler.  It now cleans up as Ctrl-C does and exits with 128 + 15."""
    seen = {}

    def write_then_get_killed(outputs, result, exposure, *, matched=None, kernel=None, **kw):
        for path in (matched, kernel):
            with open(outputs.temp(path), "wb") as fh:  # the staged files exist when the signal comes
                fh.write(b"partial")
        seen["staged"] = sorted(os.listdir(tmp_path))
        seen["hup"] = signal.getsignal(signal.SIGHUP)  # ignored (nohup) before main: still ignored
        _terminate_me()

    discard = cli._StagedOutputs.discard

    def recording_discard(self):
        seen.setdefault("term_while_cleaning", signal.getsignal(signal.SIGTERM))
        return discard(self)

    monkeypatch.setattr(cli, "_run_task", lambda *a: None)
    monkeypatch.setattr(cli, "_write_products", write_then_get_killed)
    monkeypatch.setattr(cli._StagedOutputs, "discard", recording_discard)
    with _sigterm_handled_by_the_test() as handler:
        rc = main(["run", small_exposure, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                   "--kernel-out", str(tmp_path / "k.fits")])
        assert signal.getsignal(signal.SIGTERM) is handler  # the caller's handler is back
    err = capsys.readouterr().err
    assert len(seen["staged"]) == 2 and all(name.endswith(".partial.fits") for name in seen["staged"])
    assert rc == 128 + signal.SIGTERM, err
    assert "psfmatch: terminated (SIGTERM)" in err
    assert os.listdir(tmp_path) == []  # no output, no temporary file
    assert seen["hup"] is signal.SIG_IGN
    assert seen["term_while_cleaning"] is signal.SIG_DFL  # a second SIGTERM while cleaning up kills at once


@posix_only
def test_sigterm_keeps_an_older_output_as_it_was(small_exposure, tmp_path, capsys, monkeypatch):
    """With --overwrite, the output of an earlier run survives a SIGTERM byte for byte."""
    out = tmp_path / "m.fits"
    out.write_bytes(b"the earlier output")

    def write_then_get_killed(outputs, result, exposure, *, matched=None, **kw):
        with open(outputs.temp(matched), "wb") as fh:
            fh.write(b"new, half written")
        _terminate_me()

    monkeypatch.setattr(cli, "_run_task", lambda *a: None)
    monkeypatch.setattr(cli, "_write_products", write_then_get_killed)
    with _sigterm_handled_by_the_test():
        rc = main(["run", small_exposure, "-r", "gaussian:sigma=2.6", "-o", str(out), "--overwrite", "-q"])
    assert rc == 143, capsys.readouterr().err
    assert out.read_bytes() == b"the earlier output" and os.listdir(tmp_path) == ["m.fits"]


@posix_only
@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_between_two_moves_into_place_leaves_all_the_outputs(signum, small_exposure, tmp_path, capsys,
                                                                      monkeypatch):
    """A Ctrl-C (SIGTERM) that came after the first staged output was moved into place and before the second
    left the first written and the second discarded; the moves now finish before the signal is acted on."""
    sig = getattr(signal, signum)

    def write_both(outputs, result, exposure, *, matched=None, kernel=None, **kw):
        for path, text in ((matched, b"matched"), (kernel, b"kernel")):
            with open(outputs.temp(path), "wb") as fh:
                fh.write(text)

    real_replace, moved = os.replace, []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        moved.append(os.path.basename(dst))
        if len(moved) == 1:
            os.kill(os.getpid(), sig)  # (delivered at once to this thread: the next bytecode runs the handler)
            time.sleep(0.05)

    monkeypatch.setattr(cli, "_run_task", lambda *a: None)
    monkeypatch.setattr(cli, "_write_products", write_both)
    monkeypatch.setattr(os, "replace", replace_then_signal)
    with _sigterm_handled_by_the_test():
        rc = main(["run", small_exposure, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                   "--kernel-out", str(tmp_path / "k.fits"), "-q"])
    assert rc == (130 if signum == "SIGINT" else 143), capsys.readouterr().err
    assert moved == ["m.fits", "k.fits"]
    assert sorted(os.listdir(tmp_path)) == ["k.fits", "m.fits"]  # both in place, no temporary file
    assert (tmp_path / "k.fits").read_bytes() == b"kernel"


@posix_only
def test_sigterm_during_batch_leaves_an_interrupted_report(small_exposure, tmp_path, capsys, monkeypatch):
    """``kill`` (or a job scheduler's time limit) on ``psfmatch batch`` left the report marked ``running``
    forever; it is now ``interrupted``, naming SIGTERM and the inputs still pending, and the exit status is
    143."""
    pytest.importorskip("distributed")
    from psfmatch import batch

    @contextlib.contextmanager
    def no_cluster(*args, **kwargs):
        yield None, {}

    monkeypatch.setattr(batch, "dask_client", no_cluster)
    monkeypatch.setattr(batch, "_run_jobs", lambda *a, **k: _terminate_me())
    outdir = tmp_path / "out"
    with _sigterm_handled_by_the_test():
        rc = main(["batch", small_exposure, "-r", "gaussian:sigma=2.6", "-o", str(outdir), "-q"])
    err = capsys.readouterr().err
    assert rc == 143, err
    assert "psfmatch: terminated (SIGTERM)" in err
    report = json.loads((outdir / "psfmatch-batch-report.json").read_text())
    assert report["state"] == "interrupted"
    assert "SIGTERM" in report["note"] and "re-run the same command" in report["note"]
    assert report["pending"] == [os.path.abspath(small_exposure)]


# ---------------------------------------------------------------------------
# --input-list


def test_input_list_removes_the_quotes_of_a_quoted_path_without_blanks(tmp_path):
    """The help says to quote a path with spaces; a line ``"raw/a.fits"`` (quoted, no blank) kept its
    quotes and failed as MissingFileError: exposure file '.../"raw/a.fits"' does not exist."""
    from psfmatch.batch_cli import _read_input_list

    listing = tmp_path / "inputs.txt"
    listing.write_text('"raw/a.fits"\n\'raw/b.fits\' gaussian:sigma=2\n"raw/c d.fits"\nraw/o\'brien.fits\n')
    assert _read_input_list(str(listing), with_psfs=True) == [
        ("raw/a.fits", None), ("raw/b.fits", "gaussian:sigma=2"), ("raw/c d.fits", None),
        ("raw/o'brien.fits", None)]  # (an apostrophe inside a name is part of it, as before)


def test_input_list_keeps_an_existing_file_whose_name_starts_with_a_quote(tmp_path, monkeypatch):
    from psfmatch.batch_cli import _read_input_list

    monkeypatch.chdir(tmp_path)
    (tmp_path / '"odd.fits"').write_bytes(b"")
    (tmp_path / "inputs.txt").write_text('"odd.fits"\n')
    assert _read_input_list("inputs.txt") == ['"odd.fits"']


# ---------------------------------------------------------------------------
# --debug-dir


def test_debug_dir_without_debug_says_that_it_does_nothing(tmp_path, capsys):
    """``psfmatch demo --debug-dir figs`` (without --debug) made an empty folder and said nothing: no
    debug.py is imported, so no display is switched on.  It now warns, naming the missing --debug."""
    figs = tmp_path / "figs"
    rc = main(["run", str(tmp_path / "missing.fits"), "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
               "--debug-dir", str(figs)])
    err = capsys.readouterr().err
    assert rc == 1 and "does not exist" in err  # (the usual failure, after the options were checked)
    assert f"--debug-dir {figs} without --debug" in err and "add --debug" in err
    assert "the directory is not made" in err and not figs.exists()  # (it was made, empty)


def test_debug_dir_does_not_warn_when_displays_are_on(tmp_path, capsys, monkeypatch):
    from psfmatch import debug

    monkeypatch.chdir(tmp_path)  # (no debug.py here: --debug warns about that instead)
    args = ["run", str(tmp_path / "missing.fits"), "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
            "--debug-dir", str(tmp_path / "figs")]
    assert main([*args, "--debug"]) == 1
    assert "without --debug" not in capsys.readouterr().err
    with debug.scoped():  # switched on in Python before main, as docs/guide/debugging.rst shows
        debug.Info("psfmatch.solve").display = True
        assert main(args) == 1
    assert "without --debug" not in capsys.readouterr().err


# ---------------------------------------------------------------------------
# batch options that the command would ignore


@pytest.mark.parametrize("options, match", [
    (["--reference-margin", "0.5"], "--reference-margin shapes the automatic reference of -r auto; with "
                                    "-r gaussian:sigma=2.6 it would be ignored: give -r auto, or leave "
                                    "--reference-margin"),
    (["--reference-kind", "doublegaussian", "--reference-floor", "1"], "--reference-kind and --reference-floor shape"),
    (["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers sizes the local cluster, which --scheduler "
                                                             "tcp://127.0.0.1:9 replaces"),
    (["--scheduler", "tcp://127.0.0.1:9", "--memory-limit", "1GiB"], "--memory-limit sizes the local cluster"),
    (["--scheduler-timeout", "3"], "--scheduler-timeout is how long to wait for the --scheduler ADDRESS"),
])
def test_batch_options_that_would_be_ignored_are_usage_errors(options, match, small_exposure, tmp_path, capsys):
    """``psfmatch batch ... -r gaussian:sigma=2.6 --reference-margin 5`` matched everything with exit 0, the
    margin silently unused (it shapes only an 'auto' reference); so did --workers / --memory-limit with
    --scheduler (they size the local cluster only) and --scheduler-timeout without --scheduler.  They are
    now usage errors, as --coadd-tile without --coadd already was, found before any work."""
    outdir = tmp_path / "out"
    rc = main(["batch", small_exposure, "-r", "gaussian:sigma=2.6", "-o", str(outdir), *options])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert match in err
    assert not outdir.exists()


def test_auto_reference_options_still_shape_an_auto_reference(small_exposure, tmp_path, monkeypatch):
    """(The options reach match_many with -r auto, in either case of 'auto'; the kind is still gaussian by
    default, now that the option's own default is None.)"""
    pytest.importorskip("distributed")
    seen = []

    def fake_match_many(paths, reference, outdir, **kw):
        seen.append((reference, kw["reference_options"]))
        raise KeyboardInterrupt  # (stop here: no cluster)

    monkeypatch.setattr("psfmatch.batch.match_many", fake_match_many)
    args = ["batch", small_exposure, "-r", "AUTO", "-o", str(tmp_path / "out"), "-q"]
    assert main([*args, "--reference-kind", "doublegaussian", "--reference-margin", "0.2",
                 "--reference-floor", "0.5"]) == 130
    assert main(args) == 130
    assert seen == [("auto", {"kind": "doublegaussian", "margin": 0.2, "floor": 0.5}), ("auto", {"kind": "gaussian"})]


# ---------------------------------------------------------------------------
# messages


@pytest.mark.parametrize("command", [
    ["run", "EXPOSURE", "-r", "gaussian:sigma=2.6", "-o", "{missing}/m.fits"],
    ["inspect-psf", "gaussian:sigma=2.6", "--plot", "{missing}/p.png"],
    ["batch", "EXPOSURE", "-r", "gaussian:sigma=2.6", "-o", "{out}", "--report", "{missing}/r.json"],
    ["batch", "EXPOSURE", "-r", "gaussian:sigma=2.6", "-o", "{out}", "--coadd", "{missing}/c.fits"],
])
def test_an_output_in_a_missing_directory_names_the_remedy(command, small_exposure, tmp_path, capsys):
    """'cannot write output x/m.fits: directory /.../x does not exist' named no remedy."""
    missing = tmp_path / "no such dir"
    args = [a.replace("EXPOSURE", small_exposure).format(missing=missing, out=tmp_path / "out") for a in command]
    if command[0] == "batch":
        pytest.importorskip("distributed")
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"directory {missing} does not exist; create it (mkdir -p '{missing}') or give a path in an existing " \
           "directory" in err, err
    assert not missing.exists()


@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="POSIX pipes")
@pytest.mark.parametrize("command", [["config", "--all"], ["inspect-psf", "gaussian:sigma=2", "--json"]])
def test_a_reader_that_stops_reading_is_not_an_error_message(command):
    """``psfmatch config --all | head -1`` (or a pager quit early) printed ``psfmatch config: error: [Errno 32]
    Broken pipe``; the command now stops quietly (status 1, nothing on standard error), as Unix tools do."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "psfmatch.cli", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # (before the command writes anything: it takes a while to start)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert err == ""


def test_other_failures_to_write_standard_output_are_still_reported(tmp_path, capsys, monkeypatch):
    """(Only a pipe whose reader went away is silent: a BrokenPipeError from anything else is reported.)"""
    class NoPipe:  # (no file descriptor: nothing says that a reader went away)
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", NoPipe())
    rc = main(["config"])
    err = capsys.readouterr().err
    assert rc == 1 and "psfmatch config: error: [Errno 32] Broken pipe" in err


def test_the_field_grid_line_sits_with_the_other_qa_lines_and_the_demo_hint_names_every_product(tmp_path, capsys):
    """The QA field grid line came after the time line, without the kernel shift's unit; the demo's closing hint
    left out demo-qa.json; a kernel file whose CONVENTN is 'CONVOLUTION' (case aside) was refused."""
    from astropy.io import fits

    from psfmatch.io import read_kernel

    assert main(["demo", "--size", "128", "--outdir", str(tmp_path / "d")]) == 0
    lines = capsys.readouterr().out.splitlines()
    grid = next(i for i, line in enumerate(lines) if line.startswith("QA field grid (n="))
    between = next(i for i, line in enumerate(lines) if line.startswith("QA between"))
    timing = next(i for i, line in enumerate(lines) if line.startswith("time: fit"))
    assert between < grid < timing and lines[grid].endswith(" px")
    assert main(["demo", "--size", "64"]) == 0
    assert "the kernel, a QA figure and its numbers, demo-qa.json)" in capsys.readouterr().out
    path = tmp_path / "d" / "demo-kernel.fits"
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["CONVENTN"] = "CONVOLUTION"
    assert read_kernel(path).getWidth() > 1


def test_boolean_reader_options_take_1_and_0(tmp_path):
    """``recenter=yes`` was taken but ``recenter=1`` refused (read as an integer): 1 and 0 are yes and no for the
    boolean reader options, and an HDU index stays an integer."""
    import numpy as np
    from astropy.io import fits

    from psfmatch.cli import _spec_options, parse_psf_spec

    yy, xx = np.mgrid[:31, :31]
    fits.writeto(tmp_path / "off.fits", np.exp(-((xx - 16.0) ** 2 + (yy - 15.0) ** 2) / 8.0))
    spec = f"image:{tmp_path / 'off.fits'}"
    for one, word in (("1", "true"), ("0", "no")):
        a = parse_psf_spec(f"{spec},recenter={one}").computeKernelImage()
        b = parse_psf_spec(f"{spec},recenter={word}").computeKernelImage()
        assert np.array_equal(a, b)
    assert not np.array_equal(parse_psf_spec(f"{spec},recenter=1").computeKernelImage(),
                              parse_psf_spec(f"{spec},recenter=0").computeKernelImage())
    assert _spec_options(f"{spec},hdu=1,recenter=1") == {"hdu": 1, "recenter": True}
