"""CARZero: cross-attention alignment for zero-shot chest X-ray classification."""

from datasets.guard import require_medvl_datasets

require_medvl_datasets()

__version__ = "0.1.0"
