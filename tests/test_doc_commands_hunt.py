"""The shell commands that README.md and the user guide show, run as a new user would type them.

Every ``psfmatch ...`` command of README.md's bash blocks and of the guide's ``$ psfmatch`` console lines is
collected from the pages themselves (so a command changed on a page is run as changed), except those that
start a Dask cluster (``psfmatch batch``, tested in test_batch.py), the debug displays (test_debug.py) and
quickstart.rst's (test_docs.py). Each runs through ``psfmatch.cli.main`` in a fresh folder holding the files
the pages assume the user has (an exposure, a PSFEx model, a plain image, a DES-style file, an override file),
and is checked against what the page says it does: the exit status, the files written, the key lines printed,
and the physics of the result (the matched PSF is the reference; an inverse-variance plane is inverted).
"""

import json
import os
import re
import shlex

import numpy as np
import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
GUIDE = os.path.join(ROOT, "docs", "guide")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

DES_PSFEX = ("psfex", "GalSim-developers__GalSim", "DECam_00154912_12_psfcat.psf")
OTHER_PSFEX = ("psfex", "esheldon__psfex", "test_psfcat.psf")


# --- collecting the commands from the pages ---------------------------------------------------------------------


def _readme_commands():
    """``(where, command)`` for each psfmatch command in README.md's bash blocks (continuations joined)."""
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    found, in_block, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        pending += line.rstrip("\\").strip() + " "
        if line.rstrip().endswith("\\"):
            continue
        for part in pending.split("&&"):
            part = part.strip()
            if part.startswith("psfmatch "):
                found.append((f"README.md:{start}", part))
        pending = ""
    return found


def _guide_commands(page):
    """``(where, command)`` for each ``$ psfmatch`` line of a guide page's console/bash blocks."""
    lines = open(os.path.join(GUIDE, page)).read().splitlines()
    found, pending, start = [], "", 0
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not pending and not (text.startswith("$ psfmatch ") or text == "psfmatch demo"):
            continue
        if not pending:
            start = number
            text = text[2:] if text.startswith("$ ") else text
        pending += text.rstrip("\\").strip() + " "
        if text.endswith("\\"):
            continue
        found.append((f"docs/guide/{page}:{start}", pending.strip()))
        pending = ""
    return found


def _documented_commands():
    commands = _readme_commands()
    for page in sorted(os.listdir(GUIDE)):
        if page.endswith(".rst") and page != "quickstart.rst":
            commands += _guide_commands(page)
    # batch starts a Dask cluster (test_batch.py) and --debug the displays (test_debug.py): not here
    return [(where, c) for where, c in commands if not c.startswith("psfmatch batch") and "--debug" not in c]


COMMANDS = _documented_commands()


def test_the_pages_show_the_commands_this_file_runs():
    """The collection itself: if a page's command block changes form, this file must not silently run nothing."""
    text = [c for _, c in COMMANDS]
    assert any(c.startswith(("psfmatch run exposure.fits", "psfmatch run calexp.fits")) and "-C overrides.py" in c
               for c in text), text
    assert any("--variance-kind invvar" in c for c in text)
    assert sum(c.startswith("psfmatch inspect-psf") for c in text) >= 4
    assert sum(c.startswith("psfmatch config") for c in text) >= 3
    assert sum(c.split("#")[0].strip() in ("psfmatch demo", "psfmatch demo --outdir demo/") for c in text) >= 3


# --- the files the pages assume the user has --------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A folder with the files the documented commands read; each test links them into its own folder."""
    from astropy.io import fits

    from psfmatch.cli import main
    from psfmatch.demo import make_demo_exposure
    from psfmatch.io import write_exposure

    folder = tmp_path_factory.mktemp("user")
    exposure = make_demo_exposure(512)
    write_exposure(exposure, str(folder / "exposure.fits"))
    write_exposure(exposure, str(folder / "calexp.fits"))
    # a plain image (no PSF, no mask, no variance) and a DES-style file: SCI, MSK and an inverse-variance WGT
    image = exposure.image.astype(np.float32)
    fits.PrimaryHDU(image).writeto(folder / "image.fits")
    bad = (exposure.mask != 0).astype(np.int16)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI"), fits.ImageHDU(bad, name="MSK"),
                  fits.ImageHDU((1.0 / exposure.variance).astype(np.float32), name="WGT")]).writeto(folder / "des.fits")
    # overrides.py as cli.rst makes it: psfmatch config -c kernel.active.kernelSize=25 > overrides.py
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["config", "-c", "kernel.active.kernelSize=25"]) == 0
    (folder / "overrides.py").write_text(out.getvalue())
    return folder


@pytest.fixture
def workspace(user_files, shared_data, tmp_path, monkeypatch):
    """A fresh folder with the user's files (linked) and the PSFEx models the pages name."""
    for name in os.listdir(user_files):
        (tmp_path / name).symlink_to(user_files / name)
    (tmp_path / "image.psf").symlink_to(shared_data(*OTHER_PSFEX))
    (tmp_path / "des.psf").symlink_to(shared_data(*DES_PSFEX))
    (tmp_path / "model.psf").symlink_to(shared_data(*DES_PSFEX))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "agg")
    return tmp_path


def _run_as_typed(command, capsys):
    """Run a documented command line (``psfmatch ...``, optionally ``> FILE``); return rc, stdout, stderr."""
    from psfmatch.cli import main

    argv = shlex.split(command, comments=True)
    assert argv[0] == "psfmatch"
    redirect = None
    if ">" in argv:
        at = argv.index(">")
        argv, redirect = argv[:at], argv[at + 1]
    capsys.readouterr()
    rc = main(argv[1:])
    out, err = capsys.readouterr()
    if redirect is not None:
        with open(redirect, "w") as fh:
            fh.write(out)
    return rc, out, err


def _fwhm(psf, at=None):
    from psfmatch import display

    return display.psf_summary(psf, at)["fwhm"]


# --- every documented command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}" for w, _ in COMMANDS])
def test_documented_command_does_what_its_page_says(where, command, workspace, capsys):
    pytest.importorskip("matplotlib")
    from psfmatch.io import read_exposure, read_kernel
    from psfmatch.psf import GaussianPsf

    rc, out, err = _run_as_typed(command, capsys)
    assert rc == 0, f"{where}: {command}\n{err}"
    argv = shlex.split(command, comments=True)

    if argv[1] == "run":
        exposure, output = argv[2], argv[argv.index("-o") + 1]
        assert out.startswith(f"psfmatch run: {exposure} -> {output}\n")
        assert "QA candidates (n=" in out and "QA between    (n=" in out
        matched = read_exposure(output)
        spec = argv[argv.index("--reference-psf" if "--reference-psf" in argv else "-r") + 1]
        # the matched exposure's PSF is the reference (its FWHM as the spec gives it)
        wanted = float(re.search(r"fwhm=([\d.]+)", spec).group(1)) if "fwhm=" in spec else \
            FWHM_PER_SIGMA * float(re.search(r"sigma=([\d.]+)", spec).group(1))
        if spec.startswith("gaussian"):
            assert _fwhm(matched.getPsf()) == pytest.approx(wanted, rel=0.01)
        else:  # a Moffat: its half-maximum width, not a moment width
            stamp = matched.getPsf().computeKernelImage((256, 256))
            row = stamp[stamp.shape[0] // 2]
            assert np.count_nonzero(row >= row.max() / 2) == pytest.approx(wanted, abs=1.0)
        planes = {k: argv[argv.index(o) + 1] for k, o in (("mask", "--mask"), ("variance", "--variance"),
                                                          ("variance_kind", "--variance-kind")) if o in argv}
        original = read_exposure(exposure, psf=GaussianPsf(21, 21, 2.0) if "--psf" in argv else None, **planes)
        inner = (slice(40, -40), slice(40, -40))
        # flux is conserved (kernelSum 1) away from the NaN border
        assert np.nansum(matched.image[inner]) == pytest.approx(np.nansum(original.image[inner]), rel=2e-3)
        for option in ("--kernel-out", "--qa-plot", "--qa-json"):
            if option in argv:
                path = argv[argv.index(option) + 1]
                assert f"wrote {path}\n" in out and os.path.getsize(path) > 0
        if "--kernel-out" in argv:
            kernel = read_kernel(argv[argv.index("--kernel-out") + 1])
            size = 25 if "kernelSize=25" in command else None
            if size:
                assert kernel.computeImage((256, 256)).shape == (size, size)
            assert kernel.getSum((256, 256)) == pytest.approx(1.0, abs=1e-6)
        if "--qa-json" in argv:
            report = json.load(open(argv[argv.index("--qa-json") + 1]))
            assert report["qa"]["flags"] == [] and report["grid"]["summary"]["n"] >= 16
            assert "QA field grid (n=" in out
        if "--variance-kind" in argv:
            # WGT is an inverse variance: the input variance is 1/WGT, and the matched one sum K^2 V < V
            truth = read_exposure("calexp.fits")
            assert np.allclose(original.variance, truth.variance, rtol=1e-5)
            finite = np.isfinite(matched.variance) & (matched.mask == 0)
            ratio = np.median(matched.variance[finite]) / np.median(truth.variance)
            assert 0.005 < ratio < 0.2, ratio
            assert "BAD" in matched.getMask().getMaskPlaneDict()
        if "--psf" in argv and "--variance" not in argv:
            assert "no variance plane given" in err  # the plain image's variance is estimated, with a warning

    elif argv[1] == "demo":
        assert out.startswith("psfmatch demo: matched a 512x512 exposure")
        assert "kernel: alard-lupton 15x15, spatial chebyshev1 order 2" in out
        if "--outdir" in argv:
            outdir = argv[argv.index("--outdir") + 1]
            names = ["demo-exposure.fits", "demo-matched.fits", "demo-kernel.fits", "demo-qa.json", "demo-qa.png"]
            for name in names:
                assert f"wrote {os.path.join(outdir, name)}\n" in out
            # "psfmatch demo --outdir replaces its own products": the same command again succeeds
            rc, _, err = _run_as_typed(command, capsys)
            assert rc == 0, err
            assert sorted(os.listdir(outdir)) == sorted(names)
        else:
            assert "psfmatch demo --outdir DIR also writes" in out

    elif argv[1] == "config":
        from psfmatch.config import ModelPsfMatchConfig, load_overrides

        text = out if ">" not in argv else open(argv[-1]).read()
        assignments = [line for line in text.splitlines() if line.startswith("config.")]
        expected = [f"config.{o.split('=')[0]} = {o.split('=')[1]}" for o in argv[argv.index("-c") + 1:][:1]] \
            if "-c" in argv else []
        if "kernel.name=DF" in command:
            assert assignments == ["config.kernel.name = 'DF'"]
            assert "config.kernel['DF'].kernelSize" in text and "config.kernel['AL']" not in text
        elif "kernelSize=25" in command:
            assert assignments == ["config.kernel['AL'].kernelSize = 25"], expected
        else:
            assert assignments == []
        if "--all" in argv:
            assert "config.kernel['DF'].kernelSize" in text and "config.kernel['AL'].kernelSize" in text
        # "which -C loads back": the printed file gives the same configuration
        (workspace / "printed.py").write_text(text)
        again = load_overrides(ModelPsfMatchConfig(), str(workspace / "printed.py"))
        assert again.kernel.name == ("DF" if "kernel.name=DF" in command else "AL")
        assert again.kernel.active.kernelSize == (25 if "kernelSize=25" in command else 21)

    elif argv[1] == "inspect-psf":
        at = argv[argv.index("--at") + 1] if "--at" in argv else None
        if "--json" in argv:
            info = json.loads(out)
            assert (info["at"]["x"], info["at"]["y"]) == (1024.0, 2048.0)
            assert info["at"]["width"] == 25 and info["variation"]["n"] == 25
            assert info["psf"].startswith("PsfexPsf(")
        else:
            assert out.startswith("PSF model: ")
            where_at = f"at ({at.replace(',', '.0, ')}.0)" if at else "at (255.5, 255.5)"
            assert where_at in out
            assert re.search(r"over \d+x\d+ px \(25 positions\): Gaussian-equivalent FWHM", out)
        if "--plot" in argv:
            path = argv[argv.index("--plot") + 1]
            assert f"wrote {path}\n" in out
            assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    else:  # pragma: no cover - a new subcommand on a page: add its checks here
        pytest.fail(f"{where}: no checks for {command}")


# --- output shown on the pages -----------------------------------------------------------------------------------


def _shown_output(page, command):
    """The lines a console block shows after ``$ command`` (up to the next blank line or ``$``)."""
    lines = open(os.path.join(GUIDE, page)).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"$ {command}")
    shown = []
    for line in lines[start + 1:]:
        if not line.strip() or line.strip().startswith("$ "):
            break
        shown.append(line.strip())
    return shown


def test_reference_page_shows_what_inspect_psf_prints(user_files, tmp_path, monkeypatch, capsys):
    """reference.rst shows ``psfmatch inspect-psf exposure.fits``'s output: each shown line (with '...' for
    what it elides) is a line the command prints, in that order."""
    import doctest

    (tmp_path / "exposure.fits").symlink_to(user_files / "exposure.fits")
    monkeypatch.chdir(tmp_path)
    shown = _shown_output("reference.rst", "psfmatch inspect-psf exposure.fits")
    assert len(shown) == 4
    rc, out, _ = _run_as_typed("psfmatch inspect-psf exposure.fits", capsys)
    assert rc == 0
    printed = out.splitlines()
    assert len(printed) == len(shown)
    checker = doctest.OutputChecker()
    for want, got in zip(shown, printed):
        assert checker.check_output(want + "\n", got + "\n", doctest.ELLIPSIS), (want, got)


def test_readme_run_block_runs_in_order_in_one_folder(workspace, capsys):
    """README's three ``psfmatch run`` examples all wrote ``matched.fits``: typed in order in one folder, the
    second was refused (an existing output).  They write three files now, and each runs; running the first
    again is refused, as the README's contract on existing files says."""
    runs = [c for w, c in COMMANDS if w.startswith("README.md") and c.startswith("psfmatch run ")]
    outputs = [c.split(" -o ")[1].split()[0] for c in runs]
    assert len(runs) == 3 and len(set(outputs)) == 3
    for command in runs:
        assert _run_as_typed(command, capsys)[0] == 0, command
    before = open("matched.fits", "rb").read()
    rc, out, err = _run_as_typed(runs[0], capsys)
    assert rc == 1 and out == ""
    assert "output matched.fits exists already; pass --overwrite to replace it" in err
    assert open("matched.fits", "rb").read() == before


# --- a defect this review found (fixed) ------------------------------------------------------------------------


def _lsst_style_calexp(path, exposure):
    """An LSST-style calexp: IMAGE, MASK (MP_* cards), VARIANCE, and afw archive tables holding its PSF."""
    import warnings

    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["AR_HDU"] = 5
    mask_header = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HIERARCH cards for the long plane names
        for name, bit in exposure.getMask().getMaskPlaneDict().items():
            mask_header["MP_" + name] = bit
    hdus = [primary, fits.ImageHDU(exposure.image.astype(np.float32), name="IMAGE"),
            fits.ImageHDU(exposure.mask.astype(np.int32), header=mask_header, name="MASK"),
            fits.ImageHDU(exposure.variance.astype(np.float32), name="VARIANCE")]
    for hdu, kind in zip(hdus[1:], ("IMAGE", "MASK", "VARIANCE")):
        hdu.header["EXTTYPE"] = kind
    index = fits.BinTableHDU.from_columns([fits.Column(name="id", format="J", array=np.arange(3))])
    index.header["EXTTYPE"] = "ARCHIVE_INDEX"
    data = fits.BinTableHDU.from_columns([fits.Column(name="x", format="D", array=np.arange(3.0))])
    data.header["EXTTYPE"] = "ARCHIVE_DATA"
    data.header["AR_NAME"] = "PsfexPsf"
    hdus += [index, data]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList(hdus).writeto(path)


def test_lsst_calexp_without_psf_says_its_lsst_psf_is_not_read(tmp_path, monkeypatch, capsys):
    from psfmatch.cli import main
    from psfmatch.demo import make_demo_exposure

    monkeypatch.chdir(tmp_path)
    _lsst_style_calexp("calexp.fits", make_demo_exposure(128))
    rc = main(["run", "calexp.fits", "--reference-psf", "gaussian:fwhm=6.1", "-o", "matched.fits"])
    err = capsys.readouterr().err
    assert rc == 1 and not os.path.exists("matched.fits")
    # the file carries a PSF in afw's archive tables: the error says why it is not read, and the remedy
    assert "calexp.fits carries no PSF model psfmatch reads (an LSST-style file: its own PSF, in afw's archive " \
           "tables, is not read; give the PSFEx or Piff model it was made from, or an image of it); give the " \
           "exposure's PSF with --psf FILE|SPEC" in err, err
