"""Rendering of one synthetic chest CT scan: normal anatomy plus drawn findings, then noisy reconstructions in HU."""

from __future__ import annotations

import numpy as np

from datasets.synthetic.ct3d_anatomy import (
    Anatomy,
    build_chest,
    draw_body,
    draw_bones,
    draw_heart,
    draw_lungs,
    draw_mediastinum,
    draw_tree,
)
from datasets.synthetic.ct3d_draw import Canvas, Grid
from datasets.synthetic.ct3d_lesions import draw_effusion, draw_extras, draw_parenchyma
from datasets.synthetic.ct3d_sampling import Finding

__all__ = ["AIR_HU", "PADDING_HU", "render_scan", "reconstruct"]

AIR_HU = -1000.0
PADDING_HU = -1024
"""Value outside the circular reconstruction field of view (as scanners store it)."""


def render_scan(anatomy: Anatomy, findings: list[Finding], grid: Grid, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free attenuation of one scan.

    Args:
        anatomy: the patient's anatomy.
        findings: the findings to draw.
        grid: the voxel grid (LPS+ patient millimetres).
        rng: random generator of the scan (lung texture).

    Returns:
        ``(hu, body)``: ``grid.shape`` float32 HU and the boolean body mask (where image noise belongs).
    """
    by_name = {f.name: f for f in findings}
    heart_scale = float(by_name["Cardiomegaly"].size_mm) if "Cardiomegaly" in by_name else 1.0
    rim = float(by_name["Pericardial effusion"].size_mm) if "Pericardial effusion" in by_name else 0.0
    chest = build_chest(anatomy, grid, heart_scale, rim)
    canvas = Canvas(grid, AIR_HU)
    draw_body(canvas, chest)
    draw_lungs(canvas, chest, rng)
    draw_parenchyma(canvas, chest, findings)
    draw_heart(canvas, chest, heart_scale, rim)
    draw_mediastinum(canvas, chest)
    dilated, thick = {}, {}
    if "Bronchiectasis" in by_name:
        f = by_name["Bronchiectasis"]
        dilated = {(side, zone): 2.2 for side in _sides(f) for zone in _zone_and_below(str(f.zone))}
    if "Peribronchial thickening" in by_name:
        f = by_name["Peribronchial thickening"]
        thick = {(side, zone): 3.2 for side in _sides(f) for zone in ("upper", "middle", "lower")}
    draw_tree(canvas, chest, dilated, thick)
    if "Pleural effusion" in by_name:
        draw_effusion(canvas, chest, by_name["Pleural effusion"])
    draw_bones(canvas, chest)
    draw_extras(canvas, chest, findings)
    return canvas.hu, chest.body


def _sides(finding: Finding) -> tuple[str, ...]:
    return ("right", "left") if finding.side in ("bilateral", None) else (str(finding.side),)


def _zone_and_below(zone: str) -> tuple[str, ...]:
    return {"upper": ("upper",), "middle": ("middle", "lower"), "lower": ("lower",)}[zone]


def reconstruct(hu: np.ndarray, body: np.ndarray, grid: Grid, noise_sd: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Add Gaussian noise inside the body, pad outside the circular field of view and round to int16 HU.

    Returns:
        ``grid.shape`` int16 array in HU, clipped to ``[-1024, 3071]``.
    """
    noisy = hu.copy()
    noisy[body] += rng.standard_normal(int(body.sum()), dtype=np.float32) * np.float32(noise_sd)
    x = np.arange(grid.shape[0], dtype=np.float32) - (grid.shape[0] - 1) / 2
    y = np.arange(grid.shape[1], dtype=np.float32) - (grid.shape[1] - 1) / 2
    outside = (x[:, None] ** 2 + y[None, :] ** 2) > (min(grid.shape[:2]) / 2) ** 2
    noisy[outside] = PADDING_HU
    return np.clip(np.rint(noisy), PADDING_HU, 3071).astype(np.int16)
