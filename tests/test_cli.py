"""The ``psfmatch`` command line (issue 5): exit codes, atomic outputs, overrides, PSF specs."""

import json
import os
import re
import sys

import numpy as np
import pytest

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.cli import format_config, main, parse_psf_spec
from psfmatch.config import apply_overrides, load_overrides
from psfmatch.demo import make_demo_exposure
from psfmatch.errors import InvalidInputError
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, MoffatPsf

# 16 cells on a 256 x 256 exposure: enough candidates for the default spatial order
SMALL_CELLS = ["-c", "kernel.active.sizeCellX=64", "-c", "kernel.active.sizeCellY=64"]


@pytest.fixture(scope="module")
def exposure_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "exposure.fits"
    make_demo_exposure(256, seed=3).writeFits(str(path))
    return str(path)


def _files(folder):
    return sorted(os.listdir(folder))


def _run(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------
# run


def test_run_writes_every_output_and_json_matches_the_task(exposure_file, tmp_path, capsys):
    out = tmp_path / "matched.fits"
    kern = tmp_path / "kernel.fits"
    plot = tmp_path / "qa.png"
    qa = tmp_path / "qa.json"
    rc, stdout, err = _run(["run", exposure_file, "--reference-psf", "gaussian:sigma=2.6", "-o", str(out),
                            "--kernel-out", str(kern), "--qa-plot", str(plot), "--qa-json", str(qa), *SMALL_CELLS],
                           capsys)
    assert rc == 0, err
    assert _files(tmp_path) == ["kernel.fits", "matched.fits", "qa.json", "qa.png"]  # no temporary leftovers
    assert "QA candidates" in stdout and "QA field grid" in stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    matched = Exposure.readFits(str(out))
    assert matched.getPsf().computeKernelImage((10, 10)).shape[0] % 2 == 1
    report = json.loads(qa.read_text())

    # the same task, in process, gives the numbers the JSON holds
    config = ModelPsfMatchConfig()
    apply_overrides(config, ["kernel.active.sizeCellX=64", "kernel.active.sizeCellY=64"])
    exposure = Exposure.readFits(exposure_file)
    result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(23, 23, 2.6))
    md = result.metadata
    for where in ("candidates", "between"):
        for key, value in md["qa"][where].items():
            assert report["qa"][where][key] == pytest.approx(value, rel=1e-9, abs=1e-15), (where, key)
    assert report["metadata"]["nCandidatesUsed"] == md["nCandidatesUsed"] == 16
    assert report["metadata"]["kernelSize"] == md["kernelSize"]
    assert np.allclose(matched.image[np.isfinite(matched.image)],
                       result.psfMatchedExposure.image[np.isfinite(result.psfMatchedExposure.image)])

    from psfmatch.kernel import LinearCombinationKernel
    k = LinearCombinationKernel.readFits(str(kern))
    assert np.allclose(k.computeImage((40, 200)), result.psfMatchingKernel.computeImage((40, 200)))


def test_run_applies_config_overrides(exposure_file, tmp_path, capsys):
    py = tmp_path / "over.py"
    py.write_text("config.kernel.active.kernelSize = 17\n")
    qa = tmp_path / "qa.json"
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:fwhm=6.1", "-o", str(tmp_path / "m.fits"),
                       "-C", str(py), "-c", "kernel.active.spatialKernelOrder=1", "--qa-json", str(qa), "-q",
                       *SMALL_CELLS], capsys)
    assert rc == 0, err
    md = json.loads(qa.read_text())["metadata"]
    assert md["kernelSize"] == 17
    assert md["spatialKernelOrder"] == md["spatialKernelOrderRequested"] == 1


def test_run_refuses_to_overwrite_and_leaves_the_file_alone(exposure_file, tmp_path, capsys):
    out = tmp_path / "m.fits"
    out.write_bytes(b"precious")
    rc, stdout, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(out)], capsys)
    assert rc == 1
    assert "exists" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(out), "--overwrite", "-q",
                       *SMALL_CELLS], capsys)
    assert rc == 0, err
    assert Exposure.readFits(str(out)).getWidth() == 256


def test_run_refuses_to_replace_its_input_through_a_symbolic_link(exposure_file, tmp_path, capsys):
    orig = tmp_path / "orig.fits"
    orig.write_bytes(open(exposure_file, "rb").read())
    (tmp_path / "link.fits").symlink_to("orig.fits")
    before = orig.read_bytes()
    rc, _, err = _run(["run", str(tmp_path / "link.fits"), "-r", "gaussian:sigma=2.6", "-o", str(orig),
                       "--overwrite", *SMALL_CELLS], capsys)
    assert rc == 1
    assert re.search(r"output .*orig\.fits would overwrite the input .*link\.fits", err), err
    assert orig.read_bytes() == before
    assert _files(tmp_path) == ["link.fits", "orig.fits"]


def test_an_output_that_is_a_directory_is_refused_before_the_match(exposure_file, tmp_path, capsys, monkeypatch):
    import psfmatch.cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the task ran although an output cannot be written")

    monkeypatch.setattr(psfmatch.cli, "_run_task", must_not_run)
    (tmp_path / "qa").mkdir()
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                       "--qa-json", str(tmp_path / "qa"), "--overwrite"], capsys)
    assert rc == 1
    assert re.search(r"--qa-json .*qa is a directory; give the name of a file", err), err
    assert len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == ["qa"]  # no matched exposure, no temporary file


def test_commit_checks_every_destination_first_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from psfmatch.cli import _StagedOutputs

    def stage(names):
        outputs = _StagedOutputs(overwrite=True)
        for name in names:
            outputs.add(str(tmp_path / name), name)
            with open(outputs.temp(str(tmp_path / name)), "w") as fh:
                fh.write("new " + name)
        return outputs

    # a destination that became a directory while the command ran: nothing is moved
    (tmp_path / "a.txt").write_text("old a")
    outputs = stage(["a.txt", "b.txt"])
    (tmp_path / "b.txt").mkdir()
    with pytest.raises(InvalidInputError, match=r"b\.txt is a directory"):
        outputs.commit()
    outputs.discard()
    assert _files(tmp_path) == ["a.txt", "b.txt"] and (tmp_path / "a.txt").read_text() == "old a"

    # a rename that fails: its temporary file is still removed by discard()
    (tmp_path / "b.txt").rmdir()
    outputs = stage(["a.txt", "b.txt"])

    def failing_replace(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="cross-device"):
        outputs.commit()
    monkeypatch.undo()
    outputs.discard()
    assert _files(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"


def test_failure_in_the_task_writes_nothing(exposure_file, tmp_path, capsys):
    rc, stdout, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                            "--kernel-out", str(tmp_path / "k.fits"), "--qa-json", str(tmp_path / "q.json"),
                            "-c", "doAutoPadPsf=False", "-c", "kernel.active.kernelSize=35"], capsys)
    assert rc == 1
    assert "too big" in err
    # one error line (after autoKernel's warning that it lowered the spatial order), no traceback
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("psfmatch run: error:")
    assert _files(tmp_path) == []


def test_failure_while_writing_leaves_no_partial_output(exposure_file, tmp_path, capsys, monkeypatch):
    # writing the QA JSON fails after the exposure and the kernel were written: none of them may appear
    import psfmatch.display

    def disk_full(report, path, **kwargs):
        with open(path, "w") as fh:
            fh.write("{partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(psfmatch.display, "write_qa_json", disk_full)
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                       "--kernel-out", str(tmp_path / "k.fits"), "--qa-json", str(tmp_path / "qa.json"),
                       *SMALL_CELLS], capsys)
    assert rc == 1
    assert "No space left" in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == []


def test_unknown_figure_format_fails_before_any_work(exposure_file, tmp_path, capsys):
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                       "--qa-plot", str(tmp_path / "qa.notaformat")], capsys)
    assert rc == 1
    assert "notaformat" in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == []


def test_verbose_failure_shows_the_traceback(tmp_path, capsys):
    rc, _, err = _run(["run", str(tmp_path / "missing.fits"), "-r", "gaussian:sigma=2", "-o",
                       str(tmp_path / "m.fits"), "-v"], capsys)
    assert rc == 1
    assert "Traceback" in err and "missing.fits" in err
    assert _files(tmp_path) == []


def test_missing_input_is_one_line(tmp_path, capsys):
    rc, stdout, err = _run(["run", str(tmp_path / "missing.fits"), "-r", "gaussian:sigma=2", "-o",
                            str(tmp_path / "m.fits")], capsys)
    assert rc == 1
    assert err.strip().splitlines() == [err.strip()] and err.startswith("psfmatch run: error:")
    assert "missing.fits" in err
    assert stdout == ""


@pytest.mark.parametrize("option, role", [(["-r", "{missing}"], "reference PSF"),
                                          (["-r", "gaussian:sigma=2", "--psf", "{missing}"], r"science PSF \(--psf\)")])
def test_missing_psf_file_names_its_role(exposure_file, tmp_path, capsys, option, role):
    missing = str(tmp_path / "gone.psf")
    rc, stdout, err = _run(["run", exposure_file, "-o", str(tmp_path / "m.fits"),
                            *[o.format(missing=missing) for o in option]], capsys)
    assert rc == 1 and re.search(rf"error: {role} file '.*gone\.psf' does not exist", err), err
    assert _files(tmp_path) == []


@pytest.mark.parametrize("args", [
    [],                                                                  # no command
    ["run"],                                                             # missing arguments
    ["run", "x.fits", "-o", "o.fits"],                                   # no reference PSF
    ["run", "x.fits", "-o", "o.fits", "-r", "gausian:sigma=2"],          # unknown kind
    ["run", "x.fits", "-o", "o.fits", "-r", "gaussian:sigma=two"],       # not a number
    ["run", "x.fits", "-o", "o.fits", "-r", "moffat:fwhm=3"],            # missing beta
    ["run", "x.fits", "-o", "o.fits", "-r", "gaussian:sigma=2", "--kernel-sum", "-1"],
    ["inspect-psf", "gaussian:sigma=2", "--at", "12"],                   # bad position
    ["frobnicate"],
    ["run", "x.fits", "-o", "o.fits", "-r", "gaussian:sigma=1e308"],     # a stamp too big (was an OverflowError)
    ["inspect-psf", "moffat:fwhm=1e308,beta=2"],
    ["demo", "--size", "0"],                                             # the demo needs 32 x 32 px
    ["demo", "--size", "10"],
    ["demo", "--seed", "-1"],
])
def test_usage_errors_exit_2(args, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = _run(args, capsys)
    assert rc == 2
    assert "usage:" in err
    assert _files(tmp_path) == []


@pytest.mark.parametrize("args, match", [
    (["run", "x.fits", "-o", "o.fits", "-r", "gaussian:sigma=1e308"], "too broad: its stamp .* would be infinite"),
    (["demo", "--size", "10"], "at least 32 x 32 pixels; got '10'"),
    (["demo", "--seed", "-1"], "seed must be >= 0; got '-1'"),
])
def test_usage_errors_name_the_value_and_the_limit(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(args, capsys)
    assert rc == 2 and re.search(match, err), err
    assert "Traceback" not in err


def test_help_and_version_exit_0(capsys):
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "psfmatch" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# demo


def test_demo_without_arguments_prints_the_summary_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = _run(["demo", "--size", "256"], capsys)
    assert rc == 0, err
    assert "QA candidates" in stdout and "kernel sum at field centre" in stdout
    assert _files(tmp_path) == []


def test_demo_outdir_writes_its_products(tmp_path, capsys):
    outdir = tmp_path / "demo"
    outdir.mkdir()
    (outdir / "demo-qa.json").write_text("stale")   # the demo replaces its earlier products
    rc, stdout, err = _run(["demo", "--size", "256", "--outdir", str(outdir), *SMALL_CELLS], capsys)
    assert rc == 0, err
    assert _files(outdir) == ["demo-exposure.fits", "demo-kernel.fits", "demo-matched.fits", "demo-qa.json",
                              "demo-qa.png"]
    # the input, with its PSF, so that psfmatch run can be tried on it
    rc2, _, err2 = _run(["run", str(outdir / "demo-exposure.fits"), "-r", "gaussian:sigma=2.6", "-o",
                         str(tmp_path / "again.fits"), *SMALL_CELLS], capsys)
    assert rc2 == 0, err2
    np.testing.assert_array_equal(Exposure.readFits(str(tmp_path / "again.fits")).image,
                                  Exposure.readFits(str(outdir / "demo-matched.fits")).image)
    report = json.loads((outdir / "demo-qa.json").read_text())
    assert report["qa"] == report["metadata"]["qa"]
    assert report["grid"]["shape"] == [16, 16]
    for name in _files(outdir):
        assert f"wrote {outdir / name}" in stdout


def test_demo_outdir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "demo").write_text("not a folder")
    rc, _, err = _run(["demo", "--size", "64", "--outdir", str(tmp_path / "demo")], capsys)
    assert rc == 1
    assert re.search(r"--outdir .*demo exists and is not a directory", err), err
    assert (tmp_path / "demo").read_text() == "not a folder"


def test_quiet_prints_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = _run(["demo", "--size", "256", "-q"], capsys)
    assert rc == 0
    assert stdout == "" and err == ""


def test_warnings_and_logs_go_to_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # one cell constrains only a constant kernel: the task logs a warning
    rc, stdout, err = _run(["demo", "--size", "128"], capsys)
    assert rc == 0
    assert "WARNING psfmatch.task: the 128x128 exposure is a single cell" in err, err
    rc, stdout, err = _run(["demo", "--size", "256", "-v"], capsys)
    assert "INFO" in err and "compute Psf-matching kernel" in err


# ---------------------------------------------------------------------------
# config


def test_config_prints_every_field_with_its_doc(capsys):
    rc, out, _ = _run(["config"], capsys)
    assert rc == 0
    # defaults are shown commented out, so that loading the output keeps them defaults
    assert "#  config.kernel.name = 'AL'" in out
    assert "#  config.kernel['AL'].kernelSize = 21" in out
    assert "# [int] Number of rows and columns of the PSF-matching kernel" in out
    assert "#  config.doAutoPadPsf = True" in out
    assert not [line for line in out.splitlines() if line.startswith("config.")]
    assert "lambdaScaling" not in out           # the DF choice is not active
    rc, out, _ = _run(["config", "--all"], capsys)
    assert "#  config.kernel['DF'].lambdaScaling = " in out


def test_config_shows_overrides_from_every_source(tmp_path, capsys):
    py = tmp_path / "a.py"
    py.write_text("config.kernel.name = 'DF'\nconfig.kernel.active.kernelSize = 15\n")
    toml = tmp_path / "b.toml"
    toml.write_text("autoPadPsfTo = 1.6\n[kernel.DF]\nlambdaScaling = 0.002\n")
    yaml = tmp_path / "c.yaml"
    yaml.write_text("padPsfBy: 4\n")
    rc, out, err = _run(["config", "-C", str(py), "-C", str(toml), "-C", str(yaml),
                         "-c", "kernel.active.spatialKernelOrder=1"], capsys)
    assert rc == 0, err
    set_lines = [line for line in out.splitlines() if line.startswith("config.")]
    assert set_lines == ["config.kernel.name = 'DF'", "config.kernel['DF'].kernelSize = 15",
                         "config.kernel['DF'].spatialKernelOrder = 1", "config.kernel['DF'].lambdaScaling = 0.002",
                         "config.autoPadPsfTo = 1.6", "config.padPsfBy = 4"]
    assert "[default 21]" in out  # changed values say what the default was


def test_config_output_loads_back(tmp_path, capsys):
    rc, out, _ = _run(["config", "--all", "-c", "kernel.active.kernelSize=25", "-c", "kernel.AL.alardSigGauss=[1,2,4]",
                       "-c", "kernel.name=DF"], capsys)
    assert rc == 0
    saved = tmp_path / "saved.py"
    saved.write_text(out)
    expected = ModelPsfMatchConfig()
    apply_overrides(expected, ["kernel.active.kernelSize=25", "kernel.AL.alardSigGauss=[1,2,4]", "kernel.name=DF"])
    loaded = load_overrides(ModelPsfMatchConfig(), str(saved))
    assert loaded == expected
    assert format_config(loaded, all_choices=True) == out
    if hasattr(loaded, "isExplicit"):  # explicit choices survive the round trip, defaults stay defaults
        assert loaded.kernel["AL"].isExplicit("kernelSize") and loaded.kernel.isExplicit()
        assert not loaded.isExplicit("doAutoPadPsf") and not loaded.kernel["DF"].isExplicit("kernelSize")


def test_config_output_with_an_infinite_value_is_plain_python_and_loads_back(tmp_path, capsys):
    rc, out, err = _run(["config", "-c", "maxMemoryGiB=inf"], capsys)
    assert rc == 0, err
    assert "config.maxMemoryGiB = float('inf')" in out.splitlines()
    plain = ModelPsfMatchConfig()
    exec(compile(out, "dump.py", "exec"), {"config": plain})  # no special names needed
    assert plain.maxMemoryGiB == float("inf") and plain.isExplicit("maxMemoryGiB")
    dump = tmp_path / "dump.py"
    dump.write_text(out)
    rc, again, err = _run(["config", "-C", str(dump)], capsys)
    assert rc == 0, err
    assert again == out


def test_bad_override_is_one_line_exit_1(capsys):
    rc, out, err = _run(["config", "-c", "kernel.active.kernelSize=20"], capsys)
    assert rc == 1
    assert "kernelSize" in err and len(err.strip().splitlines()) == 1
    rc, out, err = _run(["config", "-c", "no.such.field=1"], capsys)
    assert rc == 1 and "no.such.field" in err
    rc, out, err = _run(["config", "-C", "/nonexistent/over.py"], capsys)
    assert rc == 1 and "does not exist" in err


# ---------------------------------------------------------------------------
# inspect-psf


def test_inspect_psf_spec_and_file(exposure_file, tmp_path, capsys):
    rc, out, err = _run(["inspect-psf", "gaussian:sigma=2"], capsys)
    assert rc == 0, err
    assert "sigma 2.000" in out and "spatially constant" in out
    fig = tmp_path / "psf.png"
    rc, out, err = _run(["inspect-psf", exposure_file, "--at", "30,200", "--plot", str(fig)], capsys)
    assert rc == 0, err
    assert "at (30.0, 200.0)" in out and "over 256x256 px" in out
    assert fig.read_bytes()[:4] == b"\x89PNG"
    rc, out, err = _run(["inspect-psf", "moffat:fwhm=4,beta=3", "--json"], capsys)
    data = json.loads(out)
    assert data["at"]["width"] == data["at"]["height"] and data["at"]["e"] < 1e-6


def test_inspect_psf_missing_file_is_exit_1(tmp_path, capsys):
    rc, out, err = _run(["inspect-psf", str(tmp_path / "none.psf")], capsys)
    assert rc == 1 and re.search(r"error: PSF file '.*none\.psf' does not exist \(and .* is not an analytic model", err)


# ---------------------------------------------------------------------------
# PSF specifications


def test_parse_psf_spec_models():
    g = parse_psf_spec("gaussian:sigma=2.6")
    assert isinstance(g, GaussianPsf) and g.getSigma() == 2.6
    g = parse_psf_spec("gaussian:fwhm=6.1,size=41")
    assert g.getSigma() == pytest.approx(6.1 / 2.3548200450309493)
    assert g.computeKernelImage((0, 0)).shape == (41, 41)
    d = parse_psf_spec("doublegaussian:sigma1=2,sigma2=4.5,b=0.1")
    assert isinstance(d, DoubleGaussianPsf) and (d.getSigma1(), d.getSigma2(), d.getB()) == (2.0, 4.5, 0.1)
    assert parse_psf_spec("dgauss:fwhm1=4.7").getSigma2() == pytest.approx(2 * 4.7 / 2.3548200450309493)
    m = parse_psf_spec("Moffat: fwhm=5, beta=3.5")
    assert isinstance(m, MoffatPsf) and (m.getFwhm(), m.getBeta()) == (5.0, 3.5)


@pytest.mark.parametrize("spec, match", [
    ("", "empty"),
    ("gaussian:", "exactly one of sigma and fwhm"),
    ("gaussian:sigma=2,fwhm=3", "exactly one of sigma and fwhm"),
    ("gaussian:sigma=2,sigma=3", "twice"),
    ("gaussian:width=2", "takes fwhm, sigma, size"),
    ("gaussian:sigma=-1", "positive"),
    ("gaussian:sigma=2,size=20", "odd integer"),
    ("gaussian:sigma", "key=value"),
    ("moffat:fwhm=3,beta=1", "beta must be > 1"),
    ("airy:radius=3", "unknown kind 'airy'"),
    ("psfex:", "needs a file name"),
    ("gaussian:sigma=1e308", "too broad: its stamp .* would be infinite, beyond the 4095 px limit"),
    ("moffat:fwhm=1e308,beta=2", "too broad"),
    ("doublegaussian:sigma1=1,sigma2=1e6,b=0.1", "would be about 8000001 px, beyond the 4095 px limit"),
    ("gaussian:sigma=2,size=5001", "size=5001 is larger than the 4095 px limit"),
])
def test_parse_psf_spec_errors(spec, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_psf_spec(spec)


def test_parse_psf_spec_files(exposure_file, tmp_path):
    psf = parse_psf_spec(exposure_file)
    assert psf.computeKernelImage((10, 10)).shape == (21, 21)
    assert parse_psf_spec(f"psfmatch:{exposure_file}").computeKernelImage((10, 10)).shape == (21, 21)
    assert parse_psf_spec(str(tmp_path / "nofile.fits"), read_files=False) is None
    from psfmatch.errors import MissingFileError

    with pytest.raises(MissingFileError, match="nofile"):  # (a FileNotFoundError too)
        parse_psf_spec(str(tmp_path / "nofile.fits"))


def _biased_psf_image(path, sigma=1.3, bias=1000.0, centre=(15.0, 15.0)):
    """A Gaussian PSF image on a flat soft bias, as SDSS writes them."""
    from astropy.io import fits

    y, x = np.mgrid[:31, :31]
    core = 500.0 * np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma ** 2))
    fits.HDUList([fits.PrimaryHDU(core + bias), fits.ImageHDU(core, name="PSF")]).writeto(path)
    return str(path)


def test_a_file_spec_passes_its_readers_options(tmp_path):
    """``image:FILE,background=1000`` reads an SDSS-like PSF image without its bias; the command line could not
    (read as it is, the bias makes a PSF of sigma about 11 px instead of 1.3, and the warning's remedy was a
    Python-only argument)."""
    import warnings

    from psfmatch.errors import PsfMatchWarning

    path = _biased_psf_image(tmp_path / "sdss.fits")
    with pytest.warns(PsfMatchWarning, match=r"on the command line, image:FILE,background=1000\)"):
        plain = parse_psf_spec(f"image:{path}")
    assert plain.computeShape().sigma > 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", PsfMatchWarning)
        unbiased = parse_psf_spec(f"image:{path},background=1000")
        spaced = parse_psf_spec(f"{path}, background=1000.0, recenter=true")  # a bare FILE, identified
        other_hdu = parse_psf_spec(f"image:{path},hdu=PSF")  # text: an HDU's name
        by_index = parse_psf_spec(f"image:{path},hdu=1")
    for psf in (unbiased, spaced, other_hdu, by_index):
        assert psf.computeShape().sigma == pytest.approx(1.3, rel=1e-3)
    # recenter=true is a boolean that reaches the reader: an image 0.4 px off its centre is moved onto it
    off = _biased_psf_image(tmp_path / "off.fits", bias=0.0, centre=(15.4, 15.0))
    as_is, moved = parse_psf_spec(f"image:{off}"), parse_psf_spec(f"image:{off},recenter=true")
    from psfmatch.moments import adaptive_moments

    assert adaptive_moments(as_is.computeKernelImage((0, 0)))[3] == pytest.approx(0.4, abs=0.01)  # x offset
    assert adaptive_moments(moved.computeKernelImage((0, 0)))[3] == pytest.approx(0.0, abs=0.01)
    # a file whose own name ends like an option is read as it is
    odd = _biased_psf_image(tmp_path / "psf.fits,background=1000", bias=0.0)
    assert parse_psf_spec(f"image:{odd}").computeShape().sigma == pytest.approx(1.3, rel=1e-3)


@pytest.mark.parametrize("suffix, match", [
    (",background=", r"the reader option 'background' needs a value \(background=VALUE\)"),
    (",background=1,background=2", r"the reader option 'background' is given twice"),
])
def test_file_spec_option_syntax_is_checked_before_any_work(tmp_path, suffix, match):
    from psfmatch.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=rf"^reference PSF 'image:\S+': {match}; expected "):
        parse_psf_spec(f"image:{tmp_path / 'nofile.fits'}{suffix}", read_files=False, role="reference PSF")


@pytest.mark.parametrize("suffix", [",=3", ",recenter", ",background=1000,recenter", ", ="])
def test_a_malformed_option_after_an_existing_file_is_named_not_taken_for_a_missing_file(tmp_path, suffix):
    """``image:FILE,=3`` (an option without a name) was reported as a missing file ``'FILE,=3'``."""
    from psfmatch.errors import InvalidInputError

    path = _biased_psf_image(tmp_path / "sdss.fits")
    for spec in (f"image:{path}{suffix}", f"{path}{suffix}"):
        with pytest.raises(InvalidInputError, match=rf"^reference PSF '.*': '{re.escape(suffix)}' after the file "
                                                    rf"'{re.escape(path)}' is not a list of reader options: give each "
                                                    r"as ,name=value \(e\.g\. image:FILE,background=1000"):
            parse_psf_spec(spec, role="reference PSF")


def test_a_file_spec_option_its_reader_does_not_take_is_refused(tmp_path):
    from psfmatch.errors import InvalidInputError

    path = _biased_psf_image(tmp_path / "sdss.fits")
    with pytest.raises(InvalidInputError, match=r"the 'image' PSF reader does not take the option\(s\) origin; it "
                                                r"takes hdu, pixel_scale, .*background"):
        parse_psf_spec(f"image:{path},origin=0")


def test_batch_keeps_a_science_psf_specs_options_when_it_makes_the_path_absolute(tmp_path, monkeypatch):
    from psfmatch.batch import _science_psfs

    _biased_psf_image(tmp_path / "sdss.fits")
    monkeypatch.chdir(tmp_path)
    given = _science_psfs("image:sdss.fits,background=1000", 2)  # (read once now, without a warning)
    assert given == [f"image:{tmp_path / 'sdss.fits'},background=1000"] * 2
    assert parse_psf_spec(given[0]).computeShape().sigma == pytest.approx(1.3, rel=1e-3)


# ---------------------------------------------------------------------------
# progress bars


def test_progress_bar_is_optional_and_off_by_default(monkeypatch):
    from psfmatch import progress

    items = [1, 2, 3]
    assert progress.progress_bar(items) is items                 # off unless enabled
    assert progress.progress_bar(items, enabled=False) is items
    monkeypatch.setitem(sys.modules, "tqdm", None)                # tqdm missing: the plain iterable
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert progress.progress_bar(items, enabled=True) is items


def test_main_restores_the_progress_setting(tmp_path, monkeypatch):
    from psfmatch import progress

    monkeypatch.chdir(tmp_path)
    progress.set_enabled(False)
    assert main(["config", "-q"]) == 0
    assert progress.is_enabled() is False


def test_a_library_warning_is_shown_once(exposure_file, tmp_path, capsys):
    """psfmatch logs its warnings and also raises them: the command line shows each one once."""
    rc, stdout, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                            "-c", "qaMaxResidual=1e-12", *SMALL_CELLS], capsys)
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "above qaMaxResidual=1e-12" in line]
    assert len(lines) == 1, err

    # in the filter itself: a warning the library did not log (numpy's, say) still gets its line
    import logging
    import warnings

    from psfmatch.cli import _WarningsToLog

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("psfmatch")
    keep, level = Keep(logging.WARNING), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.WARNING)
    try:
        with _WarningsToLog():
            logging.getLogger("psfmatch.diagnostics").warning("logged first")
            warnings.warn("logged first", UserWarning)
            warnings.warn("only warned", RuntimeWarning)
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert seen == ["logged first", "RuntimeWarning: only warned"]


def test_config_output_keeps_the_settings_of_the_choice_not_selected(tmp_path, capsys):
    """Without --all the printed file dropped kernel['AL'] fields once kernel.name was DF."""
    from psfmatch import ModelPsfMatchConfig
    from psfmatch.config import apply_overrides, load_overrides
    overrides = ["kernel['AL'].alardSigGauss=[1, 2, 4.5]", "kernel.name=DF"]
    assert main(["config"] + [a for o in overrides for a in ("-c", o)]) == 0
    path = tmp_path / "c.py"
    path.write_text(capsys.readouterr().out)
    expected = apply_overrides(ModelPsfMatchConfig(), overrides)
    back = load_overrides(ModelPsfMatchConfig(), path)
    assert back == expected and back.kernel["AL"].alardSigGauss == (1.0, 2.0, 4.5)
    assert "config.kernel['DF'].lambdaValue" in path.read_text()  # the active choice in full
    assert "config.kernel['AL'].alardMinSig" not in path.read_text()  # the other: only what was set


def test_inspect_psf_guards_its_input_and_says_when_it_extrapolates(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import json

    import numpy as np
    from astropy.io import fits

    from psfmatch.psf import PsfexPsf
    y, x = np.mgrid[-7:8, -7:8]
    g = np.exp(-(x * x + y * y) / 8.0)
    basis = np.stack([g / g.sum(), 0.01 * x * g, 0.01 * y * g])
    model = PsfexPsf(basis, degree=1, polzero=(500.0, 500.0), polscal=(1000.0, 1000.0))
    path = tmp_path / "model.pdf"  # a PSF file whose name is also a figure format
    fits.HDUList([fits.PrimaryHDU(), model.to_hdu()]).writeto(path)
    before = path.read_bytes()
    assert main(["inspect-psf", f"psfex:{path}", "--plot", str(path), "--overwrite"]) == 1
    assert "would overwrite the PSF file" in capsys.readouterr().err and path.read_bytes() == before
    # a position outside the model's fitted region: a warning, and a flag in the JSON
    assert main(["inspect-psf", f"psfex:{path}", "--at=20000,-9000", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["at"]["outsideDomain"] is True
    assert "is outside the model's domain" in captured.err
    assert main(["-q", "inspect-psf", f"psfex:{path}"]) == 0 and capsys.readouterr().out == ""


def test_figure_formats_are_checked_before_any_work(tmp_path):
    pytest.importorskip("matplotlib")
    import shutil

    from psfmatch import display
    from psfmatch.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match=r"f.xyz: unknown figure format 'xyz'; use one of .*png"):
        display.figure_format(tmp_path / "f.xyz")
    if shutil.which("xelatex") is None:
        with pytest.raises(InvalidInputError, match=r"the pgf format runs xelatex, which is not installed; use pdf"):
            display.figure_format(tmp_path / "f.pgf")
    assert display.figure_format(tmp_path / "f.PNG") == "png" and display.figure_format(tmp_path / "f") == "png"


def _must_not_run(monkeypatch):
    import psfmatch.cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the task ran although an output would replace an input")

    monkeypatch.setattr(psfmatch.cli, "_run_task", must_not_run)


def test_run_refuses_outputs_that_would_replace_its_psf_or_config_files(exposure_file, tmp_path, capsys,
                                                                         monkeypatch):
    from astropy.io import fits

    _must_not_run(monkeypatch)
    psf = tmp_path / "image_psf.fits"
    fits.PrimaryHDU(GaussianPsf(21, 21, 1.8).computeKernelImage((0, 0))).writeto(psf)
    ref = tmp_path / "ref_psf.fits"
    fits.PrimaryHDU(GaussianPsf(31, 31, 2.6).computeKernelImage((0, 0))).writeto(ref)
    (tmp_path / "ref_link.fits").symlink_to("ref_psf.fits")
    overrides = tmp_path / "overrides.py"
    overrides.write_text("config.kernel.active.sizeCellX = 64\n")
    before = {p: p.read_bytes() for p in (psf, ref, overrides)}
    out = str(tmp_path / "out.fits")
    cases = [
        (["--psf", f"image:{psf}", "--kernel-out", str(psf)],
         r"--kernel-out .*image_psf\.fits would overwrite the input .*image_psf\.fits \(the science PSF, --psf"),
        (["--psf", f" IMAGE:{psf}", "--qa-json", str(psf)], r"--qa-json .*image_psf\.fits would overwrite the input"),
        (["-r", f"file:{ref}", "--qa-json", str(tmp_path / "ref_link.fits")],
         r"--qa-json .*ref_link\.fits would overwrite the input .*ref_psf\.fits \(the reference PSF"),
        (["-r", str(tmp_path / "ref_link.fits"), "--qa-plot", str(ref)], r"--qa-plot .*ref_psf\.fits would overwrite"),
        (["-C", str(overrides), "--kernel-out", str(overrides)],
         r"--kernel-out .*overrides\.py would overwrite the input .*overrides\.py \(config file -C"),
    ]
    for extra, message in cases:
        argv = ["run", exposure_file, "-o", out, "--overwrite", *extra]
        if "-r" not in extra:
            argv += ["-r", f"image:{ref}"]
        rc, _, err = _run(argv, capsys)
        assert rc == 1 and re.search(message, err) and len(err.strip().splitlines()) == 1, (extra, err)
    assert all(p.read_bytes() == data for p, data in before.items())
    assert _files(tmp_path) == ["image_psf.fits", "overrides.py", "ref_link.fits", "ref_psf.fits"]


def test_inspect_psf_guards_its_input_whatever_the_prefix(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from astropy.io import fits

    path = tmp_path / "psf.png"  # a PSF file whose name is also a figure format
    fits.PrimaryHDU(GaussianPsf(21, 21, 1.8).computeKernelImage((0, 0))).writeto(path)
    before = path.read_bytes()
    for spec in (f"file:{path}", f"IMAGE:{path}", f" image:{path}"):
        assert main(["inspect-psf", spec, "--plot", str(path), "--overwrite"]) == 1
        assert "would overwrite the PSF file" in capsys.readouterr().err and path.read_bytes() == before


def test_demo_refuses_to_replace_a_config_file(tmp_path, capsys, monkeypatch):
    _must_not_run(monkeypatch)
    outdir = tmp_path / "out"
    outdir.mkdir()
    overrides = outdir / "demo-kernel.fits"  # a Python override file linked to under a .py name
    overrides.write_text("config.kernel.active.sizeCellX = 64\n")
    (tmp_path / "overrides.py").symlink_to(overrides)
    rc, _, err = _run(["demo", "--outdir", str(outdir), "--size", "64", "-C", str(tmp_path / "overrides.py")],
                      capsys)
    assert rc == 1
    assert re.search(r"kernel .*demo-kernel\.fits would overwrite the input .*overrides\.py \(config file -C", err), err
    assert overrides.read_text() == "config.kernel.active.sizeCellX = 64\n" and _files(outdir) == ["demo-kernel.fits"]


def test_an_unwritable_output_directory_is_refused_before_the_match(exposure_file, tmp_path, capsys, monkeypatch):
    _must_not_run(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root: os.access calls it writable; pretend it is not
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **kw: (False if os.fspath(path) == str(locked)
                                                                        else real_access(path, mode, **kw)))
        for option, what in (("-o", "output"), ("--kernel-out", "--kernel-out"), ("--qa-json", "--qa-json")):
            argv = ["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "m.fits"),
                    option, str(locked / "x.fits")]
            rc, _, err = _run(argv, capsys)
            assert rc == 1
            assert re.search(rf"error: cannot write {what} .*locked/x\.fits: directory .*locked is not writable "
                             r"\(.*\); make it writable \(chmod u\+wx\) or write the output into another directory",
                             err), err
        assert _files(locked) == [] and _files(tmp_path) == ["locked"]
    finally:
        locked.chmod(0o700)


def test_run_reads_the_mask_and_weight_planes_of_a_plain_file(tmp_path, capsys):
    """A DES-style file (SCI, MSK, WGT): --mask and --variance/--variance-kind name its planes; without them the
    unread planes are named in a warning (the mask was dropped silently and the weight map ignored)."""
    from astropy.io import fits

    rng = np.random.default_rng(0)
    img = rng.normal(0, 20, (96, 96)).astype(np.float32)
    msk = np.zeros((96, 96), np.int16)
    msk[:, 40] = 1  # bit 0: BAD
    wgt = np.full((96, 96), 1 / 400.0, np.float32)
    wgt[10:20, 60:70] = 0.0  # weight 0: no data
    path = tmp_path / "des.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(msk, name="MSK"),
                  fits.ImageHDU(wgt, name="WGT")]).writeto(path)
    common = ["run", str(path), "--psf", "gaussian:sigma=1.5", "-r", "gaussian:sigma=2.5", "-c", "autoKernel=False",
              "-c", "kernel.active.kernelSize=11", "-c", "kernel.active.sizeCellX=32",
              "-c", "kernel.active.sizeCellY=32"]
    rc, _, err = _run(common + ["-o", str(tmp_path / "plain.fits")], capsys)
    assert rc == 0
    assert re.search(r"des\.fits\[SCI\]: HDU\(s\) MSK, WGT, of the image's shape, are not read: .* psfmatch run "
                     r"--mask HDU --variance HDU --variance-kind KIND", err)
    assert "psfmatch run --variance) for a real one" in err
    plain = Exposure.readFits(tmp_path / "plain.fits")
    assert not np.any(plain.mask & plain.getMask().getPlaneBitMask("BAD"))
    rc, _, err = _run(common + ["-o", str(tmp_path / "planes.fits"), "--mask", "MSK", "--variance", "WGT",
                              "--variance-kind", "invvar", "--hdu", "1", "--kernel-out", str(tmp_path / "k.fits")],
                      capsys)
    assert rc == 0 and "not read" not in err and "no variance plane" not in err
    out = Exposure.readFits(tmp_path / "planes.fits")
    bad = (out.mask & out.getMask().getPlaneBitMask("BAD")) != 0
    assert bad[48, 35:46].all() and not bad[48, :30].any()  # the column, grown by the kernel (11 px)
    # the variance is the weight map's through the kernel: 400 sum K^2 away from the hole, inf over the hole
    from psfmatch.io import read_kernel

    kernel = read_kernel(tmp_path / "k.fits")
    assert float(out.variance[80, 20]) == pytest.approx(400 * np.sum(kernel.computeImage((20, 80)) ** 2), rel=1e-5)
    assert np.isinf(out.variance[15, 65]) and (out.mask[15, 65] & out.getMask().getPlaneBitMask("NO_DATA"))
    rc, _, err = _run(common + ["-o", str(tmp_path / "x.fits"), "--mask", "DQ"], capsys)
    assert rc == 1 and re.search(r"no HDU 'DQ' for the mask; the file has \['PRIMARY', 'SCI', 'MSK', 'WGT'\]", err)


@pytest.mark.parametrize("kind", ["invvar", "variance"])
def test_variance_kind_without_variance_is_a_usage_error(kind, exposure_file, tmp_path, capsys, monkeypatch):
    """--variance-kind says what the --variance plane holds: without --variance it was silently ignored (exit 0,
    the file's own VARIANCE plane read as a variance); now it is refused before any work."""
    import psfmatch.io

    def must_not_read(*args, **kwargs):
        raise AssertionError("the exposure was read although --variance-kind came without --variance")

    monkeypatch.setattr(psfmatch.io, "read_exposure", must_not_read)
    out = tmp_path / "matched.fits"
    rc, stdout, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(out),
                            "--variance-kind", kind], capsys)
    assert rc == 2 and stdout == ""
    assert (f"psfmatch run: error: --variance-kind {kind} needs --variance: it says what the --variance plane holds "
            "(an exposure file's own VARIANCE plane is a variance, and without one the variance is estimated); "
            "name the plane with --variance HDU|FILE, or leave --variance-kind out") in err
    assert _files(tmp_path) == []


def test_spec_errors_name_the_psf_they_are_about(exposure_file, tmp_path, capsys):
    """A malformed --psf or inspect-psf SPEC was reported as the "reference PSF"."""
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "o.fits"),
                       "--psf", "gaussian:sigma=0"], capsys)
    assert rc == 2 and "argument --psf: science PSF 'gaussian:sigma=0': sigma must be positive" in err
    rc, _, err = _run(["run", exposure_file, "-r", "gaussian:sigma=0", "-o", str(tmp_path / "o.fits")], capsys)
    assert rc == 2 and "reference PSF 'gaussian:sigma=0'" in err
    rc, _, err = _run(["inspect-psf", "moffat:fwhm=5"], capsys)
    assert rc == 2 and "PSF 'moffat:fwhm=5': moffat needs beta" in err and "reference" not in err


def test_demo_size_has_a_maximum_and_debug_dir_must_be_a_directory(tmp_path, capsys, monkeypatch):
    """--size 100000 asked numpy for 75 GiB before an untyped MemoryError; --debug-dir naming a file gave a bare
    errno line."""
    rc, _, err = _run(["demo", "--size", "100000"], capsys)
    assert rc == 2 and "the demo exposure is at most 16384 x 16384 pixels (1 GiB a plane); got '100000'" in err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    rc, _, err = _run(["demo", "--size", "64", "--debug", "--debug-dir", "afile"], capsys)
    assert rc == 1 and "--debug-dir afile: cannot make that directory" in err and "give a directory" in err


def test_a_moffat_of_huge_beta_is_its_gaussian_limit():
    """beta = 1e300 underflowed 2**(1/beta) - 1 to 0: alpha = inf and a flat stamp (inspect-psf said sigma 6 px
    for a FWHM of 2). A Moffat tends to a Gaussian of the same FWHM as beta grows."""
    psf = parse_psf_spec("moffat:fwhm=2,beta=1e300,size=21")
    img = psf.computeKernelImage((0, 0))
    gauss = GaussianPsf(21, 21, 2 / 2.3548200450309493).computeKernelImage((0, 0))
    assert np.abs(img - gauss).max() < 1e-6 * gauss.max()


def test_inspect_psf_far_outside_the_domain_says_so(capsys):
    """--at 1e6,1e6 on a DECam PSFEx model failed with "adaptive moments did not converge (a PSF narrower than about
    0.8 px ...)", about a 1.8 px PSF; the domain is now named, with the remedy."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "psfex" / "GalSim-developers__GalSim" / \
        "DECam_00154912_12_psfcat.psf"
    if not path.is_file():
        pytest.skip(f"shared PSFEx model not found at {path}")
    rc, _, err = _run(["inspect-psf", f"psfex:{path}", "--at", "1e6,1e6"], capsys)
    assert rc == 1 and re.search(r"--at 1e\+06,1e\+06 is outside the model's domain Box2I\(.*\) and the model "
                                 r"cannot be evaluated there .*; give --at inside the domain", err)
    rc, _, err = _run(["inspect-psf", f"psfex:{path}", "--at", "3000,100", "-q"], capsys)
    assert rc == 0  # just outside: evaluated, with the extrapolation warning


def test_verbose_flags_before_and_after_the_command_add_up(tmp_path, capsys, monkeypatch):
    """psfmatch -v demo -v gave info (1), not debug (2): the subcommand's count replaced the main one's."""
    import psfmatch.cli as cli

    seen = []
    original = cli._configure_logging

    def spy(verbose, quiet):
        seen.append(verbose)
        return original(verbose, quiet)

    monkeypatch.setattr(cli, "_configure_logging", spy)
    for argv, level in ((["-v", "config", "-v"], 2), (["-vv", "config"], 2), (["config", "-vv"], 2),
                        (["config", "-v"], 1), (["config"], 0)):
        seen.clear()
        assert main(argv) == 0
        capsys.readouterr()
        assert seen == [level], argv


def test_quiet_silences_matplotlibs_messages_too(tmp_path):
    """-q still printed matplotlib's "The PostScript backend does not support transparency" (logging's last
    resort, outside psfmatch's handler). In a fresh process: pytest's own log handlers would hide it here."""
    pytest.importorskip("matplotlib")
    import subprocess

    code = ("import sys; from psfmatch.cli import main; "
            f"sys.exit(main(['-q', 'inspect-psf', 'gaussian:sigma=2', '--plot', {str(tmp_path / 'p.eps')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "agg"})
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_empty_output_names_are_refused_before_any_work(exposure_file, tmp_path, capsys, monkeypatch):
    """psfmatch run -o '' read and matched the exposure, printed 'IN -> ' and wrote nothing, exit 0."""
    monkeypatch.chdir(tmp_path)
    for option in ("-o", "--kernel-out", "--qa-json", "--qa-plot"):
        outputs = ["-o", ""] if option == "-o" else ["-o", "m.fits", option, ""]
        rc, stdout, err = _run(["run", exposure_file, "-r", "gaussian:sigma=2.6", *outputs, *SMALL_CELLS], capsys)
        assert rc == 1 and stdout == "", (option, stdout)
        assert re.search(r"is an empty file name \(''\); give the file to write", err), (option, err)
        assert os.listdir(tmp_path) == []
    rc, _, err = _run(["demo", "--size", "64", "--outdir", " "], capsys)
    assert rc == 1 and "--outdir is an empty name (' ')" in err and os.listdir(tmp_path) == []


def test_debug_dir_is_checked_before_the_exposure_is_read(tmp_path, capsys):
    rc, _, err = _run(["run", str(tmp_path / "missing.fits"), "-r", "gaussian:sigma=2.6", "-o",
                       str(tmp_path / "m.fits"), "--debug", "--debug-dir", "/proc/self/fdinfo"], capsys)
    assert rc == 1 and "--debug-dir /proc/self/fdinfo: directory is not writable" in err  # not 'missing.fits'
