"""Debug switches, looked up at run time, in the style of LSST's ``lsstDebug``.

Library modules ask for their switches *when they run*::

    from psfmatch import debug
    info = debug.Info("psfmatch.task")
    if info.display and info.displaySpatialCells:
        ...

Every attribute that nobody set is ``False``, so code can test a switch
without knowing whether a debug file exists.  ``psfmatch run --debug`` (and
:func:`import_debug_module`) imports a file ``debug.py`` from the Python path
(``PYTHONPATH``, then the current directory).  As with ``lsstDebug``, that file
replaces :data:`psfmatch.debug.Info` with its own function, usually wrapping the
original, which stays available as :func:`getInfo`::

    # debug.py
    import psfmatch.debug

    def DebugInfo(name):
        info = psfmatch.debug.getInfo(name)      # the original lookup
        if name == "psfmatch.task":
            info.display = True
            info.displaySpatialCells = True
            info.maskTransparency = 60
        if name == "psfmatch.solve":
            info.display = True
            info.displayKernelMosaic = True
            info.plotKernelSpatialModel = True
        return info

    psfmatch.debug.Info = DebugInfo

Switches read by psfmatch
-------------------------
``psfmatch.task`` (LSST: ``lsst.ip.diffim.modelPsfMatch``)
    ``display`` (master switch), ``maskTransparency`` (percent, 0 opaque to 100
    invisible; default 60), ``displaySpatialCells`` (the exposure with the cells
    and the candidates marked by status).
``psfmatch.solve`` (LSST: ``lsst.ip.diffim.psfMatch``)
    ``display`` (master switch), ``displayCandidates`` (candidate stamps, their
    kernels and residuals), ``displayKernelBasis`` (mosaic of the basis),
    ``displayKernelMosaic`` (the spatial kernel on a grid across the field),
    ``plotKernelSpatialModel`` (the spatial coefficient model against the
    per-candidate solutions), ``showBadCandidates`` (include BAD candidates in
    the candidate and spatial-model displays).  LSST's ``maskTransparency`` of
    this module has no use here: only ``psfmatch.task``'s display shows masks.

Unlike ``lsstDebug``, switches are stored here (one namespace per module name)
rather than in the modules' own globals.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import re
import sys
import threading

__all__ = ["Info", "getInfo", "DebugInfo", "import_debug_module", "set_output_dir", "get_output_dir",
           "next_frame", "reset", "scoped", "frame"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_switches: dict[str, dict] = {}
_output_dir: str | None = None
_FRAME_FILE = re.compile(r"psfmatch-debug-(\d+)-")

#: Number of the last debug figure (``lsstDebug.frame``); :func:`next_frame` increments it, past the
#: numbers of the figures already in the folder written to.
frame = 0


class DebugInfo:
    """The debug switches of one module; unset attributes are ``False``.

    Parameters
    ----------
    name : str
        The module name (``"psfmatch.task"``, ``"psfmatch.solve"``).  All
        ``DebugInfo`` objects of one name share their values.

    Examples
    --------
    >>> from psfmatch import debug
    >>> with debug.scoped():  # restores every switch on leaving the block
    ...     debug.Info("psfmatch.solve").displayKernelBasis = True
    ...     debug.Info("psfmatch.solve").displayKernelBasis, debug.Info("psfmatch.solve").displayCandidates
    (True, False)
    >>> debug.Info("psfmatch.solve").displayKernelBasis
    False
    """

    __slots__ = ("_name",)

    def __init__(self, name):
        object.__setattr__(self, "_name", str(name))
        with _lock:
            _switches.setdefault(self._name, {})

    def __getattr__(self, what):
        if what.startswith("__"):
            raise AttributeError(what)
        return _switches.get(self._name, {}).get(what, False)

    def __setattr__(self, what, value):
        with _lock:
            _switches.setdefault(self._name, {})[what] = value

    def __delattr__(self, what):
        with _lock:
            _switches.get(self._name, {}).pop(what, None)

    def getName(self) -> str:
        """The module name these switches belong to."""
        return self._name

    def to_dict(self) -> dict:
        """The switches that are set, as a plain dict."""
        return dict(_switches.get(self._name, {}))

    def __repr__(self):
        return f"DebugInfo({self._name!r}, {self.to_dict()!r})"


def getInfo(name) -> DebugInfo:
    """The original switch lookup (what :data:`Info` is until ``debug.py`` replaces it)."""
    return DebugInfo(name)


#: The switch lookup the library calls; ``debug.py`` may replace it with its own function.
Info = getInfo


def import_debug_module(name="debug"):
    """Import ``debug.py`` (or module ``name``) from the Python path, as ``pipetask --debug`` does.

    The current directory is searched after the entries of ``sys.path``.  A
    module of that name imported earlier is forgotten first, so that the
    ``debug.py`` found now takes effect.

    Returns
    -------
    module or None
        The imported module, or None (with a warning in the log) if there is none.
    """
    added = False
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        added = True
    try:
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        log.warning("--debug: no module %r found on the Python path (PYTHONPATH or the current directory); "
                    "debug displays stay off", name)
        return None
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass


def set_output_dir(path) -> None:
    """Write debug figures as PNG files under ``path`` (even where a screen is available); None resets.

    The folder is created when the first figure is written.  Files already there are kept: the
    figures are numbered past the highest ``psfmatch-debug-NNN`` found (see :func:`next_frame`).

    Raises
    ------
    InvalidInputError
        If ``path`` exists and is not a directory.
    """
    global _output_dir
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        from .errors import InvalidInputError

        raise InvalidInputError(f"debug output folder {os.fspath(path)!r} exists and is not a directory; give a "
                                "directory (an existing one, or a new name in a writable directory)")
    _output_dir = None if path is None else os.fspath(path)


def get_output_dir() -> str | None:
    """The folder set by :func:`set_output_dir` (``psfmatch run --debug-dir``), or None."""
    return _output_dir


def _highest_frame(folder) -> int:
    """The highest ``NNN`` of the files ``psfmatch-debug-NNN-*`` in ``folder`` (0 when none, or unreadable)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    numbers = [int(m.group(1)) for m in map(_FRAME_FILE.match, names) if m]
    return max(numbers, default=0)


def next_frame(folder=None) -> int:
    """Increment and return :data:`frame`.

    Parameters
    ----------
    folder : str or path-like, optional
        Where the figure will be written: the number returned is also higher than every ``NNN``
        of the files ``psfmatch-debug-NNN-*`` there, so that a new figure never takes the
        number (and the file) of an earlier run's.
    """
    global frame
    highest = 0 if folder is None else _highest_frame(folder)
    with _lock:
        frame = max(frame, highest) + 1
        return frame


def reset() -> None:
    """Forget every switch, restore the original :data:`Info`, the output folder and the frame counter."""
    global Info, _output_dir, frame
    with _lock:
        _switches.clear()
    Info = getInfo
    _output_dir = None
    frame = 0


def _reset_after_fork():
    """In a forked child no other thread exists: a new lock for the switches.

    A fork taken while another thread of the parent held the lock (setting a
    switch, numbering a figure) copied it held, and every fit in the child,
    which looks its switches up, would have waited on it for good.
    """
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@contextlib.contextmanager
def scoped():
    """Restore :data:`Info`, every switch and the output folder on exit (the frame counter keeps counting).

    ``psfmatch.cli.main`` runs each command inside it, so that a ``debug.py``
    imported by one command does not affect the next call in the same process.
    """
    global Info, _output_dir
    with _lock:
        saved = copy.deepcopy(_switches)
    saved_info, saved_dir = Info, _output_dir
    try:
        yield
    finally:
        with _lock:
            _switches.clear()
            _switches.update(saved)
        Info, _output_dir = saved_info, saved_dir
