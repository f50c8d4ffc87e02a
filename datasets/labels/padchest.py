"""PadChest label table and the PadChest / PadChest20 zero-shot class sets.

Public file (BIMCV, https://bimcv.cipf.es/bimcv-projects/padchest/):
``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv``, one row per image with ``ImageID``, ``ImageDir``,
``MethodLabel`` (``Physician`` for the radiologist-annotated rows, ``RNN_model`` for the rest) and ``Labels``: a
Python-list literal that carries stray leading spaces and empty strings, e.g. ``['pleural effusion', ' cardiomegaly',
'']``. It is parsed with :func:`ast.literal_eval` (no code runs), each entry stripped, empty entries dropped.

Conventions of CARZero's PadChest benchmark (research notes, "carzero.md" 4.1):

* only the radiologist-annotated rows (``MethodLabel == "Physician"``, 39,053 images);
* the 192 classes :data:`CLASSES`: the sorted unique labels of those rows with ``normal`` removed (Python's default
  sort, so capitalised names such as ``COPD signs`` come first; it keeps entries like ``exclude`` and
  ``suboptimal study``, as CARZero did); ``normal`` rows are negative for every class;
* a row whose ``Labels`` cell is blank carries no annotation (CARZero's list literal parser cannot read it, so its
  image list never held one): it is left out with a warning that counts and names such rows. A literal with no
  entries (``[]`` or ``['']``) is an annotation with no finding and stays, negative for every class;
* PadChest20: the 20 classes with the fewest positives among those rows (:func:`rarest_classes`). The official code
  selects classes with at most 10 positives and the author describes "the 20 least frequent classes"; ties at the
  20th place are broken here by class order (not documented upstream).
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.errors import InputError
from datasets.labels.base import LabelSet, check_unique_ids, read_csv_table, require_columns

__all__ = ["FORMAT_VERSION", "CLASSES", "NORMAL", "parse_labels_literal", "read_padchest_csv", "rarest_classes"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = "padchest-1"
NORMAL = "normal"

CLASSES = [
    "COPD signs", "Chilaiditi sign", "NSG tube", "abnormal foreign body", "abscess", "adenopathy", "air bronchogram",
    "air fluid level", "air trapping", "alveolar pattern", "aortic aneurysm", "aortic atheromatosis",
    "aortic button enlargement", "aortic elongation", "aortic endoprosthesis", "apical pleural thickening",
    "artificial aortic heart valve", "artificial heart valve", "artificial mitral heart valve", "asbestosis signs",
    "ascendent aortic elongation", "atelectasis", "atelectasis basal", "atypical pneumonia", "axial hyperostosis",
    "azygoesophageal recess shift", "azygos lobe", "blastic bone lesion", "bone cement", "bone metastasis",
    "breast mass", "bronchiectasis", "bronchovascular markings", "bullas", "calcified adenopathy",
    "calcified densities", "calcified fibroadenoma", "calcified granuloma", "calcified mediastinal adenopathy",
    "calcified pleural plaques", "calcified pleural thickening", "callus rib fracture", "cardiomegaly", "catheter",
    "cavitation", "central vascular redistribution", "central venous catheter",
    "central venous catheter via jugular vein", "central venous catheter via subclavian vein",
    "central venous catheter via umbilical vein", "cervical rib", "chest drain tube", "chronic changes",
    "clavicle fracture", "consolidation", "costochondral junction hypertrophy", "costophrenic angle blunting", "cyst",
    "dai", "descendent aortic elongation", "dextrocardia", "diaphragmatic eventration", "double J stent",
    "dual chamber device", "electrical device", "emphysema", "empyema", "end on vessel", "endoprosthesis",
    "endotracheal tube", "esophagic dilatation", "exclude", "external foreign body", "fibrotic band",
    "fissure thickening", "flattened diaphragm", "fracture", "gastrostomy tube", "goiter", "granuloma",
    "ground glass pattern", "gynecomastia", "heart insufficiency", "heart valve calcified", "hemidiaphragm elevation",
    "hiatal hernia", "hilar congestion", "hilar enlargement", "humeral fracture", "humeral prosthesis",
    "hydropneumothorax", "hyperinflated lung", "hypoexpansion", "hypoexpansion basal", "increased density",
    "infiltrates", "interstitial pattern", "kerley lines", "kyphosis", "laminar atelectasis", "lepidic adenocarcinoma",
    "lipomatosis", "lobar atelectasis", "loculated fissural effusion", "loculated pleural effusion", "lung metastasis",
    "lung vascular paucity", "lymphangitis carcinomatosa", "lytic bone lesion", "major fissure thickening",
    "mammary prosthesis", "mass", "mastectomy", "mediastinal enlargement", "mediastinal mass", "mediastinal shift",
    "mediastinic lipomatosis", "metal", "miliary opacities", "minor fissure thickening", "multiple nodules",
    "nephrostomy tube", "nipple shadow", "nodule", "non axial articular degenerative changes", "obesity", "osteopenia",
    "osteoporosis", "osteosynthesis material", "pacemaker", "pectum carinatum", "pectum excavatum",
    "pericardial effusion", "pleural effusion", "pleural mass", "pleural plaques", "pleural thickening",
    "pneumomediastinum", "pneumonia", "pneumoperitoneo", "pneumothorax", "post radiotherapy changes", "prosthesis",
    "pseudonodule", "pulmonary artery enlargement", "pulmonary artery hypertension", "pulmonary edema",
    "pulmonary fibrosis", "pulmonary hypertension", "pulmonary mass", "pulmonary venous hypertension",
    "reservoir central venous catheter", "respiratory distress", "reticular interstitial pattern",
    "reticulonodular interstitial pattern", "rib fracture", "right sided aortic arch", "round atelectasis",
    "sclerotic bone lesion", "scoliosis", "segmental atelectasis", "single chamber device", "soft tissue mass",
    "sternoclavicular junction hypertrophy", "sternotomy", "subacromial space narrowing", "subcutaneous emphysema",
    "suboptimal study", "superior mediastinal enlargement", "supra aortic elongation", "surgery", "surgery breast",
    "surgery heart", "surgery humeral", "surgery lung", "surgery neck", "suture material", "thoracic cage deformation",
    "total atelectasis", "tracheal shift", "tracheostomy tube", "tuberculosis", "tuberculosis sequelae", "unchanged",
    "vascular hilar enlargement", "vascular redistribution", "ventriculoperitoneal drain tube",
    "vertebral anterior compression", "vertebral compression", "vertebral degenerative changes", "vertebral fracture",
    "volume loss",
]

_META_COLUMNS = {"ImageDir": "image_dir", "StudyID": "study_id", "PatientID": "patient_id",
                 "Projection": "projection", "MethodLabel": "method_label"}
_MAX_LITERAL_CHARS = 20_000


def parse_labels_literal(text: str, path: str | os.PathLike, row: int) -> list[str]:
    """Parse one ``Labels`` cell: a list literal of strings, entries stripped, empty entries dropped.

    Example::

        parse_labels_literal("['pleural effusion', ' cardiomegaly', '']", "padchest.csv", 2)
        # ['pleural effusion', 'cardiomegaly']

    Raises:
        InputError: the cell is not a Python list of strings (names the file, row and column).
    """
    where = f"{path}: row {row}, column 'Labels'"
    if len(text) > _MAX_LITERAL_CHARS:
        raise InputError(f"{where}: the cell has {len(text)} characters, more than a label list can hold")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise InputError(
            f"{where}: expected a list literal like ['pleural effusion', ' cardiomegaly'], got {text!r}"
        ) from err
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{where}: expected a list of strings, got {text!r}")
    return [item.strip() for item in value if item.strip()]


def read_padchest_csv(
    path: str | os.PathLike, classes: Sequence[str] = tuple(CLASSES), physician_only: bool = True
) -> LabelSet:
    """Read the PadChest CSV into a multi-label :class:`LabelSet`.

    Args:
        path: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or a subset with the same columns).
        classes: classes to score, in this order. Defaults to the 192 :data:`CLASSES`.
        physician_only: keep only ``MethodLabel == "Physician"`` rows, as CARZero. Defaults to True.

    Returns:
        A label set keyed by ``ImageID``; ``image_relpaths`` are ``<ImageDir>/<ImageID>`` when ``ImageDir`` is
        present; ``meta`` keeps ``labels`` (the parsed list) and the study fields. Rows with a blank ``Labels`` cell
        are left out (logged as a warning).

    Raises:
        InputError: a missing column, an unparsable ``Labels`` literal, a label outside ``classes`` (other than
            ``normal``), or a duplicate ``ImageID``.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["ImageID", "Labels", *(["MethodLabel"] if physician_only else [])])
    if physician_only:
        rows = [row for row in rows if row.values["MethodLabel"] == "Physician"]
    unlabelled = [row for row in rows if not row.values["Labels"].strip()]
    if unlabelled:
        named = ", ".join(f"row {row.number} ({row.values['ImageID']})" for row in unlabelled[:5])
        more = f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else ""
        logger.warning(
            "%s: left out %d of %d rows whose 'Labels' cell is blank (no annotation to score): %s%s",
            path, len(unlabelled), len(rows), named, more,
        )
        rows = [row for row in rows if row.values["Labels"].strip()]
    check_unique_ids(path, "ImageID", rows)
    index = {name: j for j, name in enumerate(classes)}
    labels = np.zeros((len(rows), len(classes)), dtype=np.float32)
    meta, relpaths = [], []
    for i, row in enumerate(rows):
        names = parse_labels_literal(row.values["Labels"], path, row.number)
        for name in names:
            if name == NORMAL:
                continue
            if name not in index:
                raise InputError(
                    f"{path}: row {row.number} ({row.values['ImageID']}), column 'Labels': label {name!r} is not "
                    f"one of the {len(classes)} benchmark classes (nor {NORMAL!r})"
                )
            labels[i, index[name]] = 1.0
        image_dir = row.values.get("ImageDir", "")
        relpaths.append(f"{image_dir}/{row.values['ImageID']}" if image_dir else row.values["ImageID"])
        fields = {key: row.values[col] for col, key in _META_COLUMNS.items() if col in header}
        meta.append({"row": row.number, "labels": names, **fields})
    ids = [row.values["ImageID"] for row in rows]
    return LabelSet(ids, list(classes), labels, meta, path, FORMAT_VERSION, relpaths)


def rarest_classes(labels: LabelSet, k: int = 20) -> list[str]:
    """The ``k`` classes with the fewest positives, in the label set's class order (PadChest20 for ``k=20``).

    Ties are broken by class order (the stable sort keeps the earlier class).

    Raises:
        ValueError: ``k`` is not between 1 and the number of classes.
    """
    if not 1 <= k <= len(labels.class_names):
        raise ValueError(f"k must be between 1 and {len(labels.class_names)}, got {k}")
    counts = labels.positives()
    chosen = set(sorted(labels.class_names, key=lambda name: counts[name])[:k])
    return [name for name in labels.class_names if name in chosen]
