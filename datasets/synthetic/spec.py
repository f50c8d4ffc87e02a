"""The frozen generator specification of the synthetic RefHL-Seg-style benchmark.

:data:`REFHL_V1` is **frozen**: results published on "refhl-synth v1" must stay reproducible, so its values never
change. A change to the generator's defaults or behaviour goes into a new constant (``REFHL_V2 = RefHLSpec(version=2,
...)``) and both are kept; the generator refuses to run a spec whose version it does not implement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RefHLSpec", "REFHL_V1", "SPLITS", "SUPPORTED_VERSIONS"]

SUPPORTED_VERSIONS = (1,)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RefHLSpec:
    """Every parameter of the synthetic referring hepatic-lesion benchmark.

    Ranges ``(low, high)`` are sampled uniformly per case (or per lesion) unless said otherwise.

    Args:
        name: benchmark name written to ``benchmark.json``. Defaults to ``"refhl-synth"``.
        version: generator version; only versions in :data:`SUPPORTED_VERSIONS` can be generated. Defaults to 1.
        train_cases: number of training cases (patients). Defaults to 120.
        val_cases: number of validation cases. Defaults to 40.
        test_cases: number of test cases. Defaults to 70.
        matrix: in-plane size of every slice, voxels along array axes 0 and 1. Defaults to 192.
        pixel_spacing_mm: range of the (square) in-plane voxel size. Defaults to (1.9, 2.1).
        slice_thickness_mm: slice spacing along array axis 2. Defaults to 5.0.
        slices_per_case: inclusive range of the number of slices per volume. Defaults to (8, 12).
        liver_hu: range of the mean liver attenuation. Defaults to (40.0, 70.0).
        vessel_contrast_hu: range of hepatic/portal vein attenuation above liver. Defaults to (40.0, 80.0).
        noise_sd_hu: range of the image noise standard deviation. Defaults to (8.0, 14.0).
        bias_field_hu: amplitude of the smooth in-plane intensity variation. Defaults to 5.0.
        lesions_per_case_probs: probabilities of 1, 2 and 3 lesions per case. Defaults to (0.15, 0.40, 0.45).
        lesion_diameter_mm: range of a lesion's nominal 3D diameter. Defaults to (6.0, 40.0).
        lesion_diameter_beta: Beta(a, b) shape of the diameter inside that range (favours visible lesions).
            Defaults to (1.6, 1.2).
        lesion_contrast_hu: range of the absolute lesion-to-liver contrast. Defaults to (15.0, 80.0).
        hypodense_fraction: probability that a lesion is hypodense (else hyperdense). Defaults to 0.6.
        min_cross_section_mm2: smallest lesion cross-section kept in a slice; smaller end caps are not drawn, so
            every lesion present in a slice is large enough to be referred to. Defaults to 20.0.
        min_cross_section_fraction: same, relative to the lesion's largest cross-section. Defaults to 0.35.
        size_ratio_margin: two lesions differ in size only if their in-slice areas differ by this factor.
            Defaults to 1.4.
        position_margin_mm: two lesions differ in position only if their centroids are this far apart along the
            compared world axis. Defaults to 10.0.
        expressions_per_lesion: expressions written per (lesion, slice) in the train, val and test splits.
            Defaults to (2, 1, 1).
    """

    name: str = "refhl-synth"
    version: int = 1
    train_cases: int = 120
    val_cases: int = 40
    test_cases: int = 70
    matrix: int = 192
    pixel_spacing_mm: tuple[float, float] = (1.9, 2.1)
    slice_thickness_mm: float = 5.0
    slices_per_case: tuple[int, int] = (8, 12)
    liver_hu: tuple[float, float] = (40.0, 70.0)
    vessel_contrast_hu: tuple[float, float] = (40.0, 80.0)
    noise_sd_hu: tuple[float, float] = (8.0, 14.0)
    bias_field_hu: float = 5.0
    lesions_per_case_probs: tuple[float, float, float] = (0.15, 0.40, 0.45)
    lesion_diameter_mm: tuple[float, float] = (6.0, 40.0)
    lesion_diameter_beta: tuple[float, float] = (1.6, 1.2)
    lesion_contrast_hu: tuple[float, float] = (15.0, 80.0)
    hypodense_fraction: float = 0.6
    min_cross_section_mm2: float = 20.0
    min_cross_section_fraction: float = 0.35
    size_ratio_margin: float = 1.4
    position_margin_mm: float = 10.0
    expressions_per_lesion: tuple[int, int, int] = (2, 1, 1)

    def __post_init__(self) -> None:
        problems = []
        for split in SPLITS:
            cases = getattr(self, f"{split}_cases")
            if not isinstance(cases, int) or cases < 0:
                problems.append(f"{split}_cases must be a non-negative integer, got {cases!r}")
        if not problems and self.train_cases + self.val_cases + self.test_cases == 0:
            problems.append("at least one case is needed (train_cases + val_cases + test_cases is 0)")
        if self.matrix < 96:
            problems.append(f"matrix must be at least 96 voxels to hold the phantom, got {self.matrix}")
        if not 1 <= self.slices_per_case[0] <= self.slices_per_case[1]:
            problems.append(f"slices_per_case must be (low, high) with 1 <= low <= high, got {self.slices_per_case}")
        if len(self.lesions_per_case_probs) != 3 or abs(sum(self.lesions_per_case_probs) - 1.0) > 1e-6:
            problems.append(
                f"lesions_per_case_probs must be 3 probabilities summing to 1, got {self.lesions_per_case_probs}"
            )
        if not 0 < self.lesion_diameter_mm[0] <= self.lesion_diameter_mm[1]:
            problems.append(
                f"lesion_diameter_mm must be (low, high) with 0 < low <= high, got {self.lesion_diameter_mm}"
            )
        if len(self.expressions_per_lesion) != 3 or min(self.expressions_per_lesion) < 1:
            problems.append(
                f"expressions_per_lesion must be 3 counts >= 1 (train, val, test), got {self.expressions_per_lesion}"
            )
        if problems:
            raise ValueError("invalid RefHLSpec: " + "; ".join(problems))

    def cases(self, split: str) -> int:
        """Number of cases of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return getattr(self, f"{split}_cases")

    def expressions(self, split: str) -> int:
        """Number of expressions per (lesion, slice) in ``split``."""
        return self.expressions_per_lesion[SPLITS.index(split)]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-ready values (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


REFHL_V1 = RefHLSpec()
"""Version 1 of the benchmark: frozen, never edit (add a v2 spec instead)."""
