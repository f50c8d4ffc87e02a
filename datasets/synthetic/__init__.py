"""Synthetic benchmarks generated from code, so tests, demos and CI need no download.

* ``refhl``: RefHL-Seg-style referring hepatic-lesion segmentation on abdominal CT phantoms
  (:func:`generate_refhl`, frozen spec :data:`REFHL_V1`).
  Command line: ``python -m datasets.synthetic refhl --out DIR``.
"""

from datasets.synthetic.refhl import EXTRA_COLUMNS, MANIFEST_COLUMNS, MANIFEST_FORMAT, generate_refhl
from datasets.synthetic.spec import REFHL_V1, SUPPORTED_VERSIONS, RefHLSpec

__all__ = [
    "EXTRA_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_FORMAT",
    "REFHL_V1",
    "SUPPORTED_VERSIONS",
    "RefHLSpec",
    "generate_refhl",
]
