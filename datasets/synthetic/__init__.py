"""Synthetic benchmarks generated from code, so tests, demos and CI need no download.

* ``refhl``: RefHL-Seg-style referring hepatic-lesion segmentation on abdominal CT phantoms
  (:func:`generate_refhl`, frozen spec :data:`REFHL_V1`).
  Command line: ``python -m datasets.synthetic refhl --out DIR``.
* ``cxr``: chest radiographs with the 14 ChestX-ray14 findings, reports and label files in the public formats
  (:mod:`datasets.synthetic.cxr`). Command line: ``python -m datasets.synthetic cxr --out DIR``.
* ``ct3d``: 3D chest CT with CT-RATE's 18 abnormalities, reports and CT-RATE-format tables
  (:mod:`datasets.synthetic.ct3d`). Command line: ``python -m datasets.synthetic ct3d --out DIR``.
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
