"""Entropic optimal transport for the structural loss: solver options, solver, divergence.

:func:`sinkhorn_stabilized` solves one (or a batch of) entropic OT problems;
:func:`sinkhorn_divergence` is the debiased divergence between point clouds that
:class:`~privkd.losses.structural.StructuralOTLoss` minimises. Both take one
:class:`SinkhornOptions`. A divergence whose solves stop above the tolerance issues a
:class:`SinkhornConvergenceWarning` (once per process) and says so in its
:class:`SinkhornReport`. Design notes: ``docs/sinkhorn.md``.
"""

from privkd.losses.ot.divergence import (
    SinkhornConvergenceWarning,
    SinkhornReport,
    SinkhornWarmStart,
    sinkhorn_divergence,
    squared_euclidean_cost,
)
from privkd.losses.ot.options import SinkhornOptions
from privkd.losses.ot.solver import SinkhornResult, sinkhorn_stabilized

__all__ = [
    "SinkhornConvergenceWarning",
    "SinkhornOptions",
    "SinkhornReport",
    "SinkhornResult",
    "SinkhornWarmStart",
    "sinkhorn_divergence",
    "sinkhorn_stabilized",
    "squared_euclidean_cost",
]
