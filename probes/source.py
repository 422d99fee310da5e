"""Moved to :mod:`transfer.sources` (issue 16); this name stays while ``transfer.study.runner`` imports it."""
from transfer.sources import FeatureSource, load_source, random_backbone, state_sha256  # noqa: F401
