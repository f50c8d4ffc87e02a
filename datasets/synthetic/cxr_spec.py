"""The frozen generator specification of the synthetic chest-radiograph benchmark ("synthetic-cxr").

:data:`CXR_V1` is **frozen**: results published on "synthetic-cxr v1" must stay reproducible, so its values never
change. A change to the generator's defaults or behaviour goes into a new constant
(``CXR_V2 = CXRSpec(version=2, ...)``) and both are kept; the generator refuses a spec whose version it does
not implement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CXRSpec", "CXR_V1", "CXR_SPLITS", "CXR_SUPPORTED_VERSIONS", "FINDINGS"]

CXR_SUPPORTED_VERSIONS = (1,)
CXR_SPLITS = ("train", "val", "test")

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
"""ChestX-ray14's 14 findings, in NIH / CheXNet order (the label columns everywhere in the benchmark)."""


@dataclass(frozen=True)
class CXRSpec:
    """Every parameter of the synthetic chest-radiograph benchmark.

    Findings are sampled from latent conditions (heart failure, infection, COPD, fibrosing lung disease, neoplasm;
    the chronic ones per patient, the acute ones per image), which gives the co-occurrence structure (effusion with
    cardiomegaly and edema, pneumonia with consolidation, emphysema with pneumothorax, ...). See
    :func:`datasets.synthetic.cxr_sampling.sample_findings`.

    Args:
        name: benchmark name written to ``benchmark.json``. Defaults to ``"synthetic-cxr"``.
        version: generator version; only versions in :data:`CXR_SUPPORTED_VERSIONS` can be generated. Defaults to 1.
        train_images: number of training images. Defaults to 2000.
        val_images: number of validation images. Defaults to 300.
        test_images: number of test images. Defaults to 600.
        image_size: side of the square 8-bit PNG, pixels. Defaults to 192.
        field_of_view_mm: nominal width of the imaged field; pixel spacing = field / image_size, varied per image.
            Defaults to 400.0.
        images_per_patient_probs: probabilities of 1, 2 and 3 studies (follow-ups) per patient. Defaults to
            (0.6, 0.25, 0.15).
        label_noise: probability that an image's label row differs from what is drawn in exactly one finding
            (a drawn finding dropped or an absent one added, 50/50 when both are possible). Defaults to 0.05.
        ap_fraction: fraction of AP (else PA) views. Defaults to 0.2.
        negative_mention_prob: probability that a report mentions a given absent finding. Defaults to 0.3.
        negation_prob: probability that a mentioned absent finding is written as a negation ("no pleural
            effusion") rather than as a normal description ("the costophrenic angles are sharp"). Defaults to 0.6.
        noise_sd: range of the per-image Gaussian noise standard deviation (intensity units, 1 = full scale).
            Defaults to (0.012, 0.03).
    """

    name: str = "synthetic-cxr"
    version: int = 1
    train_images: int = 2000
    val_images: int = 300
    test_images: int = 600
    image_size: int = 192
    field_of_view_mm: float = 400.0
    images_per_patient_probs: tuple[float, float, float] = (0.6, 0.25, 0.15)
    label_noise: float = 0.05
    ap_fraction: float = 0.2
    negative_mention_prob: float = 0.3
    negation_prob: float = 0.6
    noise_sd: tuple[float, float] = (0.012, 0.03)

    def __post_init__(self) -> None:
        problems = []
        for split in CXR_SPLITS:
            count = getattr(self, f"{split}_images")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                problems.append(f"{split}_images must be a non-negative integer, got {count!r}")
        if not problems and self.train_images + self.val_images + self.test_images == 0:
            problems.append("at least one image is needed (train_images + val_images + test_images is 0)")
        if not 96 <= self.image_size <= 1024:
            problems.append(f"image_size must be in [96, 1024] pixels, got {self.image_size}")
        probs = self.images_per_patient_probs
        if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
            problems.append(f"images_per_patient_probs must be 3 probabilities summing to 1, got {probs}")
        for key in ("label_noise", "ap_fraction", "negative_mention_prob", "negation_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                problems.append(f"{key} must be a probability in [0, 1], got {getattr(self, key)}")
        if problems:
            raise ValueError("invalid CXRSpec: " + "; ".join(problems))

    def images(self, split: str) -> int:
        """Number of images of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return getattr(self, f"{split}_images")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-ready values (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


CXR_V1 = CXRSpec()
"""Version 1 of the benchmark: frozen, never edit (add a v2 spec instead)."""
