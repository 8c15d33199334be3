"""LSST-style debug switches (issue 5): psfmatch.debug, debug.py, and each switch producing its display."""

import glob
import logging
import os
import sys
import textwrap

import numpy as np
import pytest

import psfmatch.debug as debug
from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.cli import main
from psfmatch.demo import demo_reference_psf, make_demo_exposure
from psfmatch.errors import PsfEvaluationError
from psfmatch.psf import VariableGaussianPsf

pytest.importorskip("matplotlib")

SWITCHES = {
    # file-name tag: (module, switch)
    "spatial-cells": ("psfmatch.task", "displaySpatialCells"),
    "candidates": ("psfmatch.solve", "displayCandidates"),
    "kernel-basis": ("psfmatch.solve", "displayKernelBasis"),
    "kernel-mosaic": ("psfmatch.solve", "displayKernelMosaic"),
    "kernel-spatial-model": ("psfmatch.solve", "plotKernelSpatialModel"),
}

DEBUG_PY = textwrap.dedent("""
    import psfmatch.debug

    def DebugInfo(name):
        info = psfmatch.debug.getInfo(name)
        if name == "psfmatch.task":
            info.display = True
            info.displaySpatialCells = True
            info.maskTransparency = 30
        if name == "psfmatch.solve":
            info.display = True
            info.displayKernelBasis = True
        return info

    psfmatch.debug.Info = DebugInfo
""")


@pytest.fixture(autouse=True)
def clean_debug(monkeypatch):
    debug.reset()
    monkeypatch.delitem(sys.modules, "debug", raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
    yield
    debug.reset()


@pytest.fixture(scope="module")
def fitted():
    exposure = make_demo_exposure(256, seed=5)
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    task = ModelPsfMatchTask(config=config)
    return task, exposure


def _pngs(folder):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.png")))


# ---------------------------------------------------------------------------
# the switch objects


def test_unset_switches_are_false():
    info = debug.Info("psfmatch.task")
    assert info.display is False and info.anything is False
    assert not info.maskTransparency


def test_switches_persist_per_module_name():
    debug.Info("psfmatch.solve").display = True
    assert debug.Info("psfmatch.solve").display is True
    assert debug.Info("psfmatch.task").display is False
    assert debug.Info("psfmatch.solve").to_dict() == {"display": True}
    del debug.Info("psfmatch.solve").display
    assert debug.Info("psfmatch.solve").display is False


def test_reset_restores_the_original_lookup():
    debug.Info = lambda name: None
    debug.Info("x")
    debug.reset()
    assert debug.Info is debug.getInfo


def test_scoped_restores_info_switches_and_folder(tmp_path):
    debug.Info("psfmatch.task").display = True
    with debug.scoped():
        debug.Info("psfmatch.task").display = False
        debug.Info("psfmatch.task").displaySpatialCells = True
        debug.Info = lambda name: "replaced"
        debug.set_output_dir(tmp_path)
    assert debug.Info is debug.getInfo
    assert debug.Info("psfmatch.task").to_dict() == {"display": True}
    assert debug.get_output_dir() is None


# ---------------------------------------------------------------------------
# importing debug.py


def test_import_debug_module_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "debug.py").write_text(DEBUG_PY)
    monkeypatch.chdir(tmp_path)
    mod = debug.import_debug_module()
    assert mod is not None and os.path.dirname(mod.__file__) == str(tmp_path)
    assert debug.Info is not debug.getInfo
    assert debug.Info("psfmatch.task").displaySpatialCells is True
    assert debug.Info("psfmatch.task").maskTransparency == 30
    assert debug.Info("psfmatch.solve").displayKernelBasis is True
    assert debug.Info("psfmatch.solve").displayCandidates is False


def test_missing_debug_module_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="psfmatch.debug"):
        assert debug.import_debug_module("psfmatch_no_such_debug_module") is None
    assert "no module" in caplog.text
    assert debug.Info is debug.getInfo


def test_the_task_looks_switches_up_at_run_time(fitted):
    task, exposure = fitted
    asked = []

    def spy(name):
        asked.append(name)
        return debug.getInfo(name)

    debug.Info = spy   # replaced after the task was built: it must still be used
    task.run(exposure, demo_reference_psf())
    assert "psfmatch.task" in asked and "psfmatch.solve" in asked


# ---------------------------------------------------------------------------
# each switch produces its display


@pytest.mark.parametrize("tag", list(SWITCHES))
def test_each_switch_writes_its_png(tag, fitted, tmp_path):
    task, exposure = fitted
    module, switch = SWITCHES[tag]
    info = debug.Info(module)
    info.display = True
    setattr(info, switch, True)
    debug.set_output_dir(tmp_path)
    fit = task.fitKernel(exposure.getPsf(), demo_reference_psf(), exposure.getBBox())
    from psfmatch.display import debug_displays

    written = debug_displays(exposure, fit)
    names = _pngs(tmp_path)
    assert len(names) == 1 and names[0].endswith(f"-{tag}.png")
    assert written == [str(tmp_path / names[0])]
    with open(written[0], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_master_switch_no_display(fitted, tmp_path):
    task, exposure = fitted
    for module, switch in SWITCHES.values():
        setattr(debug.Info(module), switch, True)      # sub-switches without `display`
    debug.set_output_dir(tmp_path)
    task.run(exposure, demo_reference_psf())
    assert _pngs(tmp_path) == []


def test_run_hook_shows_bad_candidates(tmp_path):
    class HolePsf(VariableGaussianPsf):
        """Fails in the upper right corner, so that some candidates are BAD."""

        def _kernel_image(self, x, y):
            if x > 192 and y > 192:
                raise PsfEvaluationError(f"no PSF at ({x}, {y})")
            return super()._kernel_image(x, y)

    bbox = Box2I((0, 0), (256, 256))
    psf = HolePsf(21, 21, bbox, sigma=[1.8, 0.1, 0.05], e1=[0.02], e2=[0.0])
    rng = np.random.default_rng(1)
    exposure = Exposure(rng.normal(size=(256, 256)).astype(np.float32),
                        variance=np.ones((256, 256), np.float32), psf=psf)
    for tag in ("spatial-cells", "candidates"):
        module, switch = SWITCHES[tag]
        info = debug.Info(module)
        info.display = True
        setattr(info, switch, True)
    debug.Info("psfmatch.solve").showBadCandidates = True
    debug.set_output_dir(tmp_path)
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    config.kernel.active.spatialKernelOrder = 1
    result = ModelPsfMatchTask(config=config).run(exposure, demo_reference_psf())
    assert result.metadata["nCandidatesRejected"] > 0
    names = _pngs(tmp_path)
    assert [n.split("-", 3)[-1] for n in names] == ["spatial-cells.png", "candidates.png"]
    frames = [int(n.split("-")[2]) for n in names]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)


def test_cli_debug_imports_debug_py_and_writes_pngs_in_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "debug.py").write_text(DEBUG_PY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["demo", "--size", "256", "--debug", "-q"]) == 0
    names = _pngs(tmp_path)
    assert len(names) == 2
    assert names[0].endswith("-spatial-cells.png") and names[1].endswith("-kernel-basis.png")
    # the command restored the switches: a later library call shows nothing
    assert debug.Info is debug.getInfo
    assert debug.Info("psfmatch.task").display is False


def test_cli_debug_dir(tmp_path, monkeypatch):
    (tmp_path / "debug.py").write_text(DEBUG_PY)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "figs"
    assert main(["demo", "--size", "256", "--debug", "--debug-dir", str(out), "-q"]) == 0
    assert len(_pngs(out)) == 2
    assert _pngs(tmp_path) == []


def test_cli_debug_without_debug_py_still_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    assert main(["demo", "--size", "256", "--debug"]) == 0
    err = capsys.readouterr().err
    if "debug" not in sys.modules:  # some other 'debug' module may exist on the path of this machine
        assert "no module 'debug'" in err
    assert _pngs(tmp_path) == []


def test_spatial_model_display_of_a_one_kernel_basis(tmp_path):
    """A constant delta-function match keeps one principal component: the display says so, the run goes on."""
    from psfmatch.psf import GaussianPsf
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.name = "DF"
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(25, 25, 1.8))
    info = debug.Info("psfmatch.solve")
    info.display = True
    info.plotKernelSpatialModel = True
    debug.set_output_dir(tmp_path)
    result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6))
    assert len(result.psfMatchingKernel.basis) == 1
    names = _pngs(tmp_path)
    assert len(names) == 1 and names[0].endswith("-kernel-spatial-model.png")


def test_a_failing_display_is_logged_and_does_not_abort_the_run(fitted, tmp_path, monkeypatch, caplog):
    import psfmatch.display as display

    def broken(*args, **kwargs):
        raise RuntimeError("no figure today")

    monkeypatch.setattr(display, "show_kernel_basis", broken)
    task, exposure = fitted
    info = debug.Info("psfmatch.solve")
    info.display = True
    info.displayKernelBasis = True
    info.displayKernelMosaic = True
    debug.set_output_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="psfmatch.display"):
        result = task.run(exposure, demo_reference_psf())
    assert result.psfMatchedExposure is not None
    assert "debug display 'kernel-basis' skipped: RuntimeError: no figure today" in caplog.text
    assert [n.split("-", 3)[-1] for n in _pngs(tmp_path)] == ["kernel-mosaic.png"]


def test_a_screen_without_an_interactive_backend_writes_the_files(fitted, tmp_path, monkeypatch, caplog):
    """DISPLAY set (an inherited ssh or container variable) but matplotlib fell back to Agg: plt.show() would
    show nothing, so the displays are written to the current directory instead of being lost."""
    import psfmatch.display as display

    monkeypatch.setattr(display, "has_screen", lambda: True)
    monkeypatch.chdir(tmp_path)
    task, exposure = fitted
    info = debug.Info("psfmatch.solve")
    info.display = True
    info.displayKernelBasis = True
    fit = task.fitKernel(exposure.getPsf(), demo_reference_psf(), exposure.getBBox())
    import matplotlib
    assert matplotlib.get_backend().lower() == "agg"
    with caplog.at_level(logging.WARNING, logger="psfmatch.display"):
        written = display.debug_displays(exposure, fit)
    assert [os.path.basename(p).split("-", 3)[-1] for p in written] == ["kernel-basis.png"]
    assert _pngs(tmp_path) == [os.path.basename(written[0])]
    assert "debug displays: no window can open (matplotlib's backend is 'agg'): writing them to files" in caplog.text


# ---------------------------------------------------------------------------
# writing the figures: never replacing, never aborting the match


def _switch_on(*tags):
    for tag in tags:
        module, switch = SWITCHES[tag]
        info = debug.Info(module)
        info.display = True
        setattr(info, switch, True)


def test_a_second_run_keeps_the_first_runs_figures(fitted, tmp_path):
    """A new process (frame counter at 0) writing into the same folder numbers its figures past the ones there
    (it wrote psfmatch-debug-001-... again, replacing the first run's figure without --overwrite)."""
    from psfmatch.display import debug_displays

    task, exposure = fitted
    fit = task.fitKernel(exposure.getPsf(), demo_reference_psf(), exposure.getBBox())
    (tmp_path / "psfmatch-debug-007-notes.png").write_bytes(b"not mine")   # a higher number already there
    _switch_on("kernel-basis")
    debug.set_output_dir(tmp_path)
    first = debug_displays(exposure, fit)
    assert [os.path.basename(p) for p in first] == ["psfmatch-debug-008-kernel-basis.png"]
    content = open(first[0], "rb").read()
    debug.reset()                                   # as a new process
    _switch_on("kernel-basis", "kernel-mosaic")
    debug.set_output_dir(tmp_path)
    second = debug_displays(exposure, fit)
    assert [os.path.basename(p) for p in second] == ["psfmatch-debug-009-kernel-basis.png",
                                                     "psfmatch-debug-010-kernel-mosaic.png"]
    assert open(first[0], "rb").read() == content
    assert (tmp_path / "psfmatch-debug-007-notes.png").read_bytes() == b"not mine"
    assert debug.frame == 10


def test_next_frame_skips_the_numbers_used_in_a_folder(tmp_path):
    for name in ("psfmatch-debug-003-candidates.png", "psfmatch-debug-1204-kernel-basis.png",
                 "psfmatch-debug-x-kernel-basis.png", "other-999.png", ".psfmatch-debug-5000-a.png.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert debug.next_frame() == 1
    assert debug.next_frame(tmp_path) == 1205
    assert debug.next_frame(tmp_path / "missing") == 1206
    assert debug.next_frame() == 1207


def test_a_debug_folder_that_became_a_file_costs_the_figures_not_the_match(fitted, tmp_path, caplog):
    task, exposure = fitted
    _switch_on("kernel-basis")
    folder = tmp_path / "figs"
    debug.set_output_dir(folder)
    folder.write_text("my notes\n")                 # after set_output_dir (which refuses a file)
    with caplog.at_level(logging.WARNING, logger="psfmatch.display"):
        result = task.run(exposure, demo_reference_psf())
    assert result.psfMatchedExposure is not None
    assert f"debug displays not written: cannot make the folder {str(folder)!r}" in caplog.text
    assert folder.read_text() == "my notes\n"


def test_a_folder_refusing_the_files_costs_the_figures_not_the_match(fitted, tmp_path, monkeypatch, caplog):
    import psfmatch.display as display
    from psfmatch.errors import OutputNotWritableError

    calls = []

    def refused(fig, path, **kwargs):
        calls.append(path)
        raise OutputNotWritableError(f"cannot write {path!r}: directory is not writable (No space left on device)")

    monkeypatch.setattr(display, "save_figure", refused)
    task, exposure = fitted
    _switch_on("kernel-basis", "kernel-mosaic")
    debug.set_output_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="psfmatch.display"):
        result = task.run(exposure, demo_reference_psf())
    assert result.psfMatchedExposure is not None
    assert len(calls) == 1                           # the second figure is not tried in a folder that refused one
    assert (f"debug displays not written: folder {str(tmp_path)!r} does not take them (OutputNotWritableError: "
            "cannot write") in caplog.text
    assert "No space left on device" in caplog.text
    assert _pngs(tmp_path) == []


def test_a_figure_failing_while_it_is_saved_skips_only_that_figure(fitted, tmp_path, monkeypatch, caplog):
    import psfmatch.display as display

    real = display.save_figure

    def flaky(fig, path, **kwargs):
        if "kernel-basis" in os.fspath(path):
            raise ValueError("cannot render this one")   # matplotlib draws while saving
        return real(fig, path, **kwargs)

    monkeypatch.setattr(display, "save_figure", flaky)
    task, exposure = fitted
    _switch_on("kernel-basis", "kernel-mosaic")
    debug.set_output_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="psfmatch.display"):
        task.run(exposure, demo_reference_psf())
    assert "debug display 'kernel-basis' skipped: ValueError: cannot render this one" in caplog.text
    assert [n.split("-", 3)[-1] for n in _pngs(tmp_path)] == ["kernel-mosaic.png"]


def test_set_output_dir_refuses_a_file(tmp_path):
    from psfmatch.errors import InvalidInputError

    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(InvalidInputError, match=r"debug output folder '.*notes.txt' exists and is not a directory; "
                                                r"give a directory"):
        debug.set_output_dir(path)
    assert debug.get_output_dir() is None
    debug.set_output_dir(tmp_path / "new")           # a folder still to be made is fine
    assert debug.get_output_dir() == str(tmp_path / "new")


def _unwritable_folder(tmp_path):
    """A directory no file can be created in, or None (root writes through permissions)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return folder
    folder.chmod(0o700)
    if os.path.isdir("/proc/self/fdinfo"):            # not writable for root either
        import tempfile
        try:
            fd, probe = tempfile.mkstemp(dir="/proc/self/fdinfo")
        except OSError:
            return "/proc/self/fdinfo"
        os.close(fd)
        os.unlink(probe)
    return None


def test_cli_refuses_an_unwritable_debug_dir_before_the_fit(tmp_path, monkeypatch, capsys):
    import psfmatch.cli as cli

    folder = _unwritable_folder(tmp_path)
    if folder is None:
        pytest.skip("no unwritable directory on this machine")
    (tmp_path / "debug.py").write_text(DEBUG_PY)
    monkeypatch.chdir(tmp_path)

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit started")

    monkeypatch.setattr(cli, "_run_task", no_fit)
    try:
        rc = main(["demo", "--size", "128", "--debug", "--debug-dir", str(folder), "--outdir", "out"])
    finally:
        if folder != "/proc/self/fdinfo":
            os.chmod(folder, 0o700)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"--debug-dir {folder}: directory is not writable (" in err and "give another directory" in err
    assert os.listdir(tmp_path / "out") == []


def test_convolve_time_does_not_count_the_debug_displays(tmp_path, monkeypatch):
    """metadata['convolveTime'] took 1.5 s instead of 0.03 with the debug displays on: they ran inside its timer."""
    import time

    import psfmatch.display
    from psfmatch import ModelPsfMatchTask
    from psfmatch.demo import demo_reference_psf, make_demo_exposure

    monkeypatch.setattr(psfmatch.display, "debug_displays", lambda *a, **k: time.sleep(0.5))
    exposure = make_demo_exposure(128)
    with debug.scoped():
        debug.set_output_dir(tmp_path)
        debug.Info("psfmatch.solve").display = True
        result = ModelPsfMatchTask().run(exposure, demo_reference_psf())
    md = result.metadata
    assert md["debugDisplayTime"] >= 0.5 and md["convolveTime"] < 0.4
    assert md["runTime"] >= md["fitTime"] + md["debugDisplayTime"] + md["convolveTime"] - 1e-3
