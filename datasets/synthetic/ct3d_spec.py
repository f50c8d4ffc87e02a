"""The frozen generator specification of the synthetic 3D chest CT benchmark ("synthetic-ct3d", BrgSA demo data).

:data:`CT3D_V1` is **frozen**: results published on "synthetic-ct3d v1" must stay reproducible, so its values never
change. A change to the generator's defaults or behaviour goes into a new constant (``CT3D_V2 = CT3DSpec(version=2,
...)``) and both are kept; the generator refuses a spec whose version it does not implement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from datasets.labels.ctrate import CLASSES

__all__ = ["CT3DSpec", "CT3D_V1", "CT3D_SPLITS", "CT3D_SUPPORTED_VERSIONS", "FINDINGS"]

CT3D_SUPPORTED_VERSIONS = (1,)
CT3D_SPLITS = ("train", "val", "test")

FINDINGS = tuple(CLASSES)
"""CT-RATE's 18 abnormalities in CT-RATE order (the label columns everywhere in the benchmark)."""


@dataclass(frozen=True)
class CT3DSpec:
    """Every parameter of the synthetic 3D chest CT benchmark.

    Split sizes count volumes. Patients are planned split by split until the count is reached, so a split never
    shares a patient with another. ``train`` and ``val`` volumes are both named ``train_*`` (CT-RATE's training
    files); ``test`` volumes are named ``valid_*`` (CT-RATE's validation files, the zero-shot test set).

    Args:
        name: benchmark name written to ``benchmark.json``. Defaults to ``"synthetic-ct3d"``.
        version: generator version; only versions in :data:`CT3D_SUPPORTED_VERSIONS` can be generated. Defaults to 1.
        train_volumes: number of training volumes. Defaults to 300.
        val_volumes: number of validation (model selection) volumes, from patients apart from the training ones.
            Defaults to 50.
        test_volumes: number of zero-shot test volumes. Defaults to 100.
        matrix: voxels along array axes 0 and 1 (x, y). Defaults to 104.
        slices: voxels along array axis 2 (z). Defaults to 48.
        pixel_spacing_mm: range of the square in-plane voxel size, sampled per scan. Defaults to (3.2, 3.5).
        slice_spacing_mm: slice spacing along z. Defaults to 6.0.
        scans_per_patient_probs: probabilities of 1 and 2 scans (``a``, ``b``) per patient. Defaults to (0.8, 0.2).
        reconstructions_probs: probabilities of 1 and 2 reconstructions (``_1``, ``_2``: the same scan with a
            smooth and a sharp kernel) per scan. Defaults to (0.85, 0.15).
        noise_sd_hu: range of the smooth-kernel noise standard deviation inside the body, in HU at this voxel size
            (thin-slice noise of about 11-23 HU averaged over 3.3 x 3.3 x 6 mm voxels). Defaults to (1.0, 2.0).
        sharp_noise_factor: noise multiplier of the sharp-kernel reconstruction. Defaults to 1.5.
        label_noise: probability that a scan's label row differs from what is drawn in exactly one finding (a drawn
            finding dropped or an absent one added, 50/50 when both are possible). Defaults to 0.05.
        negative_mention_prob: probability that a report mentions a given absent finding. Defaults to 0.35.
        negation_prob: probability that a mentioned absent finding is written as a negation ("no pleural
            effusion") rather than as a normal description. Defaults to 0.7.
    """

    name: str = "synthetic-ct3d"
    version: int = 1
    train_volumes: int = 300
    val_volumes: int = 50
    test_volumes: int = 100
    matrix: int = 104
    slices: int = 48
    pixel_spacing_mm: tuple[float, float] = (3.2, 3.5)
    slice_spacing_mm: float = 6.0
    scans_per_patient_probs: tuple[float, float] = (0.8, 0.2)
    reconstructions_probs: tuple[float, float] = (0.85, 0.15)
    noise_sd_hu: tuple[float, float] = (1.0, 2.0)
    sharp_noise_factor: float = 1.5
    label_noise: float = 0.05
    negative_mention_prob: float = 0.35
    negation_prob: float = 0.7

    def __post_init__(self) -> None:
        problems = []
        for split in CT3D_SPLITS:
            count = getattr(self, f"{split}_volumes")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                problems.append(f"{split}_volumes must be a non-negative integer, got {count!r}")
        if not problems and self.train_volumes + self.val_volumes + self.test_volumes == 0:
            problems.append("at least one volume is needed (train_volumes + val_volumes + test_volumes is 0)")
        if not 96 <= self.matrix <= 512:
            problems.append(f"matrix must be in [96, 512] voxels, got {self.matrix}")
        if not 48 <= self.slices <= 256:
            problems.append(f"slices must be in [48, 256], got {self.slices}")
        if not 0 < self.pixel_spacing_mm[0] <= self.pixel_spacing_mm[1]:
            problems.append(f"pixel_spacing_mm must be (low, high) with 0 < low <= high, got {self.pixel_spacing_mm}")
        for key in ("scans_per_patient_probs", "reconstructions_probs"):
            probs = getattr(self, key)
            if len(probs) != 2 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
                problems.append(f"{key} must be 2 probabilities summing to 1, got {probs}")
        for key in ("label_noise", "negative_mention_prob", "negation_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                problems.append(f"{key} must be a probability in [0, 1], got {getattr(self, key)}")
        if problems:
            raise ValueError("invalid CT3DSpec: " + "; ".join(problems))

    def volumes(self, split: str) -> int:
        """Number of volumes of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return getattr(self, f"{split}_volumes")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-ready values (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


CT3D_V1 = CT3DSpec()
"""Version 1 of the benchmark: frozen, never edit (add a v2 spec instead)."""
