"""What each synthetic chest CT shows: latent conditions, the drawn findings and their attributes, label noise.

Co-occurrence comes from latent conditions (:data:`CHRONIC`, :data:`ACUTE`). Chronic conditions and the findings
they cause are drawn once per patient and persist on a follow-up scan (same uniform draw, same attributes: a nodule
stays where it was); acute ones are drawn per scan. A finding is present with probability
``1 - (1 - base) * prod(1 - p)`` over its active causes in :data:`FINDING_MODEL` (conditions or findings drawn
before it), so e.g. calcified aorta goes with coronary calcification, pleural effusion with cardiomegaly and
atelectasis, emphysema with peribronchial thickening and nodules. Expected prevalences are about 8-30% per finding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.synthetic.ct3d_spec import FINDINGS

__all__ = ["Finding", "Patient", "CHRONIC", "ACUTE", "FINDING_MODEL", "sample_patient", "sample_findings",
           "flip_one_label"]

CHRONIC = {"heart_disease": 0.15, "copd": 0.16, "fibrosing": 0.12, "airway_disease": 0.1, "malignancy": 0.12,
           "hernia": 0.11}
"""Per-patient conditions and their probabilities; ``atherosclerosis`` is added with an age-dependent probability."""
ACUTE = {"infection": 0.2}
"""Per-scan conditions; ``congestion`` is added with probability 0.5 in heart disease, else 0.03."""

FINDING_MODEL: dict[str, tuple[float, dict[str, float]]] = {
    "Medical material": (0.04, {"heart_disease": 0.35, "malignancy": 0.45}),
    "Arterial wall calcification": (0.03, {"atherosclerosis": 0.7}),
    "Cardiomegaly": (0.04, {"heart_disease": 0.7}),
    "Coronary artery wall calcification": (0.03, {"atherosclerosis": 0.5, "heart_disease": 0.4}),
    "Hiatal hernia": (0.0, {"hernia": 1.0}),
    "Emphysema": (0.02, {"copd": 0.85}),
    "Lung nodule": (0.09, {"malignancy": 0.7, "copd": 0.2}),
    "Pulmonary fibrotic sequela": (0.05, {"fibrosing": 0.85}),
    "Mosaic attenuation pattern": (0.03, {"airway_disease": 0.85, "copd": 0.1}),
    "Peribronchial thickening": (0.04, {"airway_disease": 0.5, "copd": 0.35, "infection": 0.2}),
    "Bronchiectasis": (0.03, {"airway_disease": 0.45, "fibrosing": 0.4}),
    "Pericardial effusion": (0.03, {"congestion": 0.35, "malignancy": 0.2}),
    "Lymphadenopathy": (0.04, {"malignancy": 0.6, "infection": 0.25, "fibrosing": 0.2}),
    "Pleural effusion": (0.03, {"congestion": 0.6, "malignancy": 0.3, "infection": 0.15}),
    "Atelectasis": (0.05, {"infection": 0.3, "Pleural effusion": 0.5}),
    "Lung opacity": (0.05, {"infection": 0.5, "congestion": 0.35, "fibrosing": 0.2}),
    "Consolidation": (0.03, {"infection": 0.6}),
    "Interlobular septal thickening": (0.03, {"congestion": 0.6, "fibrosing": 0.35}),
}
"""Per finding, in drawing order: ``(base probability, {cause: probability that it causes the finding})``."""

_CHRONIC_FINDINGS = tuple(list(FINDING_MODEL)[:11])
_SIDES = ("right", "left")
_ZONES = ("upper", "middle", "lower")
_DEVICES = ("pacemaker", "port", "sternotomy wires")


@dataclass(frozen=True)
class Finding:
    """One drawn abnormality.

    Attributes:
        name: one of :data:`~datasets.synthetic.ct3d_spec.FINDINGS`.
        side: ``"right"``, ``"left"``, ``"bilateral"`` (the patient's) or None when not lateralised.
        zone: ``"upper"``, ``"middle"``, ``"lower"`` or None.
        size_mm: the finding's main dimension (nodule diameter, fluid depth, node short axis, ...) or None.
        severity: ``"mild"``, ``"moderate"`` or ``"severe"``.
        kind: a sub-type where there is one (device type, nodule density), else ``""``.
        seed: seed of the renderer's random placement (fixed per patient for chronic findings).
    """

    name: str
    side: str | None
    zone: str | None
    size_mm: float | None
    severity: str
    kind: str
    seed: int


@dataclass(frozen=True)
class Patient:
    """Per-patient state: demographics, chronic conditions, and per-finding uniform draws for chronic findings."""

    sex: str
    age: int
    conditions: frozenset[str]
    draws: dict[str, float]
    attributes: dict[str, Finding]


def _attributes(rng: np.random.Generator, name: str) -> Finding:
    side = str(rng.choice(_SIDES))
    zone = str(rng.choice(_ZONES))
    severity = str(rng.choice(("mild", "moderate", "severe"), p=(0.5, 0.35, 0.15)))
    size: float | None = None
    kind = ""
    if name == "Lung nodule":
        size = float(np.round(rng.uniform(6, 16)))
    elif name == "Pleural effusion":
        size = float(np.round({"mild": rng.uniform(12, 20), "moderate": rng.uniform(20, 32),
                               "severe": rng.uniform(32, 45)}[severity]))
        side = str(rng.choice(("right", "left", "bilateral"), p=(0.35, 0.25, 0.4)))
        zone = "lower"
    elif name == "Pericardial effusion":
        size = float(np.round(rng.uniform(6, 14)))
    elif name == "Lymphadenopathy":
        size = float(np.round(rng.uniform(13, 24)))
    elif name == "Hiatal hernia":
        size = float(np.round(rng.uniform(30, 55)))
    elif name == "Cardiomegaly":
        size = float(np.round(rng.uniform(1.22, 1.42), 2))
    elif name == "Medical material":
        kind = str(rng.choice(_DEVICES, p=(0.4, 0.4, 0.2)))
        side = "midline" if kind == "sternotomy wires" else str(rng.choice(_SIDES, p=(0.3, 0.7)))
    elif name in ("Emphysema", "Mosaic attenuation pattern", "Interlobular septal thickening"):
        side = "bilateral"
        zone = "upper" if name == "Emphysema" else "lower" if name == "Interlobular septal thickening" else None
    elif name in ("Consolidation", "Atelectasis", "Bronchiectasis"):
        zone = str(rng.choice(_ZONES, p=(0.2, 0.3, 0.5)))
    elif name == "Peribronchial thickening":
        side = str(rng.choice(("right", "left", "bilateral"), p=(0.2, 0.2, 0.6)))
        zone = None
    elif name == "Pulmonary fibrotic sequela":
        zone = str(rng.choice(_ZONES, p=(0.5, 0.3, 0.2)))
    if name in ("Arterial wall calcification", "Coronary artery wall calcification", "Cardiomegaly", "Hiatal hernia",
                "Pericardial effusion", "Lymphadenopathy"):
        side, zone = None, None
    return Finding(name, side, zone, size, severity, kind, int(rng.integers(2**31)))


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw demographics, chronic conditions and the chronic findings' draws and attributes of one patient."""
    sex = "F" if rng.random() < 0.45 else "M"
    age = int(rng.integers(22, 88))
    conditions = {name for name, p in CHRONIC.items() if rng.random() < p}
    if rng.random() < float(np.clip(0.017 * (age - 35), 0.03, 0.75)):
        conditions.add("atherosclerosis")
    draws = {name: float(rng.random()) for name in _CHRONIC_FINDINGS}
    attributes = {name: _attributes(rng, name) for name in _CHRONIC_FINDINGS}
    return Patient(sex, age, frozenset(conditions), draws, attributes)


def sample_findings(rng: np.random.Generator, patient: Patient) -> list[Finding]:
    """The findings drawn on one scan of ``patient``, in :data:`FINDING_MODEL` order."""
    active = set(patient.conditions)
    active |= {name for name, p in ACUTE.items() if rng.random() < p}
    if rng.random() < (0.5 if "heart_disease" in active else 0.03):
        active.add("congestion")
    findings: list[Finding] = []
    for name, (base, causes) in FINDING_MODEL.items():
        keep = 1.0 - base
        for cause, p in causes.items():
            if cause in active:
                keep *= 1.0 - p
        chronic = name in patient.draws
        draw = patient.draws[name] if chronic else float(rng.random())
        attributes = patient.attributes[name] if chronic else _attributes(rng, name)
        if draw < 1.0 - keep:
            findings.append(attributes)
            active.add(name)
    return findings


def flip_one_label(rng: np.random.Generator, drawn: set[str], rate: float) -> set[str]:
    """The labelled findings: ``drawn``, with one finding dropped or added with probability ``rate``."""
    labelled = set(drawn)
    if rng.random() < rate:
        absent = [name for name in FINDINGS if name not in drawn]
        if drawn and (not absent or rng.random() < 0.5):
            labelled.discard(str(rng.choice(sorted(drawn))))
        else:
            labelled.add(str(rng.choice(absent)))
    return labelled
