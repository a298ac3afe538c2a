"""Entropic optimal transport for the structural loss: solver options, solver, divergence.

:func:`sinkhorn_stabilized` solves one (or a batch of) entropic OT problems;
:func:`sinkhorn_divergence` is the debiased divergence between point clouds that
:class:`~privkd.losses.structural.StructuralOTLoss` minimises. Both take one
:class:`SinkhornOptions`. Design notes: ``docs/sinkhorn.md``.
"""

from privkd.losses.ot.divergence import SinkhornWarmStart, sinkhorn_divergence, squared_euclidean_cost
from privkd.losses.ot.options import SinkhornOptions
from privkd.losses.ot.solver import SinkhornResult, sinkhorn_stabilized

__all__ = [
    "SinkhornOptions",
    "SinkhornResult",
    "SinkhornWarmStart",
    "sinkhorn_divergence",
    "sinkhorn_stabilized",
    "squared_euclidean_cost",
]
