"""medvl's shared data layer: medical image readers, dataset adapters, benchmarks, DataModules and I/O utilities.

The import name ``datasets`` is shared with Hugging Face's ``datasets`` library. Both cannot live in one environment:
installing one overwrites the other's folder. The guard below (and :func:`datasets.guard.require_medvl_datasets`,
called by ``lsms``, ``carzero`` and ``brgsa`` at import) turns that clash into a clear error.
"""

from datasets.guard import MEDVL_DATA_LAYER, check_own_folder

__medvl_data_layer__ = MEDVL_DATA_LAYER

check_own_folder(__path__)

__all__ = ["__medvl_data_layer__"]
