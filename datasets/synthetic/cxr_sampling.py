"""What each synthetic chest radiograph shows: patient anatomy, latent conditions and findings with their attributes.

Co-occurrence comes from latent conditions. Chronic ones are drawn once per patient and persist over follow-ups
(heart failure, COPD, fibrosing lung disease, neoplasm, hiatus hernia); acute ones are drawn per study (infection, a
pneumothorax event). Each finding is present with probability ``1 - (1 - base) * prod(1 - p_condition)`` over the active
conditions (:data:`FINDING_MODEL`), so e.g. effusion goes with cardiomegaly and edema, consolidation with pneumonia,
pneumothorax with emphysema. Expected prevalences are about 10-20% per finding.

Geometry is in the canonical chest frame of :mod:`datasets.synthetic.cxr_render`: ``X`` across the image in units of
the image width, 0 on the midline, negative on the image's left (= the **patient's right**, radiological
convention); ``Y`` down the image, 0 at the top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datasets.synthetic.cxr_spec import FINDINGS

__all__ = ["Anatomy", "Finding", "PatientState", "FINDING_MODEL", "sample_patient", "sample_anatomy", "sample_findings"]

CHRONIC = {"heart_failure": 0.16, "copd": 0.14, "fibrosing": 0.10, "neoplasm": 0.12, "hiatus_hernia": 0.10}
ACUTE = {"infection": 0.18, "pneumothorax_event": 0.07}

FINDING_MODEL: dict[str, tuple[float, dict[str, float]]] = {
    "Atelectasis": (0.07, {"neoplasm": 0.3, "Effusion": 0.3}),
    "Cardiomegaly": (0.05, {"heart_failure": 0.85}),
    "Effusion": (0.04, {"heart_failure": 0.55, "infection": 0.25, "neoplasm": 0.3}),
    "Infiltration": (0.08, {"infection": 0.45}),
    "Mass": (0.03, {"neoplasm": 0.6}),
    "Nodule": (0.07, {"neoplasm": 0.45}),
    "Pneumonia": (0.03, {"infection": 0.6}),
    "Pneumothorax": (0.0, {"pneumothorax_event": 1.0, "copd": 0.15}),
    "Consolidation": (0.04, {"infection": 0.5}),
    "Edema": (0.03, {"heart_failure": 0.55}),
    "Emphysema": (0.02, {"copd": 0.9}),
    "Fibrosis": (0.03, {"fibrosing": 0.85}),
    "Pleural_Thickening": (0.07, {"fibrosing": 0.35, "neoplasm": 0.15}),
    "Hernia": (0.0, {"hiatus_hernia": 1.0}),
}
"""Per finding: ``(base probability, {condition or earlier finding: probability it causes the finding})``."""

_SIDES = ("right", "left")
_ZONES = ("upper", "mid", "lower")


@dataclass
class Anatomy:
    """Normal anatomy of one study, canonical frame (see the module docstring).

    Attributes:
        lung_width: lateral lung edge at the bases, distance from the midline.
        apex: Y of the lung apices.
        base_right: Y of the top of the right hemidiaphragm dome.
        base_left: Y of the top of the left hemidiaphragm dome.
        dome_depth: how much lower the costophrenic angles are than the dome tops.
        ctr: cardiothoracic ratio (cardiac width / thoracic width).
        shift: (dx, dy) displacement of the chest in the image, image widths.
        rotation_deg: in-plane rotation.
        scale: magnification.
        exposure: (black, white, gamma) of the display mapping of the density map.
        noise_sd: standard deviation of the added quantum noise.
        spacing_mm: pixel spacing of the PNG (square pixels).
    """

    lung_width: float
    apex: float
    base_right: float
    base_left: float
    dome_depth: float
    ctr: float
    shift: tuple[float, float]
    rotation_deg: float
    scale: float
    exposure: tuple[float, float, float]
    noise_sd: float
    spacing_mm: float


@dataclass
class Finding:
    """One drawn finding.

    Attributes:
        name: one of :data:`~datasets.synthetic.cxr_spec.FINDINGS`.
        side: ``"right"``, ``"left"`` or ``"bilateral"`` (the patient's side), or None when the finding has none.
        zone: ``"upper"``, ``"mid"`` or ``"lower"`` lung zone, or None.
        size: ``"small"``, ``"moderate"`` or ``"large"``, or None.
        params: renderer parameters (canonical units) and measured values for the report (``diameter_mm``, ``ctr``).
    """

    name: str
    side: str | None = None
    zone: str | None = None
    size: str | None = None
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class PatientState:
    """What persists over a patient's follow-ups: base anatomy, sex, age and chronic conditions."""

    anatomy: Anatomy
    sex: str
    age: int
    chronic: dict[str, bool]
    chronic_findings: dict[str, Finding] = field(default_factory=dict)


def sample_anatomy(rng: np.random.Generator, field_of_view_mm: float, image_size: int, noise_sd: tuple[float, float]
                   ) -> Anatomy:
    """Draw the normal anatomy and acquisition of one study."""
    base_right = rng.uniform(0.64, 0.69)
    scale = rng.uniform(0.92, 1.06)
    return Anatomy(
        lung_width=rng.uniform(0.33, 0.38),
        apex=rng.uniform(0.14, 0.18),
        base_right=base_right,
        base_left=base_right + rng.uniform(0.015, 0.04),
        dome_depth=rng.uniform(0.05, 0.08),
        ctr=rng.uniform(0.40, 0.48),
        shift=(rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)),
        rotation_deg=rng.uniform(-4.0, 4.0),
        scale=scale,
        exposure=(rng.uniform(0.02, 0.12), rng.uniform(0.82, 0.95), rng.uniform(0.8, 1.25)),
        noise_sd=rng.uniform(*noise_sd),
        spacing_mm=round(field_of_view_mm / image_size / scale * rng.uniform(0.97, 1.03), 3),
    )


def sample_patient(rng: np.random.Generator, field_of_view_mm: float, image_size: int,
                   noise_sd: tuple[float, float]) -> PatientState:
    """Draw a patient: anatomy, sex, age and chronic conditions."""
    chronic = {name: bool(rng.random() < p) for name, p in CHRONIC.items()}
    age = int(np.clip(rng.normal(58 if any(chronic.values()) else 46, 15), 18, 95))
    return PatientState(sample_anatomy(rng, field_of_view_mm, image_size, noise_sd), str(rng.choice(["M", "F"])),
                        age, chronic)


def _follow_up_anatomy(rng: np.random.Generator, base: Anatomy, noise_sd: tuple[float, float]) -> Anatomy:
    """The patient's anatomy at a new study: same body, new positioning, inspiration and exposure."""
    inspiration = rng.uniform(-0.02, 0.02)
    scale = base.scale * rng.uniform(0.97, 1.03)
    return Anatomy(
        lung_width=base.lung_width, apex=base.apex, base_right=base.base_right + inspiration,
        base_left=base.base_left + inspiration, dome_depth=base.dome_depth, ctr=base.ctr,
        shift=(rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)), rotation_deg=rng.uniform(-4.0, 4.0), scale=scale,
        exposure=(rng.uniform(0.02, 0.12), rng.uniform(0.82, 0.95), rng.uniform(0.8, 1.25)),
        noise_sd=rng.uniform(*noise_sd), spacing_mm=round(base.spacing_mm * base.scale / scale, 3),
    )


def _side(rng: np.random.Generator, bilateral: float = 0.0) -> str:
    return "bilateral" if rng.random() < bilateral else str(rng.choice(_SIDES))


def _size(rng: np.random.Generator) -> str:
    return str(rng.choice(("small", "moderate", "large"), p=(0.4, 0.4, 0.2)))


def _attributes(name: str, rng: np.random.Generator, spacing_mm: float, image_size: int) -> Finding:
    """Side, zone, size and renderer parameters of a finding."""
    width_mm = spacing_mm * image_size
    if name == "Atelectasis":
        return Finding(name, _side(rng), str(rng.choice(("mid", "lower"), p=(0.3, 0.7))), None,
                       {"angle": rng.uniform(-0.35, 0.35), "length": rng.uniform(0.15, 0.22),
                        "thickness": rng.uniform(0.009, 0.015), "position": rng.uniform(0.35, 0.65)})
    if name == "Cardiomegaly":
        ctr = rng.uniform(0.58, 0.70)
        return Finding(name, None, None, "moderate" if ctr < 0.64 else "large", {"ctr": round(ctr, 2)})
    if name == "Effusion":
        size = _size(rng)
        height = {"small": (0.07, 0.11), "moderate": (0.13, 0.19), "large": (0.21, 0.28)}[size]
        return Finding(name, _side(rng, 0.25), None, size, {"height": rng.uniform(*height)})
    if name == "Infiltration":
        return Finding(name, _side(rng, 0.3), str(rng.choice(_ZONES)), None,
                       {"blobs": float(rng.integers(6, 12)), "amplitude": rng.uniform(0.15, 0.2),
                        "seed": float(rng.integers(2**31))})
    if name in ("Mass", "Nodule"):
        radius = rng.uniform(0.06, 0.085) if name == "Mass" else rng.uniform(0.022, 0.03)
        return Finding(name, _side(rng), str(rng.choice(_ZONES)), None,
                       {"radius": radius, "diameter_mm": round(2 * radius * width_mm),
                        "position": rng.uniform(0.3, 0.7), "height": rng.uniform(0.2, 0.8),
                        "lobulation": rng.uniform(0.0, 0.1), "phase": rng.uniform(0, 2 * np.pi)})
    if name == "Pneumonia":
        return Finding(name, _side(rng, 0.15), str(rng.choice(_ZONES, p=(0.15, 0.3, 0.55))), None,
                       {"radius": rng.uniform(0.09, 0.12), "position": rng.uniform(0.4, 0.6),
                        "seed": float(rng.integers(2**31))})
    if name == "Consolidation":
        return Finding(name, _side(rng), str(rng.choice(("upper", "lower"))), None,
                       {"fissure": rng.uniform(0.38, 0.44), "seed": float(rng.integers(2**31))})
    if name == "Pneumothorax":
        size = str(rng.choice(("small", "large"), p=(0.5, 0.5)))
        gap = rng.uniform(0.035, 0.055) if size == "small" else rng.uniform(0.07, 0.11)
        return Finding(name, _side(rng), None, size, {"gap": gap})
    if name == "Edema":
        return Finding(name, "bilateral", None, None,
                       {"amplitude": rng.uniform(0.16, 0.24), "lines": float(rng.integers(4, 7))})
    if name == "Emphysema":
        return Finding(name, "bilateral", "upper", None, {"bullae": float(rng.integers(0, 3))})
    if name == "Fibrosis":
        return Finding(name, "bilateral", "lower", None, {"cell": rng.uniform(0.024, 0.032),
                                                           "amplitude": rng.uniform(0.12, 0.17)})
    if name == "Pleural_Thickening":
        return Finding(name, _side(rng), str(rng.choice(("upper", "mid"))), None,
                       {"thickness": rng.uniform(0.02, 0.03)})
    if name == "Hernia":
        radius = rng.uniform(0.05, 0.07)
        return Finding(name, None, None, None, {"radius": radius, "diameter_mm": round(2 * radius * width_mm),
                                                "offset": rng.uniform(-0.01, 0.04)})
    raise ValueError(f"unknown finding {name!r}; expected one of {FINDINGS}")


_SAMPLING_ORDER = ("Effusion", *(name for name in FINDINGS if name != "Effusion"))  # effusion can cause atelectasis
_PERSISTENT = ("Cardiomegaly", "Emphysema", "Fibrosis", "Hernia", "Pleural_Thickening", "Mass", "Nodule")


def sample_findings(
    rng: np.random.Generator, patient: PatientState, follow_up: int, field_of_view_mm: float, image_size: int,
    noise_sd: tuple[float, float],
) -> tuple[Anatomy, list[Finding]]:
    """Draw one study of ``patient``: its anatomy and its findings (in :data:`FINDINGS` order).

    Chronic findings keep their side and size over a patient's follow-ups.
    """
    if follow_up == 0:
        anatomy = patient.anatomy
    else:
        anatomy = _follow_up_anatomy(rng, patient.anatomy, noise_sd)
    active = dict(patient.chronic) | {name: bool(rng.random() < p) for name, p in ACUTE.items()}
    findings: list[Finding] = []
    present: set[str] = set()
    for name in _SAMPLING_ORDER:
        base, causes = FINDING_MODEL[name]
        keep = 1.0 - base
        for cause, p in causes.items():
            if active.get(cause, False) or cause in present:
                keep *= 1.0 - p
        if rng.random() >= 1.0 - keep:
            continue
        present.add(name)
        if name in _PERSISTENT and name in patient.chronic_findings:
            findings.append(patient.chronic_findings[name])
            continue
        finding = _attributes(name, rng, anatomy.spacing_mm, image_size)
        if name in _PERSISTENT:
            patient.chronic_findings[name] = finding
        findings.append(finding)
    return anatomy, sorted(findings, key=lambda finding: FINDINGS.index(finding.name))
