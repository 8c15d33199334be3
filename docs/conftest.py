"""pytest set-up for the documentation's examples (``--doctest-glob='*.rst'``).

The ``>>>`` examples of the guide run as doctests, each page in a fresh
temporary working directory, so that the files they write (``exposure.fits``,
``matched.fits``...) never land in the checkout, with the debug switches
restored afterwards.  The Sphinx configuration and extensions are not test
modules, the build outputs are not sources, and ``guide/examples/debug.py``
(shown on the debugging page) must not be imported: it replaces
``psfmatch.debug.Info`` when imported.
"""

import pytest

collect_ignore = ["conf.py", "_ext", "guide/examples"]
collect_ignore_glob = ["_build*", "generated/*", "_generated/*"]


@pytest.fixture(autouse=True)
def _docs_workdir(tmp_path, monkeypatch):
    """Run each page's examples in its own temporary directory, with matplotlib drawing to files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "agg")
    import psfmatch.debug

    with psfmatch.debug.scoped():
        yield tmp_path


#: Pages whose examples need an optional package; they are skipped without it (the other pages run).
NEEDS = {"quickstart.rst": "matplotlib", "debugging.rst": "matplotlib", "batch.rst": "distributed"}


def pytest_collection_modifyitems(config, items):
    import importlib.util

    for item in items:
        needed = NEEDS.get(item.path.name) if "docs" in item.path.parts else None
        if needed and importlib.util.find_spec(needed) is None:
            item.add_marker(pytest.mark.skip(reason=f"the examples of {item.path.name} need {needed}"))
