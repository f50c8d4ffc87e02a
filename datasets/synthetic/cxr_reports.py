"""Free-text reports (findings + impression) of the synthetic chest radiographs.

Every finding has at least three paraphrases for the findings section and three for the impression, none of them a
"There is <finding>" sentence, so the benchmark prompts (``configs/prompts/synthetic-cxr.txt``) never occur in the
training text. Sides are the patient's. An absent finding is mentioned with probability ``negative_mention_prob``,
written either as a negation ("No pleural effusion.") or as a normal description ("The costophrenic angles are
sharp."); normal studies get normal reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.synthetic.cxr_sampling import Finding
from datasets.synthetic.cxr_spec import FINDINGS

__all__ = ["Report", "Mention", "POSITIVE", "IMPRESSION", "NEGATION", "NORMAL", "NORMAL_IMPRESSION", "write_report"]

POSITIVE: dict[str, tuple[str, ...]] = {
    "Atelectasis": (
        "Linear opacity at the {side} {zone} zone in keeping with subsegmental atelectasis.",
        "Plate-like atelectasis in the {side} {zone} zone with mild elevation of the {side} hemidiaphragm.",
        "Band-like atelectatic change in the {side} {zone} lung.",
        "Discoid atelectasis is seen in the {side} {zone} zone.",
    ),
    "Cardiomegaly": (
        "The cardiac silhouette is enlarged, cardiothoracic ratio about {ctr}.",
        "The heart is enlarged.",
        "Enlarged cardiac silhouette, cardiothoracic ratio approximately {ctr}.",
        "Cardiomegaly is noted.",
    ),
    "Effusion": (
        "{Size} {side} pleural effusion with blunting of the costophrenic angle.",
        "Meniscus-shaped opacity at the {side} base consistent with a {size} pleural effusion.",
        "{Size} {side} effusion layering at the lung base.",
        "Blunting of the {side} costophrenic angle due to pleural fluid.",
    ),
    "Infiltration": (
        "Patchy ill-defined infiltrates in the {side} {zone} zone.",
        "Scattered hazy infiltrative opacities in the {side} {zone} lung.",
        "Ill-defined patchy infiltration of the {side} {zone} zone.",
    ),
    "Mass": (
        "A {diameter} mm rounded mass in the {side} {zone} zone.",
        "Well-circumscribed mass measuring about {diameter} mm in the {side} {zone} lung.",
        "Large rounded opacity of the {side} {zone} zone, {diameter} mm, suspicious for a mass.",
    ),
    "Nodule": (
        "A {diameter} mm pulmonary nodule in the {side} {zone} zone.",
        "Small rounded nodular opacity in the {side} {zone} lung, {diameter} mm.",
        "Solitary {side} {zone} zone nodule measuring {diameter} mm.",
    ),
    "Pneumonia": (
        "Fluffy airspace opacity in the {side} {zone} zone compatible with pneumonia.",
        "Confluent patchy opacity of the {side} {zone} lung suggesting pneumonia.",
        "{Side} {zone} zone airspace disease in keeping with pneumonic infection.",
    ),
    "Pneumothorax": (
        "{Size} {side} pneumothorax with a visible visceral pleural line.",
        "{Side} apical and lateral pneumothorax, {size}, without mediastinal shift.",
        "A {size} {side} pneumothorax is present, no lung markings beyond the pleural edge.",
    ),
    "Consolidation": (
        "Dense consolidation of the {side} {zone} lobe with air bronchograms.",
        "Lobar consolidation in the {side} {zone} lobe, sharply marginated by the fissure.",
        "Homogeneous {side} {zone} lobe airspace consolidation containing air bronchograms.",
    ),
    "Edema": (
        "Bilateral perihilar haziness and Kerley B lines consistent with pulmonary edema.",
        "Interstitial edema with septal lines at both bases and perihilar haze.",
        "Perihilar bat-wing opacities with Kerley lines, compatible with edema.",
    ),
    "Emphysema": (
        "Hyperinflated lungs with flattened hemidiaphragms and hyperlucency, consistent with emphysema.",
        "Emphysematous changes with increased lung volumes and attenuated vascular markings.",
        "The lungs are hyperexpanded and lucent with flattened diaphragms, in keeping with emphysema.",
    ),
    "Fibrosis": (
        "Coarse reticular opacities at both lung bases peripherally, consistent with fibrosis.",
        "Basal predominant reticulation with reduced lung volumes suggesting pulmonary fibrosis.",
        "Peripheral reticular fibrotic change at both bases.",
    ),
    "Pleural_Thickening": (
        "Smooth {side} {where} pleural thickening.",
        "Pleural thickening along the {side} {where} chest wall.",
        "{Side} {where} pleural thickening, smooth in contour.",
    ),
    "Hernia": (
        "Retrocardiac opacity with an air-fluid level consistent with a hiatal hernia.",
        "A {diameter} mm hiatus hernia is seen behind the heart, containing an air-fluid level.",
        "Rounded retrocardiac soft-tissue density with a gas-fluid level, a hiatal hernia.",
    ),
}
"""Findings-section paraphrases per finding; ``{side}`` is the patient's side (``{Side}`` capitalised)."""

IMPRESSION: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("{Side} basal atelectasis.", "Subsegmental atelectasis, {side}.",
                    "Atelectatic change on the {side}."),
    "Cardiomegaly": ("Cardiomegaly.", "Enlarged heart.", "Cardiac enlargement."),
    "Effusion": ("{Side} pleural effusion.", "{Size} {side} effusion.", "Pleural fluid on the {side}."),
    "Infiltration": ("{Side} {zone} zone infiltrates.", "Patchy {side} infiltration.",
                     "Infiltrative opacities, {side}."),
    "Mass": ("{Side} lung mass, further evaluation with CT advised.", "{Side} {zone} zone mass.",
             "Pulmonary mass on the {side}."),
    "Nodule": ("{Side} pulmonary nodule, follow-up CT suggested.", "Solitary {side} lung nodule.",
               "{Side} {zone} zone nodule."),
    "Pneumonia": ("{Side} {zone} zone pneumonia.", "Findings suggest {side} pneumonia.",
                  "Pneumonic consolidation on the {side}."),
    "Pneumothorax": ("{Size} {side} pneumothorax.", "{Side} pneumothorax.", "Pneumothorax on the {side}."),
    "Consolidation": ("{Side} {zone} lobe consolidation.", "Lobar consolidation, {side} {zone}.",
                      "Airspace consolidation of the {side} {zone} lobe."),
    "Edema": ("Pulmonary edema.", "Interstitial pulmonary edema.", "Findings of fluid overload with edema."),
    "Emphysema": ("Emphysema.", "Hyperinflation from emphysema.", "Emphysematous lungs."),
    "Fibrosis": ("Basal pulmonary fibrosis.", "Fibrotic lung disease.", "Bibasal fibrosis."),
    "Pleural_Thickening": ("{Side} pleural thickening.", "Pleural thickening on the {side}.",
                           "Thickened {side} pleura."),
    "Hernia": ("Hiatal hernia.", "Hiatus hernia.", "Small sliding hiatal hernia."),
}
"""Impression paraphrases per finding."""

NEGATION: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("No atelectasis.", "No evidence of atelectasis."),
    "Cardiomegaly": ("No cardiomegaly.", "The heart is not enlarged."),
    "Effusion": ("No pleural effusion.", "Without pleural effusion.", "No evidence of effusion."),
    "Infiltration": ("No infiltrate.", "Without focal infiltrates."),
    "Mass": ("No lung mass.", "No evidence of a pulmonary mass."),
    "Nodule": ("No pulmonary nodule.", "No suspicious nodules."),
    "Pneumonia": ("No pneumonia.", "No evidence of pneumonia."),
    "Pneumothorax": ("No pneumothorax.", "Without pneumothorax.", "No evidence of pneumothorax."),
    "Consolidation": ("The lungs are clear of consolidation.", "No focal consolidation."),
    "Edema": ("No pulmonary edema.", "No signs of edema."),
    "Emphysema": ("No emphysema.", "No hyperinflation."),
    "Fibrosis": ("No fibrosis.", "No reticular or fibrotic change."),
    "Pleural_Thickening": ("No pleural thickening.", "Without pleural thickening."),
    "Hernia": ("No hiatal hernia.", "No retrocardiac hernia."),
}
"""Negated mentions of an absent finding."""

NORMAL: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("Lung volumes are normal.",),
    "Cardiomegaly": ("Heart size is normal.", "The cardiomediastinal silhouette is within normal limits."),
    "Effusion": ("The costophrenic angles are sharp.",),
    "Infiltration": ("The lung fields are clear.",),
    "Mass": ("The lung parenchyma appears unremarkable.",),
    "Nodule": ("The lung parenchyma appears unremarkable.",),
    "Pneumonia": ("The lungs are clear.",),
    "Pneumothorax": ("Lung markings extend to the chest wall on both sides.",),
    "Consolidation": ("The lungs are clear.",),
    "Edema": ("Pulmonary vasculature is normal.",),
    "Emphysema": ("Lung volumes are normal.",),
    "Fibrosis": ("The interstitium appears normal.",),
    "Pleural_Thickening": ("The pleural surfaces are smooth.",),
    "Hernia": ("The retrocardiac region is unremarkable.",),
}
"""Normal descriptions standing for an absent finding (no negation word)."""

_GENERIC = {
    "Lung volumes are normal.", "The lung fields are clear.", "The lung parenchyma appears unremarkable.",
    "The lungs are clear.",
}  # normal descriptions of the whole lung: used only for studies without findings

NORMAL_FINDINGS = (
    ("The lungs are clear.", "Heart size is normal.", "The costophrenic angles are sharp."),
    ("Lungs are well expanded and clear.", "The cardiomediastinal silhouette is within normal limits."),
    ("Clear lungs bilaterally.", "Normal heart size.", "Bony thorax is intact."),
)
NORMAL_IMPRESSION = ("No acute cardiopulmonary abnormality.", "Normal chest radiograph.", "No active disease.")


@dataclass(frozen=True)
class Mention:
    """One statement about a finding: ``kind`` is ``"positive"``, ``"negation"`` or ``"normal"``."""

    finding: str
    kind: str


@dataclass(frozen=True)
class Report:
    """A report: ``findings`` and ``impression`` sections and the statements they make."""

    findings: str
    impression: str
    mentions: tuple[Mention, ...]


def _fill(template: str, finding: Finding) -> str:
    side = finding.side or "right"
    size = finding.size or "small"
    where = "apical" if finding.zone == "upper" else "lateral"
    values = {
        "side": side, "Side": side.capitalize(), "zone": finding.zone or "lower", "size": size,
        "Size": size.capitalize(), "where": where, "ctr": f"{finding.params.get('ctr', 0.0):.2f}",
        "diameter": str(int(finding.params.get("diameter_mm", 0))),
    }
    return template.format(**values)


def write_report(findings: list[Finding], rng: np.random.Generator, negative_mention_prob: float,
                 negation_prob: float) -> Report:
    """Write the report of a study from its drawn findings.

    Args:
        findings: the drawn findings.
        rng: random generator.
        negative_mention_prob: probability of mentioning each absent finding.
        negation_prob: probability that a mentioned absent finding is negated (else normally described).

    Returns:
        The report; an empty finding list gives a normal report.
    """
    present = {finding.name for finding in findings}
    mentions: list[Mention] = []
    sentences: list[str] = []
    for finding in findings:
        options = POSITIVE[finding.name]
        sentences.append(_fill(options[rng.integers(len(options))], finding))
        mentions.append(Mention(finding.name, "positive"))
    if not findings:
        sentences.extend(NORMAL_FINDINGS[rng.integers(len(NORMAL_FINDINGS))])
    said: set[str] = set(sentences)
    for name in FINDINGS:
        if name in present or rng.random() >= negative_mention_prob:
            continue
        negated = rng.random() < negation_prob
        options = NEGATION[name] if negated else NORMAL[name]
        text = options[rng.integers(len(options))]
        if findings and text in _GENERIC:
            negated, text = True, NEGATION[name][0]
        mentions.append(Mention(name, "negation" if negated else "normal"))
        if text not in said:
            said.add(text)
            sentences.append(text)
    if findings:
        impression = " ".join(_fill(IMPRESSION[f.name][rng.integers(3)], f) for f in findings)
    else:
        impression = NORMAL_IMPRESSION[rng.integers(len(NORMAL_IMPRESSION))]
    return Report(" ".join(sentences), impression, tuple(mentions))
