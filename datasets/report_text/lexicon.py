"""Finding lexicons: per-class term patterns for the rule-based aligner.

A :class:`Lexicon` maps each class of a label set to regular expressions matching how reports name it, plus a few
*fixed statements* whose status does not depend on negation cues ("heart size is normal" is a negative
cardiomegaly statement, "the lungs are clear" a positive "No Finding" one). Display names, used to write
"There is <finding>" sentences, come from the benchmark prompt files in ``configs/prompts/`` so that training text and
zero-shot prompts name a class identically (CARZero's "There is Pleural Effusion" for ChestX-ray14's ``Effusion``).

Two lexicons are registered in :data:`LEXICONS`: ``chestxray14`` (the 14 ChestX-ray14 classes and "No Finding",
for CARZero) and ``ct-rate`` (CT-RATE's 18 abnormalities, for BrgSA).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from datasets.errors import InputError
from datasets.labels import chestxray14, ctrate

__all__ = ["FixedStatement", "Lexicon", "LEXICONS", "PROMPT_DIR", "get_lexicon", "prompt_names"]

PROMPT_DIR = Path(__file__).resolve().parents[2] / "configs" / "prompts"
_TEMPLATE = re.compile(r"^There is (?P<name>.+)$")


@dataclass(frozen=True)
class FixedStatement:
    """A phrase that states a finding's status by itself, regardless of negation cues around it.

    Attributes:
        finding: the class name.
        pattern: regular expression (matched case-insensitively).
        status: ``"positive"``, ``"negative"`` or ``"uncertain"``.
    """

    finding: str
    pattern: str
    status: str


@dataclass(frozen=True)
class Lexicon:
    """Term patterns of one label set.

    Attributes:
        name: registry key.
        classes: class names in the label set's order.
        terms: ``{class: (regex, ...)}``; a mention of the class, whose status the negation and uncertainty rules
            decide. Matched case-insensitively with word boundaries written into the patterns.
        fixed: statements whose status is fixed (see :class:`FixedStatement`).
        exclusions: patterns whose matches are never a mention (e.g. "subcutaneous emphysema").
        prompt_file: file in ``configs/prompts/`` holding one "There is <name>" line per class, in class order.
        no_finding: the "normal study" class name, or None when the label set has none.
    """

    name: str
    classes: tuple[str, ...]
    terms: dict[str, tuple[str, ...]]
    fixed: tuple[FixedStatement, ...] = ()
    exclusions: tuple[str, ...] = ()
    prompt_file: str = ""
    no_finding: str | None = None

    def display_name(self, finding: str) -> str:
        """The name used in generated sentences: the prompt file's name, else the class name without underscores."""
        scored = tuple(name for name in self.classes if name != self.no_finding)  # prompt files hold no "No Finding"
        names = prompt_names(self.prompt_file, scored) if self.prompt_file else {}
        return names.get(finding, finding.replace("_", " "))


@cache
def prompt_names(prompt_file: str, classes: tuple[str, ...]) -> dict[str, str]:
    """Read ``configs/prompts/<prompt_file>`` ("There is <name>" per line, ``#`` comments) into ``{class: name}``.

    Raises:
        InputError: the file's line count differs from the class count, or a line does not start "There is ".
    """
    path = PROMPT_DIR / prompt_file
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != len(classes):
        raise InputError(f"{path}: {len(lines)} prompts for {len(classes)} classes {list(classes)}")
    names = {}
    for finding, line in zip(classes, lines):
        match = _TEMPLATE.match(line)
        if match is None:
            raise InputError(f"{path}: prompt {line!r} does not follow 'There is <finding>'")
        names[finding] = match["name"]
    return names


_EFFUSION = r"(?<!pericardial )\beffusions?\b"
_HEART = r"(?:heart(?: size)?|cardiac (?:silhouette|size|shadow|contours?)|cardiomediastinal (?:silhouette|contours?))"
_CARDIAC_TERMS = (
    r"\bcardiomegaly\b",
    r"\bcardiac enlargement\b",
    r"\benlarge(?:d|ment of the) " + _HEART + r"\b",
    r"\b" + _HEART + r"\b(?: (?:is|are|remains|appears|was))?(?: \w+){0,2} (?:enlarged|increased)\b",
)
_CARDIAC_NORMAL = (
    r"\bnormal (?:heart|cardiac) (?:size|silhouette|contours?)\b",
    r"\b" + _HEART + r"\b[^.;,]{0,40}?\b(?:normal|within normal limits|unremarkable)\b",
)
_NORMAL_STUDY = (
    r"\b(?:no|negative for|without) (?:evidence of )?acute (?:cardiopulmonary|intrathoracic|cardiothoracic|chest)"
    r" (?:process|abnormality|abnormalities|disease|findings?|pathology)\b",
    r"\blungs (?:are|were|remain)(?: \w+){0,3} clear\b",
    r"\bclear lungs\b",
    r"\bnormal chest(?: radiograph| x-ray| radiography| study| exam| examination)?\b",
)

_CXR14 = Lexicon(
    name="chestxray14",
    classes=(*chestxray14.CLASSES, chestxray14.NO_FINDING),
    terms={
        "Atelectasis": (r"\batelecta(?:sis|ses|tic)\b", r"\b(?:lobe|lobar|lung) collapse\b", r"\bcollapse of the\b"),
        "Cardiomegaly": _CARDIAC_TERMS,
        "Effusion": (_EFFUSION, r"\bpleural fluid\b", r"\bhydrothorax\b"),
        "Infiltration": (r"\binfiltrat(?:e|es|ion|ions|ive)\b",),
        "Mass": (r"\bmass(?:es)?\b",),
        "Nodule": (r"\bnodul(?:e|es|ar)\b",),
        "Pneumonia": (r"\b(?:broncho)?pneumonias?\b",),
        "Pneumothorax": (r"\bpneumothora(?:x|ces)\b", r"\bptx\b"),
        "Consolidation": (r"\bconsolidat(?:ion|ions|ive|ed)\b",),
        "Edema": (r"\bo?edema\b",),
        "Emphysema": (r"\bemphysema(?:tous)?\b",),
        "Fibrosis": (r"\bfibros(?:is|es)\b", r"\bfibrotic\b", r"\bscarring\b", r"\bscars?\b"),
        "Pleural_Thickening": (r"\bpleural(?:-based)? thickening\b", r"\bthickening of the pleura\b",
                               r"\bthickened pleura\b"),
        "Hernia": (r"\bhernia(?:s|tion)?\b",),
        "No Finding": (),
    },
    fixed=(
        *(FixedStatement("Cardiomegaly", pattern, "negative") for pattern in _CARDIAC_NORMAL),
        FixedStatement("Effusion", r"\bcostophrenic angles? (?:are|is|remain)?(?: \w+)? ?sharp\b", "negative"),
        *(FixedStatement("No Finding", pattern, "positive") for pattern in _NORMAL_STUDY),
    ),
    exclusions=(
        r"\b(?:subcutaneous|soft[- ]tissue|mediastinal|interstitial subcutaneous) emphysema\b",
        r"\bmass effect\b",
        r"\bpericardial effusions?\b",
    ),
    prompt_file="chestxray14.txt",
    no_finding=chestxray14.NO_FINDING,
)

_CTRATE = Lexicon(
    name="ct-rate",
    classes=tuple(ctrate.CLASSES),
    terms={
        "Medical material": (
            r"\bmedical materials?\b", r"\bstents?\b", r"\bcatheters?\b", r"\bpacemakers?\b", r"\bsternotomy\b",
            r"\bprosthe(?:sis|ses|tic)\b", r"\bsurgical clips?\b", r"\b(?:chest|endotracheal|nasogastric) tubes?\b",
            r"\bport catheter\b", r"\bcardiac (?:device|valve replacement)\b",
        ),
        "Arterial wall calcification": (
            r"\barterial wall calcifications?\b", r"\b(?:aortic|vascular|arterial) calcifications?\b",
            r"\b(?:calcific|calcified) atheroma(?:tous)?(?: plaques?)?\b", r"\bcalcific atherosclero\w*",
            r"\batherosclerotic calcifications?\b", r"\bcalcified (?:atherosclerotic )?plaques?\b",
        ),
        "Cardiomegaly": _CARDIAC_TERMS,
        "Pericardial effusion": (
            r"\bpericardial (?:effusions?|fluid)\b", r"\bpleural (?:or|and|and/or) pericardial effusions?\b",
        ),
        "Coronary artery wall calcification": (
            r"\bcoronary (?:artery |arteries )?(?:wall )?calcifications?\b",
            r"\bcalcif\w*[^.;]{0,60}\bcoronary\b", r"\bcoronary\b[^.;]{0,20}\bcalcif\w*",
        ),
        "Hiatal hernia": (r"\bhiat(?:al|us) hernia\b",),
        "Lymphadenopathy": (
            r"\blymphadenopath(?:y|ies)\b",
            r"\b(?:enlarged|pathologically enlarged|pathological)(?: \w+){0,2} lymph nodes?\b",
            r"\blymph nodes?\b[^.;]{0,50}\bpatholog\w* (?:size|dimension)s?\b",
        ),
        "Emphysema": (r"\bemphysema(?:tous)?\b",),
        "Atelectasis": (r"\batelecta(?:sis|ses|tic)\b", r"\bfibroatelecta\w*"),
        "Lung nodule": (r"\b(?:micro)?nodul(?:e|es|ar)\b",),
        "Lung opacity": (r"\bopacit(?:y|ies)\b", r"\bground[- ]?glass\b"),
        "Pulmonary fibrotic sequela": (
            r"\bfibrotic (?:sequelae?|changes?|bands?|strands?|scars?)\b", r"\bsequelae?\b", r"\bfibros(?:is|es)\b",
            r"\bfibroatelecta\w*", r"\bparenchymal bands?\b",
        ),
        "Pleural effusion": (
            _EFFUSION, r"\bpleural fluid\b", r"\bhydrothorax\b",
            r"\bpleural (?:or|and|and/or) pericardial effusions?\b",
        ),
        "Mosaic attenuation pattern": (r"\bmosaic (?:attenuation|perfusion|pattern)\b",),
        "Peribronchial thickening": (r"\bperibronchial (?:wall )?thickening\w*",),
        "Consolidation": (r"\bconsolidat(?:ion|ions|ive|ed)\b",),
        "Bronchiectasis": (r"\bbronchiecta(?:sis|ses|tic)\b",),
        "Interlobular septal thickening": (r"\b(?:interlobular )?septal thickening\w*",),
    },
    fixed=tuple(FixedStatement("Cardiomegaly", pattern, "negative") for pattern in _CARDIAC_NORMAL),
    exclusions=(r"\b(?:subcutaneous|soft[- ]tissue|mediastinal) emphysema\b",),
    prompt_file="ct-rate.txt",
)

LEXICONS: dict[str, Lexicon] = {_CXR14.name: _CXR14, _CTRATE.name: _CTRATE}


def get_lexicon(name: str) -> Lexicon:
    """The registered lexicon called ``name``.

    Raises:
        InputError: an unknown name (the message lists the registered ones).
    """
    if name not in LEXICONS:
        raise InputError(f"unknown lexicon {name!r}; choose from: {', '.join(LEXICONS)}")
    return LEXICONS[name]
