"""Drawing of the 18 abnormalities on a chest canvas, each with its own visual cue.

Parenchymal findings are drawn before the bronchovascular tree (vessels stay visible through ground glass, bronchi
give air bronchograms in consolidation); pleural fluid, calcifications and devices after it. Cues:

* Emphysema: clusters of round near-air holes (-985 HU), upper-zone predominant, both lungs.
* Mosaic attenuation pattern: geographic patches of lower and higher lung attenuation (about -/+70 HU).
* Lung opacity: ground-glass patches (about -560 HU). Consolidation: dense (25 HU) lobar-size region.
* Atelectasis: a plate-like dense band in the posterior lung. Lung nodule: a small round solid opacity.
* Pulmonary fibrotic sequela: linear subpleural scar bands. Interlobular septal thickening: a fine polygonal network in
  the peripheral lower lungs.
* Pleural effusion: a dependent posterior fluid crescent (12 HU). Hiatal hernia: a retrocardiac sac with gas and a
  fluid level above the diaphragm. Lymphadenopathy: enlarged nodes (13-24 mm) at mediastinal/hilar stations.
* Arterial wall calcification: bright specks on the aortic wall. Coronary artery wall calcification: bright specks on
  the heart surface near the base. Medical material: a pacemaker or port with a lead, or sternotomy wires (>1500 HU).
* Cardiomegaly, pericardial effusion, peribronchial thickening and bronchiectasis change the anatomy itself (heart
  size, a fluid rim, bronchial wall and lumen); see :func:`datasets.synthetic.ct3d_anatomy.draw_heart` and
  :func:`~datasets.synthetic.ct3d_anatomy.draw_tree`.
"""

from __future__ import annotations

import numpy as np

from datasets.synthetic.ct3d_anatomy import SIDE_SIGN, Chest, aorta_path
from datasets.synthetic.ct3d_draw import Canvas, smooth_field
from datasets.synthetic.ct3d_sampling import Finding

__all__ = ["draw_parenchyma", "draw_effusion", "draw_extras"]

_SEVERITY = {"mild": 0, "moderate": 1, "severe": 2}


def _sides(finding: Finding) -> list[str]:
    return ["right", "left"] if finding.side in ("bilateral", None, "midline") else [str(finding.side)]


def _lungs(chest: Chest) -> np.ndarray:
    return chest.lungs["left"] | chest.lungs["right"]


def draw_parenchyma(canvas: Canvas, chest: Chest, findings: list[Finding]) -> None:
    """Lung findings drawn before the bronchovascular tree."""
    lungs = _lungs(chest)
    for f in findings:
        rng = np.random.default_rng(f.seed)
        level = _SEVERITY[f.severity]
        if f.name == "Mosaic attenuation pattern":
            field = smooth_field(rng, canvas.grid, (35.0, 80.0), terms=8)
            delta = np.where(field > 0.45, 70.0, np.where(field < -0.45, -65.0, 0.0)).astype(np.float32)
            canvas.hu[lungs] += delta[lungs]
        elif f.name == "Emphysema":
            for _ in range((60, 110, 170)[level]):
                side = str(rng.choice(("right", "left")))
                zone = str(rng.choice(("upper", "middle", "lower"), p=(0.6, 0.3, 0.1)))
                center = chest.lung_point(side, zone, np.sqrt(rng.uniform(0, 0.9)), rng.uniform(-np.pi, np.pi))
                center[2] += rng.uniform(-22, 22)
                canvas.ellipsoid(center, np.full(3, rng.uniform(2.5, 6.0), np.float32), -985.0, where=lungs)
        elif f.name == "Interlobular septal thickening":
            _septa(canvas, chest, rng, lungs)
        elif f.name in ("Lung opacity", "Consolidation"):
            value, sizes = (-560.0, (14, 30)) if f.name == "Lung opacity" else (25.0, (18, 34))
            for side in _sides(f):
                for _ in range(1 + int(rng.integers(0, 1 + level))):
                    center = chest.lung_point(side, str(f.zone), rng.uniform(0.3, 0.7), rng.uniform(-1.5, 2.0))
                    radii = rng.uniform(*sizes, 3).astype(np.float32) * np.float32(1 + 0.2 * level)
                    canvas.ellipsoid(center, radii, value, where=chest.lungs[side])
        elif f.name == "Atelectasis":
            for side in _sides(f):
                center = chest.lung_point(side, str(f.zone), 0.72, np.pi / 2 + rng.uniform(-0.5, 0.5))
                radii = np.array([rng.uniform(28, 42), rng.uniform(4, 7), rng.uniform(7, 11)], np.float32)
                canvas.ellipsoid(center, radii * np.float32(1 + 0.25 * level), 30.0, where=chest.lungs[side])
        elif f.name == "Lung nodule":
            center = chest.lung_point(str(f.side), str(f.zone), rng.uniform(0.2, 0.75), rng.uniform(-np.pi, np.pi))
            canvas.ellipsoid(center, np.full(3, f.size_mm / 2, np.float32), 35.0, where=chest.lungs[str(f.side)])
        elif f.name == "Pulmonary fibrotic sequela":
            for _ in range((3, 5, 7)[level]):
                angle = rng.uniform(-1.4, 2.0)
                outer = chest.lung_point(str(f.side), str(f.zone), 0.98, angle)
                inner = chest.lung_point(str(f.side), str(f.zone), rng.uniform(0.45, 0.65), angle + rng.normal(0, 0.3))
                inner[2] += rng.uniform(-15, 15)
                canvas.tube(outer, inner, rng.uniform(1.6, 2.4), -120.0, where=chest.lungs[str(f.side)])


def _septa(canvas: Canvas, chest: Chest, rng: np.random.Generator, lungs: np.ndarray) -> None:
    warp = smooth_field(rng, canvas.grid, (40.0, 90.0), terms=6) * np.float32(0.25)
    period = rng.uniform(13.0, 17.0)
    close = np.zeros(canvas.grid.shape, bool)
    for k in range(3):
        phase = canvas.axes[k] / np.float32(period)
        shape = [1, 1, 1]
        shape[k] = -1
        frac = np.mod(phase.reshape(shape) + warp, 1.0)
        close |= np.abs(frac - 0.5) > 0.5 - 1.2 / period * (2.0 if k == 2 else 1.0)
    z = canvas.axes[2][None, None, :]
    periphery = np.zeros(canvas.grid.shape, bool)
    for side in ("right", "left"):
        cx, cy, rx, ry = chest.lung_frame(side)
        x = (canvas.axes[0] - chest.anatomy.shift[0])[:, None, None]
        y = (canvas.axes[1] - chest.anatomy.shift[1])[None, :, None]
        q = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        periphery |= np.broadcast_to(q > 0.55, canvas.grid.shape)
    low = np.broadcast_to(z < chest.anatomy.carina_z, canvas.grid.shape)
    target = close & lungs & periphery & low
    canvas.hu[target] = np.float32(-430.0)


def draw_effusion(canvas: Canvas, chest: Chest, finding: Finding) -> None:
    """A dependent posterior fluid crescent of depth ``finding.size_mm`` in each affected hemithorax."""
    z = canvas.axes[2][None, None, :]
    y = canvas.axes[1][None, :, None]
    for side in _sides(finding):
        lung = chest.lungs[side]
        last = lung.shape[1] - 1 - np.argmax(lung[:, ::-1, :], axis=1)  # (X, Z) most posterior lung voxel
        wall = canvas.axes[1][last][:, None, :]
        dome = chest.anatomy.dome_z[0 if side == "right" else 1]
        fluid = lung & (wall - y < float(finding.size_mm)) & (z < dome + 3.0 * float(finding.size_mm))
        canvas.hu[fluid] = np.float32(12.0)


def draw_extras(canvas: Canvas, chest: Chest, findings: list[Finding]) -> None:
    """Mediastinal findings, calcifications and devices, drawn last."""
    anatomy = chest.anatomy
    spine_y = 0.9 * anatomy.half_depth - anatomy.fat_mm - 58.0
    carina = anatomy.carina_z
    for f in findings:
        rng = np.random.default_rng(f.seed)
        if f.name == "Lymphadenopathy":
            stations = [(-18.0, spine_y - 42.0, carina + 22.0), (0.0, spine_y - 30.0, carina - 18.0),
                        (16.0, spine_y - 58.0, carina + 8.0), (-44.0, 6.0, carina - 26.0), (44.0, 8.0, carina - 26.0),
                        (0.0, -45.0, carina + 20.0)]
            for i in rng.choice(len(stations), 1 + _SEVERITY[f.severity] + int(rng.integers(0, 2)), replace=False):
                radius = float(f.size_mm) / 2 * rng.uniform(0.85, 1.1)
                canvas.ellipsoid(chest.point(*stations[i]), np.array([radius, radius * 1.15, radius * 1.3]), 42.0)
        elif f.name == "Hiatal hernia":
            r = float(f.size_mm) / 2
            center = chest.point(10.0, spine_y - 30.0, anatomy.dome_z[1] + r * 0.6)
            canvas.ellipsoid(center, np.array([r, r * 0.85, r * 0.8]), 40.0)
            canvas.ellipsoid(center, np.array([r - 3.5, r * 0.85 - 3.5, r * 0.8 - 3.5]), -995.0)
            below = np.broadcast_to(canvas.axes[2][None, None, :] < center[2] - 0.15 * r, canvas.grid.shape)
            canvas.ellipsoid(center, np.array([r - 3.5, r * 0.85 - 3.5, r * 0.8 - 3.5]), 15.0, where=below)
        elif f.name == "Arterial wall calcification":
            path = aorta_path(chest)
            for _ in range((6, 12, 20)[_SEVERITY[f.severity]]):
                i = int(rng.integers(1, len(path) - 1))
                point = path[i] + (path[i + 1] - path[i]) * np.float32(rng.uniform())
                offset = rng.normal(0, 1, 3)
                offset[2] *= 0.3
                point = point + (offset / np.linalg.norm(offset) * anatomy.aorta_radius).astype(np.float32)
                canvas.ellipsoid(point, np.full(3, rng.uniform(1.8, 3.0), np.float32), rng.uniform(500, 900))
        elif f.name == "Coronary artery wall calcification":
            center = chest.point(*anatomy.heart_center[:2], anatomy.heart_center[2])
            scale = 1.3 if any(g.name == "Cardiomegaly" for g in findings) else 1.0
            radii = chest.heart_scale_radii(scale)
            for _ in range((3, 6, 10)[_SEVERITY[f.severity]]):
                u = rng.uniform(-0.85, -0.2)
                angle = rng.uniform(0, 2 * np.pi)
                local = np.array([u, np.sqrt(1 - u * u) * np.cos(angle), np.sqrt(1 - u * u) * np.sin(angle)])
                point = center + chest.heart_rotation @ (local * (radii + 2.0)).astype(np.float32)
                canvas.ellipsoid(point, np.full(3, rng.uniform(1.6, 2.6), np.float32), rng.uniform(500, 1000))
        elif f.name == "Medical material":
            _device(canvas, chest, f, rng, spine_y)


def _device(canvas: Canvas, chest: Chest, f: Finding, rng: np.random.Generator, spine_y: float) -> None:
    anatomy = chest.anatomy
    hx, hy, hz = anatomy.heart_center
    if f.kind == "sternotomy wires":
        front = -(chest.cavity[1] + 9.0)
        for z in np.linspace(hz - 10.0, anatomy.apex_z - 25.0, 5):
            canvas.tube(chest.point(-9.0, front, z), chest.point(9.0, front, z), 1.3, 2800.0)
        return
    sign = SIDE_SIGN[str(f.side)]
    a, b = anatomy.half_width, anatomy.half_depth
    z_box = anatomy.apex_z - rng.uniform(25, 40)
    box = chest.point(sign * 0.45 * a, -0.78 * b + anatomy.fat_mm * 0.5, z_box)
    if f.kind == "pacemaker":
        canvas.ellipsoid(box, np.array([22.0, 6.0, 18.0]), 3000.0)
    else:
        canvas.ellipsoid(box, np.array([12.0, 7.0, 12.0]), 1800.0)
    entry = chest.point(-22.0, hy + 10.0, hz + 45.0)
    waypoint = chest.point(sign * 40.0, -20.0, z_box + 12.0)
    tip = chest.point(hx - 8.0, hy, hz) if f.kind == "pacemaker" else chest.point(-20.0, hy + 10.0, hz + 22.0)
    for start, end in ((box, waypoint), (waypoint, entry), (entry, tip)):
        canvas.tube(start, end, 1.3, 2200.0)
