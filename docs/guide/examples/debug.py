"""An example debug.py for ``psfmatch run --debug``: every debug display of psfmatch switched on.

Put it in the current directory (or anywhere on PYTHONPATH) and run, for example,
``psfmatch demo --debug --debug-dir figs``.  Delete the lines you do not need.
"""

import psfmatch.debug


def DebugInfo(name):
    info = psfmatch.debug.getInfo(name)  # the original lookup: every switch not set here is False
    if name == "psfmatch.task":  # LSST: lsst.ip.diffim.modelPsfMatch
        info.display = True  # master switch of this module's displays
        info.displaySpatialCells = True  # the exposure, its mask planes, the cells and the candidates
        info.maskTransparency = 60  # mask overlay transparency in percent: 0 opaque, 100 invisible
    elif name == "psfmatch.solve":  # LSST: lsst.ip.diffim.psfMatch
        info.display = True  # master switch of this module's displays
        info.displayCandidates = True  # each candidate's stamp, own kernel and residuals
        info.displayKernelBasis = True  # the basis kernels
        info.displayKernelMosaic = True  # the spatial kernel on a 7 x N grid across the field
        info.plotKernelSpatialModel = True  # spatial model of each coefficient vs the candidates' own
        info.showBadCandidates = True  # include rejected (BAD) candidates in the displays above
    return info


psfmatch.debug.Info = DebugInfo
