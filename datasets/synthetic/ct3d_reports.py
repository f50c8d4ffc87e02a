"""CT-RATE-style free-text reports of the synthetic chest CTs (``Findings_EN``, ``Impressions_EN`` and the rest).

Every finding has at least three findings-section paraphrases and three impression phrases, none of them a
"There is <finding>" sentence, so the benchmark prompts (``configs/prompts/ct-rate.txt``) never occur in the text.
Sides are the patient's and are named wherever the drawn finding has one. An absent finding is mentioned with
probability ``negative_mention_prob``: as a negation ("No pleural effusion.", "... without emphysema.") with
probability ``negation_prob``, else as a normal description. Reports describe what is drawn (no label noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.synthetic.ct3d_sampling import Finding

__all__ = ["Report", "POSITIVE", "IMPRESSION", "NEGATION", "NORMAL", "CLINICAL", "TECHNIQUE", "write_report"]

POSITIVE: dict[str, tuple[str, ...]] = {
    "Medical material": (
        "A {device} is seen in the {side} anterior chest wall with its lead extending into the right heart.",
        "{Device} in the {side} infraclavicular region, lead tip projecting over the right cardiac chambers.",
        "Metallic {device} with a catheter coursing through the superior vena cava.",
        "Postoperative metallic foreign material is present: {device}.",
    ),
    "Arterial wall calcification": (
        "Atherosclerotic calcified plaques are seen in the thoracic aorta.",
        "Calcification of the aortic wall is noted along the arch and descending aorta.",
        "Scattered mural calcific foci in the thoracic aorta.",
    ),
    "Cardiomegaly": (
        "The heart is enlarged; cardiothoracic ratio increased.",
        "Cardiac dimensions are increased, consistent with enlargement of the heart.",
        "Heart size is increased.",
    ),
    "Pericardial effusion": (
        "Pericardial fluid measuring up to {size} mm in thickness.",
        "Fluid is seen in the pericardial space, about {size} mm thick.",
        "A pericardial effusion with a maximal thickness of {size} mm is noted.",
    ),
    "Coronary artery wall calcification": (
        "Calcified plaques are present in the coronary arteries.",
        "Coronary arterial wall calcifications are seen.",
        "Atherosclerotic calcification along the coronary artery course.",
    ),
    "Hiatal hernia": (
        "A hiatal hernia measuring about {size} mm with air and fluid is seen behind the heart.",
        "Part of the stomach herniates through the oesophageal hiatus, a {size} mm retrocardiac sac with an air-fluid "
        "level.",
        "Sliding hernia at the oesophageal hiatus, {size} mm.",
    ),
    "Lymphadenopathy": (
        "Enlarged mediastinal and hilar lymph nodes, the largest with a short axis of {size} mm.",
        "Pathologically enlarged lymph nodes are seen in the mediastinum, up to {size} mm.",
        "Mediastinal lymph nodes of increased size, largest {size} mm in short axis.",
    ),
    "Emphysema": (
        "Centrilobular emphysematous changes are seen in both lungs, more prominent in the upper lobes.",
        "Low-attenuation areas consistent with emphysema in both upper lobes.",
        "Emphysematous destruction of the lung parenchyma, upper-zone predominant.",
    ),
    "Atelectasis": (
        "Plate-like atelectasis in the {side} lung {zone} zone.",
        "Subsegmental atelectatic band in the {zone} part of the {side} lung.",
        "Linear atelectasis is observed in the posterior {side} {zone} lung.",
    ),
    "Lung nodule": (
        "A {size} mm solid nodule is seen in the {side} lung {zone} zone.",
        "Solid pulmonary nodule measuring {size} mm in the {zone} zone of the {side} lung.",
        "Round nodular opacity of {size} mm in the {side} {zone} lung.",
    ),
    "Lung opacity": (
        "Ground-glass opacities are seen in the {side} lung {zone} zone.",
        "Patchy ground-glass densities in the {zone} part of the {side} lung.",
        "Areas of increased density with ground-glass appearance in the {side} {zone} lung.",
    ),
    "Pulmonary fibrotic sequela": (
        "Fibrotic parenchymal bands are seen in the {side} lung {zone} zone, consistent with sequelae.",
        "Sequelae fibrotic changes with linear scarring in the {zone} zone of the {side} lung.",
        "Subpleural fibrous bands in the {side} {zone} lung, sequela changes.",
    ),
    "Pleural effusion": (
        "{Side} pleural effusion measuring {size} mm in depth.",
        "Pleural fluid is present on the {side_word}, about {size} mm thick.",
        "{Side} effusion layering posteriorly in the pleural space, {size} mm.",
    ),
    "Mosaic attenuation pattern": (
        "Mosaic attenuation pattern is seen in both lungs.",
        "Areas of heterogeneous parenchymal density giving a mosaic appearance in both lungs.",
        "Patchy alternating low and high attenuation areas (mosaic pattern) throughout both lungs.",
    ),
    "Peribronchial thickening": (
        "Peribronchial thickening is seen in the {side_word}.",
        "Bronchial walls are thickened, with peribronchial cuffing in the {side_word}.",
        "Thickened bronchial walls are noted in the {side_word}.",
    ),
    "Consolidation": (
        "Consolidation with air bronchograms in the {side} lung {zone} zone.",
        "Dense consolidative area in the {zone} part of the {side} lung.",
        "Parenchymal consolidation is present in the {side} {zone} lung.",
    ),
    "Bronchiectasis": (
        "Cylindrical bronchiectasis is seen in the {side} lung {zone} zone.",
        "Dilated bronchi, wider than the accompanying arteries, in the {zone} part of the {side} lung.",
        "Bronchiectatic changes in the {side} {zone} lung.",
    ),
    "Interlobular septal thickening": (
        "Interlobular septal thickening is seen in the lower parts of both lungs.",
        "Thickened interlobular septa forming a reticular network at both lung bases.",
        "Smooth septal thickening in the peripheral lower zones of both lungs.",
    ),
}
"""Findings-section paraphrases (slots ``{side}``, ``{Side}``, ``{side_word}``, ``{zone}``, ``{size}``,
``{device}``, ``{Device}``)."""

IMPRESSION: dict[str, tuple[str, ...]] = {
    "Medical material": ("{Device} in place.", "Medical device: {device}.", "Metallic {device}."),
    "Arterial wall calcification": ("Aortic atherosclerosis.", "Calcified aortic plaques.",
                                    "Atherosclerotic changes of the aorta."),
    "Cardiomegaly": ("Enlarged heart.", "Increased cardiac size.", "Cardiac enlargement."),
    "Pericardial effusion": ("Pericardial fluid.", "Fluid in the pericardium.", "Pericardial effusion, {size} mm."),
    "Coronary artery wall calcification": ("Coronary calcification.", "Calcified coronary plaques.",
                                           "Coronary atherosclerosis."),
    "Hiatal hernia": ("Hiatal hernia.", "Hernia at the oesophageal hiatus.", "Small sliding hiatus hernia."),
    "Lymphadenopathy": ("Mediastinal lymphadenopathy.", "Enlarged mediastinal lymph nodes.",
                        "Pathological mediastinal lymph nodes."),
    "Emphysema": ("Emphysema.", "Emphysematous lungs.", "Centrilobular emphysema."),
    "Atelectasis": ("{Side} atelectasis.", "Atelectatic changes on the {side_word}.", "Subsegmental atelectasis."),
    "Lung nodule": ("{Side} pulmonary nodule, {size} mm.", "Solid nodule in the {side} lung.",
                    "Nodule of {size} mm; follow-up recommended."),
    "Lung opacity": ("Ground-glass opacity on the {side_word}.", "{Side} ground-glass densities.",
                     "Ground-glass areas in the {side} lung."),
    "Pulmonary fibrotic sequela": ("Fibrotic sequelae.", "{Side} sequela fibrotic bands.",
                                   "Post-inflammatory fibrotic changes."),
    "Pleural effusion": ("{Side} pleural effusion.", "Pleural fluid on the {side_word}.", "{Side} effusion."),
    "Mosaic attenuation pattern": ("Mosaic attenuation.", "Mosaic perfusion pattern.",
                                   "Heterogeneous lung attenuation in a mosaic pattern."),
    "Peribronchial thickening": ("Peribronchial thickening.", "Bronchial wall thickening.",
                                 "Peribronchial cuffing."),
    "Consolidation": ("{Side} consolidation.", "Consolidation in the {side} lung, infection?",
                      "Pneumonic consolidation on the {side_word}."),
    "Bronchiectasis": ("{Side} bronchiectasis.", "Bronchiectatic changes.", "Bronchial dilatation."),
    "Interlobular septal thickening": ("Septal thickening.", "Interlobular septal thickening at the bases.",
                                       "Thickened interlobular septa."),
}

NEGATION: dict[str, tuple[str, ...]] = {
    "Medical material": ("No medical device or foreign material.", "No metallic foreign body."),
    "Arterial wall calcification": ("No calcification in the aortic wall.", "Aorta without atherosclerotic plaque."),
    "Cardiomegaly": ("No cardiomegaly.", "Heart without enlargement."),
    "Pericardial effusion": ("No pericardial effusion.", "No fluid in the pericardial space."),
    "Coronary artery wall calcification": ("No coronary calcification.", "Coronary arteries without calcified plaque."),
    "Hiatal hernia": ("No hiatal hernia.", "Oesophageal hiatus without herniation."),
    "Lymphadenopathy": ("No lymphadenopathy.", "No enlarged mediastinal lymph node."),
    "Emphysema": ("No emphysema.", "Lung parenchyma without emphysema."),
    "Atelectasis": ("No atelectasis.", "Lungs expanded without atelectasis."),
    "Lung nodule": ("No pulmonary nodule.", "No nodule in either lung."),
    "Lung opacity": ("No ground-glass opacity.", "No parenchymal opacity."),
    "Pulmonary fibrotic sequela": ("No fibrotic sequelae.", "No parenchymal scarring."),
    "Pleural effusion": ("No pleural effusion.", "Pleural spaces without effusion."),
    "Mosaic attenuation pattern": ("No mosaic attenuation.", "Lung attenuation homogeneous, without mosaic pattern."),
    "Peribronchial thickening": ("No peribronchial thickening.", "Bronchial walls without thickening."),
    "Consolidation": ("No consolidation.", "Lungs without consolidation."),
    "Bronchiectasis": ("No bronchiectasis.", "Bronchi of normal calibre, without bronchiectasis."),
    "Interlobular septal thickening": ("No septal thickening.", "Interlobular septa without thickening."),
}

NORMAL: dict[str, str] = {
    "Medical material": "The chest wall soft tissues are unremarkable.",
    "Arterial wall calcification": "The thoracic aorta has a normal calibre and smooth wall.",
    "Cardiomegaly": "Heart size is normal.",
    "Pericardial effusion": "The pericardium is thin.",
    "Coronary artery wall calcification": "The coronary arteries are unremarkable.",
    "Hiatal hernia": "The oesophagus is of normal calibre.",
    "Lymphadenopathy": "Mediastinal and hilar lymph nodes are of normal size.",
    "Emphysema": "Lung parenchyma shows normal attenuation.",
    "Atelectasis": "Both lungs are well expanded.",
    "Lung nodule": "Both lungs are clear of focal lesions.",
    "Lung opacity": "Lung fields are clear.",
    "Pulmonary fibrotic sequela": "Lung parenchyma is free of scarring.",
    "Pleural effusion": "The pleural spaces are clear.",
    "Mosaic attenuation pattern": "Lung attenuation is homogeneous.",
    "Peribronchial thickening": "The airways are patent with thin walls.",
    "Consolidation": "The lungs are aerated throughout.",
    "Bronchiectasis": "The bronchi are of normal calibre.",
    "Interlobular septal thickening": "The interstitium is unremarkable.",
}

CLINICAL = ("Cough.", "Shortness of breath.", "Follow-up.", "Chest pain.", "Fever and cough.", "Not given.",
            "Oncology staging.", "Preoperative evaluation.")
TECHNIQUE = ("Non-contrast chest CT, axial {thickness:g} mm sections from the lung apices to the upper abdomen.",
             "Thorax CT without contrast medium, {thickness:g} mm axial reconstructions.")

_GROUPS = (
    ("Trachea and both main bronchi are patent.", ("Peribronchial thickening", "Bronchiectasis")),
    ("", ("Cardiomegaly", "Pericardial effusion", "Arterial wall calcification", "Coronary artery wall calcification",
          "Lymphadenopathy", "Hiatal hernia", "Medical material")),
    ("", ("Emphysema", "Mosaic attenuation pattern", "Lung nodule", "Lung opacity", "Consolidation", "Atelectasis",
          "Pulmonary fibrotic sequela", "Interlobular septal thickening")),
    ("", ("Pleural effusion",)),
)


@dataclass(frozen=True)
class Report:
    """One report: the four CT-RATE text columns and what was said about each finding.

    Attributes:
        clinical: ``ClinicalInformation_EN``.
        technique: ``Technique_EN``.
        findings: ``Findings_EN``.
        impression: ``Impressions_EN``.
        mentions: ``{finding: "positive" | "negation" | "normal"}`` for every finding mentioned.
    """

    clinical: str
    technique: str
    findings: str
    impression: str
    mentions: dict[str, str]


def _fill(template: str, f: Finding) -> str:
    side = f.side if f.side in ("right", "left") else "bilateral"
    side_word = {"right": "right", "left": "left"}.get(str(f.side), "both sides")
    size = "" if f.size_mm is None else f"{f.size_mm:g}"
    device = f.kind or "device"
    text = template.format(side=side, Side=side.capitalize(), side_word=side_word, zone=f.zone or "lower",
                           size=size, device=device, Device=device.capitalize())
    return text.replace("bilateral lung", "both lungs").replace("on the both sides", "on both sides")


def write_report(findings: list[Finding], rng: np.random.Generator, slice_mm: float, negative_mention_prob: float,
                 negation_prob: float) -> Report:
    """Write the report of a scan showing ``findings``."""
    drawn = {f.name: f for f in findings}
    mentions: dict[str, str] = {}
    sentences: list[str] = []
    for opener, names in _GROUPS:
        if opener:
            sentences.append(opener)
        for name in names:
            if name in drawn:
                options = POSITIVE[name]
                if name == "Medical material" and drawn[name].kind == "sternotomy wires":
                    options = ("Sternotomy wires are seen.", "Median sternotomy with metallic wire sutures.",
                               "Status post sternotomy; sternal wires in place.")
                sentences.append(_fill(str(rng.choice(options)), drawn[name]))
                mentions[name] = "positive"
            elif rng.random() < negative_mention_prob:
                if rng.random() < negation_prob:
                    sentences.append(str(rng.choice(NEGATION[name])))
                    mentions[name] = "negation"
                else:
                    sentences.append(NORMAL[name])
                    mentions[name] = "normal"
    sentences.append("Visualised upper abdominal organs are unremarkable. No lytic or destructive bone lesion.")
    if findings:
        impression = " ".join(_fill(str(rng.choice(IMPRESSION[f.name])), f) for f in findings)
    else:
        impression = str(rng.choice(("No significant abnormality.", "Normal chest CT.",
                                     "No acute cardiopulmonary pathology.")))
    technique = str(rng.choice(TECHNIQUE)).format(thickness=slice_mm)
    return Report(str(rng.choice(CLINICAL)), technique, " ".join(sentences), impression, mentions)

