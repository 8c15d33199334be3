"""Sphinx configuration for the psfmatch documentation (build: sphinx-build -W -b html docs docs/_build/html)."""

import os
import sys

sys.path.insert(0, os.path.abspath("_ext"))

import psfmatch  # noqa: E402

project = "psfmatch"
author = "psfmatch developers"
copyright = "2026, psfmatch developers"
release = psfmatch.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "psfmatch_configdoc",
    "psfmatch_docgen",
]

autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
html_theme = "furo"
html_title = "psfmatch"
exclude_patterns = ["_build", "_generated", "generated"]
nitpicky = False
suppress_warnings = []
