"""Kernel bases, spatial functions and the spatially varying kernel."""

from .basis import (KernelBasis, makeAlardLuptonBasisList, makeDeltaFunctionBasisList, makeKernelBasisList,
                    make_regularization_matrix, makeRegularizationMatrix, renormalize_kernel_list,
                    renormalizeKernelList)
from .kernel import LinearCombinationKernel
from .spatial import SpatialFunction

__all__ = [
    "KernelBasis",
    "LinearCombinationKernel",
    "SpatialFunction",
    "makeAlardLuptonBasisList",
    "makeDeltaFunctionBasisList",
    "makeKernelBasisList",
    "make_regularization_matrix",
    "makeRegularizationMatrix",
    "renormalize_kernel_list",
    "renormalizeKernelList",
]
