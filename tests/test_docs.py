"""The documentation: generated configuration tables cover every field, and the site builds with -W."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from psfmatch.config import Config, ConfigChoiceField, ModelPsfMatchConfig

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DOCS = os.path.join(ROOT, "docs")
TASK_PAGE = os.path.join(DOCS, "tasks", "ModelPsfMatchTask.rst")


def _configdoc():
    spec = importlib.util.spec_from_file_location("psfmatch_configdoc", os.path.join(DOCS, "_ext", "psfmatch_configdoc.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reachable_configs(cls, seen=None):
    seen = seen if seen is not None else {}
    seen[f"{cls.__module__}.{cls.__name__}"] = cls
    for field in cls._fields().values():
        if isinstance(field, ConfigChoiceField):
            for sub in field.typemap.values():
                _reachable_configs(sub, seen)
    return seen


def test_task_page_documents_every_config_class_and_field():
    text = open(TASK_PAGE).read()
    documented = set(re.findall(r"\.\. psfmatch-config-fields:: (\S+)", text))
    reachable = _reachable_configs(ModelPsfMatchConfig)
    missing = set(reachable) - documented
    assert not missing, f"config classes without a generated table on the task page: {missing}"
    mod = _configdoc()
    for path in documented:
        cls = reachable[path]
        names = {row[0] for row in mod.field_rows(cls)}
        assert names == set(cls._fields()), f"{path}: table rows differ from fields"
        for name, typ, default, allowed, doc in mod.field_rows(cls):
            assert doc.strip(), f"{path}.{name} has no doc"
    for name in ("kernelSize", "doAutoPadPsf", "autoPadPsfTo", "padPsfBy", "alardSigGauss", "lambdaType"):
        assert any(name in {r[0] for r in mod.field_rows(c)} for c in reachable.values())


def test_every_config_class_is_reachable():
    import psfmatch.config as cfg
    classes = {n: c for n, c in vars(cfg).items() if isinstance(c, type) and issubclass(c, Config)
               and c not in (Config, cfg.PsfMatchConfig)}
    reachable = {c.__name__ for c in _reachable_configs(ModelPsfMatchConfig).values()}
    assert set(classes) <= reachable


@pytest.mark.slow
def test_sphinx_build_warnings_as_errors(tmp_path):
    if shutil.which("sphinx-build") is None and importlib.util.find_spec("sphinx") is None:
        pytest.skip("sphinx is not installed (pip install -e '.[docs]')")
    for mod in ("numpydoc", "furo"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (out / "tasks" / "ModelPsfMatchTask.html").read_text()
    for cls in _reachable_configs(ModelPsfMatchConfig).values():
        for name in cls._fields():
            assert name in html, f"field {cls.__name__}.{name} missing from the generated task page"
    # the figures rendered from the demo at build time, and the help generated from the parser
    for image in ("demo-qa.png", "demo-psf.png", "debug-spatial-cells.png", "debug-candidates.png",
                  "debug-kernel-basis.png", "debug-kernel-mosaic.png", "debug-kernel-spatial-model.png"):
        assert (out / "_images" / image).stat().st_size > 10000, image
    cli = (out / "guide" / "cli.html").read_text()
    for option in ("--reference-psf", "--qa-plot", "--debug-dir", "--outdir", "--coadd", "--plot", "--all"):
        assert option in cli, option
    qa = (out / "guide" / "qa.html").read_text()
    assert "residualMaxWorst" in qa and "spatial solve: rank" in qa


# ---------------------------------------------------------------------------
# the guide: command line, debug switches, examples

GUIDE = os.path.join(DOCS, "guide")


def _read(*parts):
    with open(os.path.join(DOCS, *parts)) as fh:
        return fh.read()


def _docgen():
    spec = importlib.util.spec_from_file_location("psfmatch_docgen", os.path.join(DOCS, "_ext", "psfmatch_docgen.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_page_shows_the_help_of_every_subcommand():
    parsers = _docgen().cli_parsers()
    shown = set(re.findall(r"^\.\. psfmatch-cli-help::[ \t]*(\S*)[ \t]*$", _read("guide", "cli.rst"), flags=re.MULTILINE))
    assert shown == set(parsers), f"psfmatch-cli-help directives {sorted(shown)} vs subcommands {sorted(parsers)}"
    for name in parsers:
        text = _docgen().cli_help(name)
        assert text.startswith("usage: psfmatch"), text[:80]
        assert max(len(line) for line in text.splitlines()) <= 100


def _debug_switches():
    """``{module: {switch}}`` that the library reads, found in the source of the display hook.

    Switch names start with a lower-case letter (``info.displayCandidates``).
    """
    import inspect

    from psfmatch import display, task

    src = inspect.getsource(display.debug_displays) + inspect.getsource(task.ModelPsfMatchTask._debugDisplays)
    found = {"psfmatch.task": set(), "psfmatch.solve": set()}
    for var, name in re.findall(r"\b(task|taskInfo|solve|solveInfo)\.([a-z]\w*)\b", src):
        found["psfmatch.task" if var.startswith("task") else "psfmatch.solve"].add(name)
    for name in re.findall(r'\(\s*"(\w+)",\s*"[\w-]+"\s*\)', src):  # ("displayCandidates", "candidates")
        found["psfmatch.solve"].add(name)
    return found


def test_every_debug_switch_is_documented():
    switches = _debug_switches()
    assert {"display", "displaySpatialCells", "maskTransparency"} <= switches["psfmatch.task"]
    assert {"display", "displayCandidates", "displayKernelBasis", "displayKernelMosaic", "plotKernelSpatialModel",
            "showBadCandidates"} <= switches["psfmatch.solve"]
    import psfmatch.debug

    pages = {"guide/debugging.rst": _read("guide", "debugging.rst"),
             "tasks/ModelPsfMatchTask.rst": _read("tasks", "ModelPsfMatchTask.rst"),
             "psfmatch.debug docstring": psfmatch.debug.__doc__}
    for module, names in switches.items():
        for name in names:
            for page, text in pages.items():
                assert f"``{name}``" in text or f"\n{name} :" in text, f"{module} switch {name} missing from {page}"


def test_example_debug_file_sets_only_switches_the_library_reads():
    from psfmatch import debug

    switches = _debug_switches()
    path = os.path.join(GUIDE, "examples", "debug.py")
    with debug.scoped():
        spec = importlib.util.spec_from_file_location("debug_example", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # replaces psfmatch.debug.Info until the scope ends
        assert debug.Info is mod.DebugInfo
        for module, names in switches.items():
            set_here = set(debug.Info(module).to_dict())
            assert set_here == names, f"{module}: the example sets {sorted(set_here)}, the library reads {sorted(names)}"
    assert debug.Info is debug.getInfo


def _console_commands(page):
    """The ``$ psfmatch ...`` lines of the console blocks of a guide page."""
    return [line.strip()[2:] for line in _read("guide", page).splitlines() if line.strip().startswith("$ psfmatch ")]


@pytest.mark.slow
def test_quickstart_commands_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import shlex

    from psfmatch.cli import main
    from psfmatch.demo import make_demo_exposure
    from psfmatch.io import write_exposure

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "agg")
    write_exposure(make_demo_exposure(512), "exposure.fits")  # as the page's Python example does
    commands = _console_commands("quickstart.rst")
    assert any(c.startswith("psfmatch run ") for c in commands) and any(c.startswith("psfmatch demo") for c in commands)
    for command in commands:
        assert main(shlex.split(command)[1:] + ["--quiet"]) == 0, command
    for path in ("matched-cli.fits", "qa-cli.png", "qa-cli.json", "demo/demo-exposure.fits", "demo/demo-matched.fits",
                 "demo/demo-qa.png"):
        assert (tmp_path / path).exists(), path


def test_guide_pages_are_in_the_toctree():
    index = _read("guide", "index.rst")
    pages = sorted(os.path.splitext(f)[0] for f in os.listdir(GUIDE) if f.endswith(".rst") and f != "index.rst")
    listed = re.findall(r"^   (\w+)$", index, flags=re.MULTILINE)
    assert sorted(listed) == pages


def _api_documented():
    """Full names documented on the API pages: explicit directives, and ``automodule :members:`` modules."""
    import glob
    import importlib

    documented = set()
    for path in glob.glob(os.path.join(DOCS, "api", "*.rst")):
        with open(path) as fh:
            text = fh.read()
        documented |= set(re.findall(r"^\.\. (?:auto(?:class|function|exception|data|attribute)|py:data):: (\S+)",
                                     text, flags=re.MULTILINE))
        for module, options in re.findall(r"^\.\. automodule:: (\S+)\n((?:   :.*\n)*)", text, flags=re.MULTILINE):
            if re.search(r"^   :members:\s*$", options, flags=re.MULTILINE):
                documented |= {f"{module}.{name}" for name in importlib.import_module(module).__all__}
    return documented


@pytest.mark.parametrize("namespace", ["psfmatch", "psfmatch.psf", "psfmatch.io", "psfmatch.errors"])
def test_api_reference_documents_every_public_name(namespace):
    import importlib

    documented = _api_documented()
    missing = [name for name in importlib.import_module(namespace).__all__
               if not name.startswith("__") and not any(d.endswith("." + name) for d in documented)]
    assert not missing, f"{namespace}.__all__ names without an entry on the API pages (docs/api/): {missing}"
