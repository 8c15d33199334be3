"""No lost or partial data (issue 8): outputs appear complete or not at all.

Every writer (:func:`psfmatch.io.write_exposure`, :func:`~psfmatch.io.write_kernel`,
:func:`~psfmatch.io.write_kernel_image_grid`, ``psfmatch run``) writes to a
temporary file beside the output and renames it into place
(:func:`psfmatch.io.atomic_write`).  The failures simulated here: the FITS
writer dying half-way through the file (an exception, and a crash of the
whole process), an exception or an interrupt inside the ``with`` block, the
rename failing, racing writers, and a failing ``psfmatch run``.  After each:
no partial output, no temporary file (except after a crash, where nothing
can clean up: a hidden ``.<name>.*.tmp`` stays, never the output), and an
older output left byte for byte as it was.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.errors import InvalidInputError, OutputExistsError, OutputNotWritableError
from psfmatch.io import atomic_write, read_exposure, read_kernel, write_exposure, write_kernel, write_kernel_image_grid
from psfmatch.psf import GaussianPsf


def exposure(value=1.0, n=32):
    return Exposure(np.full((n, n), value, np.float32), psf=GaussianPsf(11, 11, 1.5), metadata={"value": value})


@pytest.fixture(scope="module")
def kernel():
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = 11
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    config.kernel.active.spatialKernelOrder = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelPsfMatchTask(config=config).run(Exposure(np.ones((64, 64), np.float32),
                                                             psf=GaussianPsf(15, 15, 1.6)),
                                                    GaussianPsf(21, 21, 2.4)).psfMatchingKernel


WRITERS = {
    "exposure": lambda obj, path, **kw: write_exposure(obj["exposure"], path, **kw),
    "kernel": lambda obj, path, **kw: write_kernel(obj["kernel"], path, **kw),
    "kernel image grid": lambda obj, path, **kw: write_kernel_image_grid(obj["kernel"], path, nx=2, ny=2, **kw),
}


@pytest.fixture
def objects(kernel):
    return {"exposure": exposure(2.0), "kernel": kernel}


def half_writer(monkeypatch):
    """Make ``HDUList.writeto`` write the first half of the real file, then fail (disk full)."""
    real = fits.HDUList.writeto
    calls = []

    def writeto(self, fileobj, *args, **kwargs):
        buf = io.BytesIO()
        real(self, buf, *args, **kwargs)
        data = buf.getvalue()
        with open(fileobj, "wb") as fh:
            fh.write(data[:len(data) // 2])
        calls.append(fileobj)
        raise OSError("No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", writeto)
    return calls


@pytest.mark.parametrize("what", WRITERS)
def test_writer_dying_half_way_leaves_nothing(tmp_path, monkeypatch, objects, what):
    calls = half_writer(monkeypatch)
    out = tmp_path / "out.fits"
    with pytest.raises(OSError, match="No space left on device"):
        WRITERS[what](objects, out)
    assert len(calls) == 1 and Path(calls[0]).parent == tmp_path and calls[0] != str(out)  # a temp file beside it
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("what", WRITERS)
def test_writer_dying_half_way_keeps_the_older_output(tmp_path, monkeypatch, objects, what):
    out = tmp_path / "out.fits"
    WRITERS[what](objects, out)
    before = out.read_bytes()
    half_writer(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        WRITERS[what](objects, out, overwrite=True)
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["out.fits"]
    monkeypatch.undo()
    with pytest.raises(OutputExistsError, match="exists already; pass overwrite=True"):
        WRITERS[what](objects, out)
    assert out.read_bytes() == before


def test_refusing_to_overwrite_writes_nothing(tmp_path, monkeypatch, objects):
    out = tmp_path / "out.fits"
    out.write_bytes(b"precious")
    calls = half_writer(monkeypatch)
    with pytest.raises(OutputExistsError):
        write_exposure(objects["exposure"], out)
    assert calls == [] and out.read_bytes() == b"precious" and os.listdir(tmp_path) == ["out.fits"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_any_exception_inside_the_block_cleans_up(tmp_path, error):
    out = tmp_path / "out.fits"
    out.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_write(out, overwrite=True) as tmp:
            Path(tmp).write_bytes(b"half of the new")
            raise error
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.fits"]


def test_rename_failing_keeps_the_older_output(tmp_path, monkeypatch, objects):
    out = tmp_path / "out.fits"
    out.write_bytes(b"old")

    def refuse(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError, match="cannot replace"):
        write_exposure(objects["exposure"], out, overwrite=True)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.fits"]


def test_a_crashed_writer_never_leaves_a_partial_output(tmp_path):
    """The process dies (``os._exit``) half-way through the file: the output is the old one or absent."""
    out = tmp_path / "out.fits"
    exposure(1.0).writeFits(out)
    before = out.read_bytes()
    script = textwrap.dedent(f"""
        import io, os
        import numpy as np
        from astropy.io import fits
        from psfmatch import Exposure
        real = fits.HDUList.writeto
        def writeto(self, fileobj, *args, **kwargs):
            buf = io.BytesIO()
            real(self, buf, *args, **kwargs)
            with open(fileobj, "wb") as fh:
                fh.write(buf.getvalue()[:5000])
                fh.flush()
            os._exit(9)  # killed half-way: no clean-up code runs
        fits.HDUList.writeto = writeto
        Exposure(np.zeros((32, 32), np.float32)).writeFits({str(out)!r}, overwrite=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert out.read_bytes() == before
    assert read_exposure(out).metadata["value"] == 1.0
    left = sorted(os.listdir(tmp_path))
    assert left[-1] == "out.fits" and all(n.startswith(".out.fits.") and n.endswith(".tmp") for n in left[:-1])


def test_racing_writers_one_wins_and_the_file_is_complete(tmp_path):
    out = tmp_path / "race.fits"
    outcomes, barrier = [], threading.Barrier(8)

    def work(i):
        barrier.wait()
        try:
            write_exposure(exposure(float(i)), out)
            outcomes.append(("won", i))
        except OutputExistsError:
            outcomes.append(("refused", i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [i for what, i in outcomes if what == "won"]
    assert len(outcomes) == 8 and len(winners) == 1
    back = read_exposure(out)
    assert back.metadata["value"] == winners[0] and np.all(back.image == winners[0])
    assert os.listdir(tmp_path) == ["race.fits"]


def test_racing_overwrites_leave_one_complete_file(tmp_path):
    out = tmp_path / "race.fits"
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        write_exposure(exposure(float(i)), out, overwrite=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    back = read_exposure(out)
    value = back.metadata["value"]
    assert value in range(8) and np.all(back.image == value) and np.all(back.variance == 0)
    assert os.listdir(tmp_path) == ["race.fits"]


# ---------------------------------------------------------------------------
# psfmatch run


@pytest.fixture
def cli_input(tmp_path):
    rng = np.random.default_rng(1)
    exp = Exposure(rng.normal(size=(96, 96)).astype(np.float32), variance=np.ones((96, 96), np.float32),
                   psf=GaussianPsf(15, 15, 1.6))
    path = tmp_path / "in.fits"
    exp.writeFits(path)
    return path


def _run_cli(args):
    from psfmatch.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(args)


CLI_ARGS = ["-r", "gaussian:sigma=2.4", "-c", "kernel.active.kernelSize=11", "-c", "kernel.active.sizeCellX=48",
            "-c", "kernel.active.sizeCellY=48", "-q"]


def test_failing_cli_run_leaves_no_outputs_and_keeps_old_ones(tmp_path, cli_input, monkeypatch, capsys):
    import psfmatch.io

    out, kern = tmp_path / "out.fits", tmp_path / "k.fits"

    def broken_write_kernel(*args, **kwargs):
        raise OSError("No space left on device")

    # the matched exposure is written (to its temporary file), then the kernel fails
    monkeypatch.setattr(psfmatch.io, "write_kernel", broken_write_kernel)
    assert _run_cli(["run", str(cli_input), "-o", str(out), "--kernel-out", str(kern)] + CLI_ARGS) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in.fits"]

    monkeypatch.undo()
    assert _run_cli(["run", str(cli_input), "-o", str(out), "--kernel-out", str(kern)] + CLI_ARGS) == 0
    old = {p.name: p.read_bytes() for p in (out, kern)}
    assert read_exposure(out).image.shape == (96, 96) and read_kernel(kern).getWidth() == 11

    monkeypatch.setattr(psfmatch.io, "write_kernel", broken_write_kernel)
    assert _run_cli(["run", str(cli_input), "-o", str(out), "--kernel-out", str(kern), "--overwrite"]
                    + CLI_ARGS) == 1
    assert {p.name: p.read_bytes() for p in (out, kern)} == old
    assert sorted(os.listdir(tmp_path)) == ["in.fits", "k.fits", "out.fits"]


def test_cli_run_failing_in_the_task_writes_nothing(tmp_path, cli_input, capsys):
    out = tmp_path / "out.fits"
    code = _run_cli(["run", str(cli_input), "-o", str(out), "-r", "gaussian:sigma=2.4", "-c",
                     "kernel.active.kernelSize=201", "-q"])
    assert code == 1
    assert "is no larger than the kernel's border" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in.fits"]


@pytest.mark.parametrize("suffix, opener", [(".fits.gz", "gzip"), (".fits.bz2", "bz2"), (".FITS.GZ", "gzip")])
def test_compressed_output_names_give_compressed_files(tmp_path, objects, suffix, opener):
    """A ``.gz`` name used to get an uncompressed file: the temporary name hid the extension from astropy."""
    import bz2
    import gzip

    out = tmp_path / f"out{suffix}"
    write_exposure(objects["exposure"], out)
    with (gzip.open if opener == "gzip" else bz2.open)(out) as fh:
        assert fh.read(9) == b"SIMPLE  ="
    back = read_exposure(out)
    np.testing.assert_array_equal(back.image, objects["exposure"].image)
    assert back.metadata["value"] == 2.0 and os.listdir(tmp_path) == [out.name]
    # the kernel writers too
    write_kernel(objects["kernel"], tmp_path / "k.fits.gz")
    with gzip.open(tmp_path / "k.fits.gz") as fh:
        assert fh.read(9) == b"SIMPLE  ="
    np.testing.assert_array_equal(read_kernel(tmp_path / "k.fits.gz").computeImage((10.0, 20.0)),
                                  objects["kernel"].computeImage((10.0, 20.0)))


def test_bad_output_paths_are_refused_before_anything_is_written(tmp_path, monkeypatch, objects):
    (tmp_path / "dir.fits").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for overwrite in (False, True):
        with pytest.raises(InvalidInputError, match="cannot write '.*dir.fits': it is a directory; give a file name"):
            write_exposure(objects["exposure"], tmp_path / "dir.fits", overwrite=overwrite)
        with pytest.raises(InvalidInputError, match="the output path is empty; give a file name"):
            write_exposure(objects["exposure"], "", overwrite=overwrite)
    with pytest.raises(InvalidInputError, match=r"it names a directory \(it ends in '/'\)"):
        write_exposure(objects["exposure"], str(tmp_path / "new") + os.sep)
    # nothing was written: no temporary file beside the directory, in the working directory or its parent
    assert sorted(os.listdir(tmp_path)) == ["dir.fits", "work"] and os.listdir(work) == []
    assert os.listdir(tmp_path / "dir.fits") == []


@pytest.mark.parametrize("code, reason, remedy", [
    (errno.EACCES, "Permission denied", "make it writable or write the output into another directory"),
    (errno.EROFS, "Read-only file system", "write the output into a directory on a writable file system"),
    (errno.ENOSPC, "No space left on device", "free some space there or write the output into another directory"),
])
@pytest.mark.parametrize("what", WRITERS)
def test_a_directory_refusing_the_temporary_file_names_the_output(tmp_path, monkeypatch, objects, what, code,
                                                                   reason, remedy):
    out = tmp_path / "out.fits"

    def refuse(prefix="", suffix="", dir=None, **kwargs):
        raise OSError(code, reason, os.path.join(dir, prefix + "abc123" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputNotWritableError, match=rf"cannot write '.*out.fits': directory '.*' is not writable "
                                                rf"\({reason}\); {remedy}") as info:
        WRITERS[what](objects, out)
    assert ".tmp" not in str(info.value) and isinstance(info.value.__cause__, OSError)
    assert isinstance(info.value, OSError)  # except OSError keeps working
    assert os.listdir(tmp_path) == []


def test_an_error_opening_the_temporary_file_names_the_output(tmp_path):
    out = tmp_path / "out.fits"
    out.write_bytes(b"old")
    with pytest.raises(OutputNotWritableError, match=r"cannot write '.*out.fits': directory '.*' is not writable "
                                                r"\(Permission denied\)") as info:
        with atomic_write(out, overwrite=True) as tmp:
            Path(tmp).write_bytes(b"half of the new")
            raise PermissionError(errno.EACCES, "Permission denied", tmp)
    assert ".tmp" not in str(info.value)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.fits"]  # the temporary file is gone


def test_a_read_only_directory_is_a_typed_error(tmp_path, objects):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        try:
            (ro / "probe").write_bytes(b"")
        except PermissionError:
            pass
        else:
            pytest.skip("permissions do not restrict this user (root)")
        with pytest.raises(OutputNotWritableError,
                           match=r"cannot write '.*ro/k.fits': directory '.*ro' is not writable \(Permission denied\); "
                                 "make it writable"):
            write_kernel(objects["kernel"], ro / "k.fits")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)
