"""Sphinx extension: figures, numbers and command-line help generated from psfmatch at build time.

Two things the guide shows must come from the code itself, or they drift:

Figures and numbers of a real match (``builder-inited``)
    The demo exposure (:func:`psfmatch.demo.make_demo_exposure`, 512 x 512
    pixels) is matched to the demo reference PSF by
    :class:`psfmatch.ModelPsfMatchTask` with every debug switch on, and the
    products are written to ``docs/_generated/`` (ignored by git):

    - ``demo-qa.png``: :func:`psfmatch.display.plot_qa` of the match;
    - ``debug-<display>.png``: the five debug displays
      (:func:`psfmatch.display.debug_displays`);
    - ``demo-psf.png``: :func:`psfmatch.display.plot_psf` of the demo's PSF;
    - ``demo-report.txt``: :func:`psfmatch.qa.format_report` of the metadata;
    - ``demo-qa.json``: ``metadata["qa"]`` as strict JSON;
    - ``demo-autokernel.txt``: the automatic kernel choice, one trial a line.

    The pages include them with ``.. figure::`` and ``.. literalinclude::``.
    The debug displays and the rest are rendered by two Python processes at
    once (about 10 to 15 s on two cores).  Rendering is skipped when the files
    exist and were made from the same psfmatch sources (a SHA-256 of every
    ``.py`` file of the package and of this extension, kept in
    ``_generated/SOURCES``); set ``PSFMATCH_DOCS_RERENDER=1`` to force it.  A
    failure stops the build with the error (``ExtensionError``): the pages are
    never built around stale or missing pictures.

``.. psfmatch-cli-help:: [SUBCOMMAND]``
    The ``--help`` text of ``psfmatch`` or of one subcommand, formatted by the
    argparse parser of :mod:`psfmatch.cli` (100 columns), as a literal block.

Cross-references by another path
    A ``missing-reference`` handler resolves references that docstrings write
    relative to their module (``:func:`match_many```) or through the defining
    module (``psfmatch.task.ModelPsfMatchTask``) to the object documented under
    its public path (``psfmatch.ModelPsfMatchTask``), when the name is unique.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import subprocess
import sys
import time
import warnings

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

GENERATED = "_generated"
DEMO_SIZE = 512
DEBUG_DISPLAYS = ("spatial-cells", "candidates", "kernel-basis", "kernel-mosaic", "kernel-spatial-model")
PRODUCTS = ("demo-qa.png", "demo-psf.png", "demo-report.txt", "demo-qa.json", "demo-autokernel.txt") + tuple(
    f"debug-{name}.png" for name in DEBUG_DISPLAYS)


# ---------------------------------------------------------------------------
# figures and numbers


def _sources_digest() -> str:
    """SHA-256 of psfmatch's Python sources and of this file (what the products depend on)."""
    import psfmatch

    pkg = os.path.dirname(os.path.abspath(psfmatch.__file__))
    files = sorted(glob.glob(os.path.join(pkg, "**", "*.py"), recursive=True)) + [os.path.abspath(__file__)]
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.relpath(path, pkg).encode())
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _autokernel_lines(md) -> str:
    auto = md.get("autoKernel")
    if not auto:
        return "(autoKernel was not used)\n"
    lines = [f"chosen: {auto['chosen']['description']}", f"rule: {auto['rule']}", "trials:"]
    for t in auto.get("trials", []):
        score = t.get("score")
        score = "n/a" if score is None else f"{score:.2e}"
        lines.append(f"  {t['description']:<70s} held-out residual {score}"
                     + ("" if t.get("admissible", True) else f"  (inadmissible: {t.get('note') or 'too noisy'})"))
    return "\n".join(lines) + "\n"


def _match_demo(debug_dir=None):
    """The demo exposure and its match; with ``debug_dir``, every debug display is written there."""
    from psfmatch import ModelPsfMatchTask, debug
    from psfmatch.demo import demo_reference_psf, make_demo_exposure

    exposure = make_demo_exposure(DEMO_SIZE, seed=0)
    with debug.scoped(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quality warnings belong to the page text, not to the build log
        if debug_dir is not None:
            debug.set_output_dir(debug_dir)
            task_info = debug.Info("psfmatch.task")
            task_info.display = True
            task_info.displaySpatialCells = True
            task_info.maskTransparency = 60
            solve_info = debug.Info("psfmatch.solve")
            solve_info.display = True
            for switch in ("displayCandidates", "displayKernelBasis", "displayKernelMosaic",
                           "plotKernelSpatialModel", "showBadCandidates"):
                setattr(solve_info, switch, True)
        result = ModelPsfMatchTask().run(exposure, demo_reference_psf())
    return exposure, result


def render_debug(outdir) -> list:
    """The five debug displays of the demo match, as ``outdir/debug-<display>.png``."""
    scratch = os.path.join(outdir, "debug-scratch")
    os.makedirs(scratch, exist_ok=True)
    for old in glob.glob(os.path.join(scratch, "*.png")):
        os.unlink(old)
    _match_demo(debug_dir=scratch)
    written = []
    for name in DEBUG_DISPLAYS:
        found = glob.glob(os.path.join(scratch, f"psfmatch-debug-*-{name}.png"))
        if len(found) != 1:
            raise RuntimeError(f"the debug display {name!r} was not written (found {found})")
        target = os.path.join(outdir, f"debug-{name}.png")
        os.replace(found[0], target)
        written.append(target)
    os.rmdir(scratch)
    return written


def render_qa(outdir) -> list:
    """The QA figure, the PSF figure and the numbers of the demo match, in ``outdir``."""
    from psfmatch import display
    from psfmatch.qa import format_report

    exposure, result = _match_demo()
    written = []
    kern, cells, _, sci, ref, psf_size, bbox = display._products(result, exposure)
    grid = display.field_qa(kern, sci, ref, psf_size, bbox, cells=cells)
    fig = display.plot_qa(result, exposure, grid=grid)
    written.append(display.save_figure(fig, os.path.join(outdir, "demo-qa.png"), dpi=90, overwrite=True))
    fig = display.plot_psf(exposure.getPsf(), bbox=exposure.getBBox(), title="the demo exposure's PSF model")
    written.append(display.save_figure(fig, os.path.join(outdir, "demo-psf.png"), dpi=90, overwrite=True))
    text = {
        "demo-report.txt": format_report(result.metadata) + "\n",
        "demo-qa.json": json.dumps(display.json_safe(result.metadata["qa"]), indent=1) + "\n",
        "demo-autokernel.txt": _autokernel_lines(result.metadata),
    }
    for name, content in text.items():
        path = os.path.join(outdir, name)
        with open(path, "w") as fh:
            fh.write(content)
        written.append(path)
    return written


_PARTS = {"debug": render_debug, "qa": render_qa}


def render_products(outdir):
    """Render every product into ``outdir``: the parts run as two Python processes at once.

    Raises
    ------
    RuntimeError
        With the failing part's error output, when a part fails.
    """
    os.makedirs(outdir, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="agg")
    procs = {part: subprocess.Popen([sys.executable, os.path.abspath(__file__), part, outdir], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for part in _PARTS}
    failed = []
    for part, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"[{part}] exit status {proc.returncode}:\n{out.strip()}")
    if failed:
        raise RuntimeError("\n".join(failed))
    missing = [p for p in PRODUCTS if not os.path.exists(os.path.join(outdir, p))]
    if missing:
        raise RuntimeError(f"not written: {missing}")


def _read_stamp(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None


def _on_builder_inited(app):
    """Render the products into ``docs/_generated`` unless they are up to date with the sources."""
    outdir = os.path.join(app.srcdir, GENERATED)
    stamp = os.path.join(outdir, "SOURCES")
    try:
        digest = _sources_digest()
    except Exception as exc:  # any failure must stop the build
        raise ExtensionError(f"psfmatch_docgen: cannot hash psfmatch's sources: {exc}") from exc
    force = os.environ.get("PSFMATCH_DOCS_RERENDER", "") not in ("", "0")
    fresh = (not force and _read_stamp(stamp) == digest
             and all(os.path.exists(os.path.join(outdir, p)) for p in PRODUCTS))
    if fresh:
        logger.info("psfmatch_docgen: the demo figures are up to date with the sources")
        return
    t0 = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp)
    try:
        render_products(outdir)
    except Exception as exc:  # any failure must stop the build
        raise ExtensionError(
            f"psfmatch_docgen: could not render the demo figures into {outdir} (the docs need matplotlib: "
            f"pip install -e '.[docs]'):\n{exc}") from exc
    with open(stamp, "w") as fh:
        fh.write(digest + "\n")
    logger.info("psfmatch_docgen: rendered the demo figures in %.1f s", time.perf_counter() - t0)


# ---------------------------------------------------------------------------
# command-line help


def cli_parsers() -> dict:
    """``{"": main parser, name: subparser}`` of the ``psfmatch`` command."""
    import argparse

    from psfmatch.cli import _parser

    main = _parser()
    out = {"": main}
    for action in main._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def cli_help(name="", width=100) -> str:
    """The help text of ``psfmatch`` (``name=""``) or of ``psfmatch NAME``, ``width`` columns wide."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        parsers = cli_parsers()
        if name not in parsers:
            raise KeyError(f"psfmatch has no subcommand {name!r}; it has {sorted(k for k in parsers if k)}")
        return parsers[name].format_help().rstrip() + "\n"
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


class CliHelpDirective(Directive):
    """``.. psfmatch-cli-help:: [SUBCOMMAND]``: the argparse help text as a literal block."""

    optional_arguments = 1
    has_content = False

    def run(self):
        name = self.arguments[0] if self.arguments else ""
        try:
            text = cli_help(name)
        except Exception as exc:  # noqa: BLE001 - reported as a directive error (a build failure with -W)
            return [self.state.document.reporter.error(f"psfmatch-cli-help {name}: {exc}", line=self.lineno)]
        node = nodes.literal_block(text, text)
        node["language"] = "text"
        return [node]


# ---------------------------------------------------------------------------
# cross-references written relative to a module


_FOREIGN = ("numpy", "scipy", "matplotlib", "astropy", "distributed", "dask", "galsim", "piff")


def _resolve_by_suffix(app, env, node, contnode):
    """Resolve a Python reference that names an object by a path other than the documented one.

    Docstrings refer to objects relative to their own module (``:func:`match_many```) or by
    their defining module (``psfmatch.task.ModelPsfMatchTask.run``), while the API pages
    document them under the path users import them from (``psfmatch.ModelPsfMatchTask.run``).
    The longest trailing part of the target that names exactly one documented object wins;
    an ambiguous or unknown name stays unresolved (plain text).
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target or target.startswith(_FOREIGN):
        return None
    from sphinx.util.nodes import make_refnode

    objects = env.get_domain("py").objects
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        suffix = ".".join(parts[-n:])
        hits = [name for name in objects if name == suffix or name.endswith("." + suffix)]
        if len(hits) > 1:  # autodoc also registers each object under its defining module ("aliased")
            hits = [name for name in hits if not getattr(objects[name], "aliased", False)] or hits
        if len(hits) == 1:
            entry = objects[hits[0]]
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, hits[0])
        if hits:
            return None
    return None


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    app.add_directive("psfmatch-cli-help", CliHelpDirective)
    app.connect("missing-reference", _resolve_by_suffix)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # one part of the rendering, run by render_products in its own process
    _PARTS[sys.argv[1]](sys.argv[2])
