"""Tragic-triad diagnostics (Yu et al., NeurIPS 2020, §2.2, §2.4, §5.3).

Pairwise conflict, magnitude similarity and curvature bounding measure from the Gramian
(:mod:`.triad`), the multi-task curvature along an update (:class:`CurvatureProbe`), a per-step
record of them (:class:`TriadMonitor`, rows as plain dicts handed to sinks), their aggregates
(:class:`TriadSummary`, :func:`triad_summary`) and their plot (:func:`plot_triad`). The file
writers are above the core, in :mod:`gradsurgery.runtime.sinks`.
"""

from __future__ import annotations

from gradsurgery.diagnostics.monitor import RowSink, TriadMonitor
from gradsurgery.diagnostics.plots import plot_triad
from gradsurgery.diagnostics.summary import TriadSummary, triad_summary
from gradsurgery.diagnostics.triad import (
    CurvatureProbe,
    TriadStats,
    cosine_matrix,
    curvature_bounding_measure,
    magnitude_similarity,
    multitask_curvature,
    triad_stats,
)

__all__ = [
    "CurvatureProbe",
    "RowSink",
    "TriadMonitor",
    "TriadStats",
    "TriadSummary",
    "cosine_matrix",
    "curvature_bounding_measure",
    "magnitude_similarity",
    "multitask_curvature",
    "plot_triad",
    "triad_stats",
    "triad_summary",
]
