"""LSMS (Language-guided Scale-aware MedSegmentor): referring segmentation of CT slices from text.

An unofficial reconstruction: the paper publishes its design only in outline.
"""

from datasets.guard import require_medvl_datasets

require_medvl_datasets()

__version__ = "0.1.0"
