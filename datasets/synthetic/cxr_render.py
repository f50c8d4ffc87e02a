"""Rendering of a synthetic frontal chest radiograph from its :class:`Anatomy` and :class:`Finding` list.

A density map (higher = more attenuating = brighter) is built in a canonical chest frame and displayed through the
study's exposure curve. Canonical frame: ``X`` across the image in image widths, 0 on the midline, negative on the
image's left, which is the **patient's right** (radiological display); ``Y`` down the image, 0 at the top. The study's
shift, rotation and magnification map image pixels into this frame.

Anatomy: body, two air-filled lungs with rounded apices and diaphragm domes (the right one higher), mediastinum and
spine, a heart shadow extending more to the patient's left, posterior ribs, clavicles, lung markings that fade towards
the periphery, and a gastric air bubble under the left dome. Each finding has its own cue (see :func:`render_cxr`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from datasets.synthetic.cxr_sampling import Anatomy, Finding

__all__ = ["render_cxr"]

_EDGE = 0.006  # soft-edge width of anatomical boundaries, image widths
_MEDIASTINUM = 0.055  # half-width of the upper mediastinum
_ZONE_Y = {"upper": (0.22, 0.36), "mid": (0.36, 0.5), "lower": (0.5, 0.62)}


def _soft(distance: np.ndarray, width: float = _EDGE) -> np.ndarray:
    """Soft step: 1 where ``distance`` > ``width``, 0 where it is below ``-width``, linear in between."""
    return np.clip(0.5 + distance * (0.5 / width), 0.0, 1.0)


def _sign(side: str) -> float:
    return -1.0 if side == "right" else 1.0


def _sides(side: str | None) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side or "right",)


class _Chest:
    """Canonical coordinates of every pixel and the study's lung geometry."""

    def __init__(self, anatomy: Anatomy, size: int) -> None:
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        v, u = np.meshgrid(centres - 0.5 - anatomy.shift[1], centres - 0.5 - anatomy.shift[0], indexing="ij")
        angle = np.deg2rad(anatomy.rotation_deg)
        self.X = (u * np.cos(angle) + v * np.sin(angle)) / anatomy.scale  # (H, W)
        self.Y = 0.5 + (-u * np.sin(angle) + v * np.cos(angle)) / anatomy.scale  # (H, W)
        self.anatomy = anatomy
        self.size = size
        self.width = {"right": anatomy.lung_width, "left": anatomy.lung_width}
        self.base = {"right": anatomy.base_right, "left": anatomy.base_left}
        self.apex = {"right": anatomy.apex, "left": anatomy.apex}
        self.dome_depth = {"right": anatomy.dome_depth, "left": anatomy.dome_depth}

    def lateral_edge(self, side: str, shrink: float = 0.0) -> np.ndarray:
        """X distance from the midline of the lung's lateral edge at each row (the chest widens downwards)."""
        return (self.width[side] - shrink) * (0.8 + 0.2 * np.clip((self.Y - self.apex[side]) / 0.35, 0.0, 1.0))

    def top(self, side: str) -> np.ndarray:
        """Y of the lung's upper boundary under each column: a rounded apex over the mid-clavicular line."""
        offset = (_sign(side) * self.X - 0.16) / self.width[side]
        return self.apex[side] + 0.5 * offset * offset

    def lateral_distance(self, side: str, shrink: float = 0.0) -> np.ndarray:
        """Signed distance inside the lateral and apical lung boundary (positive inside)."""
        outward = _sign(side) * self.X
        return np.minimum(self.lateral_edge(side, shrink) - outward, self.Y - self.top(side) - shrink)

    def dome(self, side: str) -> np.ndarray:
        """Y of the diaphragm under each column (deeper laterally: the costophrenic angle)."""
        reach = np.clip(_sign(side) * self.X / self.width[side], 0.0, 1.2)
        return self.base[side] + self.dome_depth[side] * reach**2

    def lung(self, side: str) -> np.ndarray:
        """Soft mask of one lung (heart not removed)."""
        outward = _sign(side) * self.X
        return (
            _soft(self.lateral_distance(side)) * _soft(outward - _MEDIASTINUM) * _soft(self.dome(side) - self.Y)
        )

    def zone_centre(self, side: str, zone: str, position: float, height: float = 0.5) -> tuple[float, float]:
        """Canonical centre at fraction ``position`` from the medial to the lateral edge, inside ``zone``."""
        low, high = _ZONE_Y[zone]
        y = low + height * (high - low)
        lateral = self.width[side] * (0.8 + 0.2 * min(max((y - self.apex[side]) / 0.35, 0.0), 1.0))
        return _sign(side) * (_MEDIASTINUM + position * (lateral - _MEDIASTINUM)), y

    def disk(self, centre: tuple[float, float], radius: np.ndarray | float, edge: float = 0.004) -> np.ndarray:
        return _soft(radius - np.hypot(self.X - centre[0], self.Y - centre[1]), edge)

    def texture(self, rng: np.random.Generator, sigma: float) -> np.ndarray:
        """Smooth zero-mean, unit-variance noise on the pixel grid (correlation length ``sigma`` pixels)."""
        field = gaussian_filter(rng.standard_normal((self.size, self.size)).astype(np.float32), sigma)
        return field / (field.std() + 1e-6)


def _adjust_anatomy(chest: _Chest, findings: list[Finding]) -> None:
    """Findings that change the anatomy itself: volume loss, hyperinflation, pneumothorax is drawn later."""
    names = {finding.name: finding for finding in findings}
    if "Emphysema" in names:
        for side in ("right", "left"):
            chest.base[side] += 0.06
            chest.dome_depth[side] *= 0.35
            chest.width[side] += 0.015
            chest.apex[side] -= 0.01
    if "Fibrosis" in names:
        for side in ("right", "left"):
            chest.base[side] -= 0.035
    if "Atelectasis" in names:
        for side in _sides(names["Atelectasis"].side):
            chest.base[side] -= 0.035


def _heart(chest: _Chest, findings: list[Finding]) -> np.ndarray:
    ctr = next((f.params["ctr"] for f in findings if f.name == "Cardiomegaly"), chest.anatomy.ctr)
    half_width = ctr * chest.anatomy.lung_width
    centre_x = 0.3 * half_width - 0.02
    half_height = 0.13 + 0.2 * (ctr - 0.4)
    centre_y = min(chest.base["right"], chest.base["left"]) - 0.4 * half_height
    ellipse = ((chest.X - centre_x) / half_width) ** 2 + ((chest.Y - centre_y) / half_height) ** 2
    return _soft(1.0 - ellipse, 0.05)


def _anatomy(chest: _Chest, rng: np.random.Generator, emphysema: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density of the normal chest, the lung mask (heart removed) and the lung-marking texture."""
    X, Y = chest.X, chest.Y
    bx, by = (X / 0.47) ** 2, ((Y - 0.6) / 0.62) ** 2
    body = _soft(1.0 - bx * bx - by * by, 0.05)
    density = 0.05 + 0.55 * body + 0.06 * _soft(Y - 0.75, 0.05) * body  # thicker abdomen
    markings = np.clip(chest.texture(rng, 1.2), -2.5, 2.5)
    lungs = chest.lung("right") + chest.lung("left")
    hilum = np.exp(-np.hypot(np.abs(X) - 0.1, Y - 0.42) / 0.12)
    spine = _soft(0.032 - np.abs(X), 0.004) * (1.0 + 0.35 * np.cos(2 * np.pi * Y / 0.045))
    clavicles = (
        _soft(0.011 - np.abs(Y - (0.135 - 0.18 * (np.abs(X) - 0.05))), 0.003) * _soft(0.3 - np.abs(X), 0.01)
        * _soft(np.abs(X) - 0.04, 0.01)
    )
    phase = (Y - 0.08 - 0.22 * (X / 0.37) ** 2) / 0.058
    ribs = np.clip(np.cos(2 * np.pi * phase) * 2.2 - 1.2, 0.0, 1.0) * _soft(Y - 0.12, 0.01) * _soft(0.78 - Y, 0.02)
    ribs *= _soft(np.abs(X) - 0.04, 0.01) * _soft(0.41 - np.abs(X), 0.01) * (0.3 + lungs)
    gastric = chest.disk((0.17, chest.base["left"] + 0.09), 0.035, 0.01)
    darkness = 0.5 if emphysema else 0.42
    density += 0.06 * spine + 0.15 * clavicles + 0.08 * ribs - 0.18 * gastric
    return density, lungs * darkness, markings * hilum


def render_cxr(anatomy: Anatomy, findings: list[Finding], size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one radiograph.

    Cues: atelectasis = a plate-like band at the base with the hemidiaphragm raised; cardiomegaly = a wide heart
    (cardiothoracic ratio 0.58-0.70 vs 0.40-0.48); effusion = a homogeneous basal opacity with a meniscus rising
    laterally; infiltration = several small ill-defined patches in a zone; mass = a large round well-defined opacity;
    nodule = a small round dense opacity; pneumonia = one large fluffy confluent opacity; pneumothorax = a
    marking-free dark rim with a thin visceral pleural line; consolidation = a dense lobar opacity with a sharp
    fissural border and dark air bronchograms; edema = bilateral perihilar haze with Kerley B lines; emphysema =
    hyperinflated, hyperlucent lungs, flat domes, few markings, sometimes bullae; fibrosis = a basal, peripheral
    reticular network with volume loss; pleural thickening = a smooth band along the lateral or apical pleura; hernia =
    a retrocardiac opacity with an air-fluid level.

    Args:
        anatomy: the study's anatomy and acquisition.
        findings: what to draw.
        size: side of the square image, pixels.
        rng: random generator (textures and noise).

    Returns:
        uint8 array (size, size), display order (row 0 at the top, higher = brighter).
    """
    chest = _Chest(anatomy, size)
    _adjust_anatomy(chest, findings)
    names = {finding.name for finding in findings}
    density, lung_air, markings = _anatomy(chest, rng, "Emphysema" in names)
    heart = _heart(chest, findings)
    lung_air = lung_air * (1.0 - heart)
    marking_gain = np.full_like(density, 0.3 if "Emphysema" in names else 1.0)
    overlay = np.zeros_like(density)
    for finding in findings:
        overlay += _draw(finding, chest, rng, heart, marking_gain)
    density = density - lung_air + 0.035 * markings * marking_gain * (lung_air > 0.05) + overlay
    density = gaussian_filter(density, 0.6)
    black, white, gamma = anatomy.exposure
    image = np.clip((density - black) / (white - black), 0.0, 1.0) ** gamma
    image = image + rng.normal(0.0, anatomy.noise_sd, image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _draw(finding: Finding, chest: _Chest, rng: np.random.Generator, heart: np.ndarray,
          marking_gain: np.ndarray) -> np.ndarray:
    """Density added by one finding (may also lower ``marking_gain`` in place)."""
    X, Y, p = chest.X, chest.Y, finding.params
    out = np.zeros_like(X)
    for side in _sides(finding.side):
        s = _sign(side)
        lung = chest.lung(side) * (1.0 - heart)
        if finding.name == "Atelectasis":
            y = chest.base[side] - (0.07 if finding.zone == "lower" else 0.18)
            x = s * (_MEDIASTINUM + p["position"] * (chest.width[side] - _MEDIASTINUM))
            along = (X - x) * np.cos(p["angle"]) + (Y - y) * np.sin(p["angle"])
            across = -(X - x) * np.sin(p["angle"]) + (Y - y) * np.cos(p["angle"])
            band = _soft(p["thickness"] - np.abs(across), 0.003) * _soft(p["length"] / 2 - np.abs(along), 0.01)
            out += 0.3 * band * lung
        elif finding.name == "Effusion":
            fraction = np.clip((s * X - _MEDIASTINUM) / (chest.width[side] - _MEDIASTINUM), 0.0, 1.0)
            level = chest.base[side] + chest.dome_depth[side] - p["height"] - 0.1 * fraction**2
            out += 0.44 * _soft(Y - level, 0.012) * lung
        elif finding.name == "Infiltration":
            blob_rng = np.random.default_rng(int(p["seed"]) + (side == "left"))
            low, high = _ZONE_Y[finding.zone]
            for _ in range(int(p["blobs"])):
                cx, cy = chest.zone_centre(side, finding.zone, blob_rng.uniform(0.15, 0.85), blob_rng.uniform(0, 1))
                cy = float(np.clip(cy + blob_rng.normal(0, 0.02), low - 0.03, high + 0.03))
                radius = blob_rng.uniform(0.018, 0.032)
                out += p["amplitude"] * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * radius**2)) * lung
        elif finding.name in ("Mass", "Nodule"):
            cx, cy = chest.zone_centre(side, finding.zone, p["position"], p["height"])
            angle = np.arctan2(Y - cy, X - cx)
            radius = p["radius"] * (1.0 + p["lobulation"] * np.sin(3 * angle + p["phase"]))
            out += (0.32 if finding.name == "Mass" else 0.38) * chest.disk((cx, cy), radius)
        elif finding.name == "Pneumonia":
            cx, cy = chest.zone_centre(side, finding.zone, p["position"])
            cloud = np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * p["radius"] ** 2))
            fluff = chest.texture(np.random.default_rng(int(p["seed"]) + (side == "left")), 2.5)
            out += 0.3 * np.clip(cloud * (1.0 + 0.45 * fluff) - 0.15, 0.0, 1.0) * lung
        elif finding.name == "Consolidation":
            lobe = _soft(p["fissure"] - Y, 0.003) if finding.zone == "upper" else _soft(Y - p["fissure"] - 0.08, 0.003)
            region = lobe * lung
            bronchi = np.zeros_like(X)
            branch_rng = np.random.default_rng(int(p["seed"]))
            hilum = (s * 0.1, 0.44)
            for _ in range(3):
                direction = branch_rng.uniform(-2.4, -0.7) if finding.zone == "upper" else branch_rng.uniform(0.6, 1.8)
                dx, dy = s * abs(np.cos(direction)), np.sin(direction)
                along = (X - hilum[0]) * dx + (Y - hilum[1]) * dy
                across = np.abs(-(X - hilum[0]) * dy + (Y - hilum[1]) * dx)
                bronchi = np.maximum(bronchi, _soft(0.0045 - across, 0.0015) * _soft(along - 0.03, 0.01))
            out += (0.42 - 0.27 * bronchi) * region
            marking_gain *= 1.0 - region
        elif finding.name == "Pneumothorax":
            inside = chest.lateral_distance(side, shrink=p["gap"])
            rim = lung * _soft(-inside, 0.004)
            out += -0.07 * rim + 0.22 * np.exp(-((inside / 0.004) ** 2)) * lung
            marking_gain *= 1.0 - rim
        elif finding.name == "Edema":
            haze = np.exp(-(((np.abs(X) - 0.13) / 0.09) ** 2 + ((Y - 0.46) / 0.13) ** 2))
            lines = np.zeros_like(X)
            for k in range(int(p["lines"])):
                y = chest.base[side] - 0.02 - 0.022 * k
                lines += _soft(0.0035 - np.abs(Y - y), 0.0015) * _soft(s * X - chest.lateral_edge(side) + 0.055, 0.005)
            out += (p["amplitude"] * haze + 0.2 * lines) * lung
        elif finding.name == "Emphysema":
            for k in range(int(p["bullae"])):
                cx, cy = chest.zone_centre(side, "upper", 0.55 + 0.2 * k, 0.3 + 0.4 * k)
                inner = chest.disk((cx, cy), 0.045, 0.003)
                out += -0.08 * inner + 0.12 * (chest.disk((cx, cy), 0.05, 0.003) - inner)
                marking_gain *= 1.0 - inner
        elif finding.name == "Fibrosis":
            warp = chest.texture(rng, 3.0)
            u, v = (X + 0.008 * warp) / p["cell"], (Y - 0.008 * warp) / p["cell"]
            net = np.maximum(np.exp(-(((u - np.round(u)) / 0.12) ** 2)), np.exp(-(((v - np.round(v)) / 0.12) ** 2)))
            weight = _soft(Y - 0.45, 0.04) * _soft(s * X - 0.15, 0.03)
            out += p["amplitude"] * net * weight * lung
        elif finding.name == "Pleural_Thickening":
            band = _soft(p["thickness"] - chest.lateral_distance(side), 0.003) * lung
            if finding.zone == "upper":
                band *= _soft(chest.apex[side] + 0.12 - Y, 0.01)
            else:
                band *= _soft(Y - 0.3, 0.02) * _soft(chest.base[side] - 0.04 - Y, 0.02)
            out += 0.4 * band
        elif finding.name == "Hernia":
            centre = (p["offset"], min(chest.base.values()) - 0.05)
            sac = chest.disk(centre, p["radius"], 0.004)
            gas = sac * _soft(centre[1] - 0.2 * p["radius"] - Y, 0.002)
            out += 0.06 * sac - 0.4 * gas
    return out
