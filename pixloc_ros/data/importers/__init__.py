"""Dataset importers: Extended CMU Seasons, RobotCar Seasons, generic posed image sequences.

Each reader returns an :class:`ImportPlan`; :func:`write_import` writes any plan in the
synthetic world's layout (map images + COLMAP model + georeference + query bags), so
``pixloc-ros build-map``, ``play`` and ``evaluate`` take imported and synthetic data alike.
"""
from .common import CameraSpec, Frame, ImportPlan
from .gnss import GnssNoise, synthesize_gnss
from .output import ImportOptions, ImportSummary, SequenceSummary, write_import

__all__ = ["CameraSpec", "Frame", "ImportPlan", "GnssNoise", "synthesize_gnss", "ImportOptions",
           "ImportSummary", "SequenceSummary", "write_import"]
