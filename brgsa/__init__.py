"""BrgSA: bridged semantic alignment with a cross-modal knowledge bank for zero-shot 3D chest CT diagnosis."""

from datasets.guard import require_medvl_datasets

require_medvl_datasets()

__version__ = "0.1.0"
