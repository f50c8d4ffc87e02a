"""Zero-shot label-table adapters, one module per public release, each returning a :class:`LabelSet`.

Modules: :mod:`~datasets.labels.chestxray14`, :mod:`~datasets.labels.chexpert`, :mod:`~datasets.labels.padchest`,
:mod:`~datasets.labels.chestxdet10`, :mod:`~datasets.labels.openi`, :mod:`~datasets.labels.ctrate`,
:mod:`~datasets.labels.radchestct`. Each documents its public file, its conventions and a ``FORMAT_VERSION``.
"""

from datasets.labels.base import LabelSet

__all__ = ["LabelSet"]
