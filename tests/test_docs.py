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
