"""Abdominal CT phantoms with liver lesions, drawn in world space (RAS+ millimetres).

Every structure is a function of world coordinates, so the anatomy does not depend on how the array is stored. The
phantom is rasterised on a canonical RAS grid (array axis 0 along +x = the patient's right, axis 1 along +y =
anterior, axis 2 along +z = superior) and can then be stored in LPS order by flipping axes 0 and 1 and the affine with
them (:meth:`Phantom.oriented`): the world positions of all voxels stay the same.

Anatomy, per axial slice (``t`` = 0 at the lowest slice of the slab, 1 at the highest, near the liver dome):

* body outline: subcutaneous fat, an abdominal muscle wall, visceral fat with bowel loops (some with gas);
* liver: a large right lobe against the right body wall and a left lobe crossing the midline anteriorly (absent in
  the lowest slices); the anatomical lobes are split by the falciform-ligament fissure, a plane ``x = x0 + slope *
  y`` drawn as a thin fat cleft anteriorly; contrast-enhanced portal and hepatic veins (+40..+80 HU over liver);
* spine with paraspinal muscles, aorta and inferior vena cava, kidneys (lower slices), spleen, stomach;
* smooth intensity variation, a point-spread blur and correlated Gaussian noise.

Lesions are irregular 3D ellipsoids inside one lobe each (hypo- or hyperdense), so they span neighbouring slices
consistently. The thin end caps of a lesion (in-slice area below the spec's thresholds) are not drawn at all, neither in
the image nor in the label, so every lesion visible in a slice is one that can be referred to.

The phantom's midline is the world plane ``x = 0``; the grid centre is offset from it by a few millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from datasets.synthetic.spec import RefHLSpec

__all__ = ["SUPPORTED_ORIENTATIONS", "PhantomLesion", "Phantom", "render_phantom"]

SUPPORTED_ORIENTATIONS = ("RAS", "LPS")

AIR_HU = -1000.0
FAT_HU = -95.0
MUSCLE_HU = 50.0


@dataclass(frozen=True)
class PhantomLesion:
    """One lesion of a phantom.

    Attributes:
        value: the lesion's integer id in the label volume (1, 2, 3).
        center_mm: RAS+ world centre ``(x, y, z)`` in mm.
        semi_axes_mm: semi-axes ``(a, b, c)`` before irregularity; ``a``/``b`` in-plane (rotated by ``angle_rad``),
            ``c`` along z.
        angle_rad: in-plane rotation of the ``a`` axis from +x.
        contrast_hu: attenuation minus the liver's (negative = hypodense).
        lobe: ``"right"`` or ``"left"``: the anatomical liver lobe holding the whole lesion.
        diameter_mm: nominal 3D diameter the lesion was drawn from.
    """

    value: int
    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    angle_rad: float
    contrast_hu: float
    lobe: str
    diameter_mm: float
    harmonics: tuple[tuple[int, float, float], ...]

    @property
    def density(self) -> str:
        """``"hypodense"`` or ``"hyperdense"`` relative to the liver."""
        return "hypodense" if self.contrast_hu < 0 else "hyperdense"


@dataclass(frozen=True)
class Phantom:
    """A rendered case on the canonical RAS grid.

    Attributes:
        image_hu: ``(X, Y, Z)`` int16 attenuation in HU; axis 0 along +x (patient's right), 1 along +y (anterior),
            2 along +z (superior).
        labels: ``(X, Y, Z)`` uint8; 0 = background, ``lesion.value`` inside each lesion.
        affine: ``(4, 4)`` voxel-to-RAS+ affine of both arrays.
        lesions: the drawn lesions (each visible in at least one slice).
        fissure: ``(x0, slope)`` of the lobe boundary plane ``x = x0 + slope * y`` (mm); right lobe where ``x`` is
            larger.
        liver_hu: mean liver attenuation of the case.
    """

    image_hu: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    lesions: tuple[PhantomLesion, ...]
    fissure: tuple[float, float]
    liver_hu: float

    def lobe_at(self, x_mm: float, y_mm: float) -> str:
        """Anatomical liver lobe (``"right"``/``"left"``) on the patient's side of the fissure at world ``(x, y)``."""
        x0, slope = self.fissure
        return "right" if x_mm > x0 + slope * y_mm else "left"

    def oriented(self, orientation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image, labels and affine stored in ``orientation`` order.

        Args:
            orientation: ``"RAS"`` (array axes along +x, +y, +z) or ``"LPS"`` (axes 0 and 1 reversed, as in DICOM
                patient order).

        Returns:
            ``(image_hu, labels, affine)``; the same world position for every voxel's content in both orientations.
        """
        if orientation not in SUPPORTED_ORIENTATIONS:
            raise ValueError(f"orientation must be one of {SUPPORTED_ORIENTATIONS}, got {orientation!r}")
        if orientation == "RAS":
            return self.image_hu, self.labels, self.affine
        nx, ny = self.image_hu.shape[:2]
        flip = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
        image = np.ascontiguousarray(self.image_hu[::-1, ::-1, :])
        labels = np.ascontiguousarray(self.labels[::-1, ::-1, :])
        return image, labels, self.affine @ flip


def _normalised_radius(
    x: np.ndarray,
    y: np.ndarray,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float = 0.0,
    harmonics: tuple[tuple[int, float, float], ...] = (),
) -> np.ndarray:
    """Elliptic radius (< 1 inside) of a rotated ellipse whose boundary is bent by angular harmonics."""
    dx, dy = x - center[0], y - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / axes[0]
    v = (-dx * sin + dy * cos) / axes[1]
    radius = np.sqrt(u * u + v * v)
    if harmonics:
        theta = np.arctan2(v, u)
        bend = 1.0 + sum(amp * np.cos(order * theta + phase) for order, amp, phase in harmonics)
        radius = radius / bend
    return radius


def _random_harmonics(rng: np.random.Generator, orders: tuple[int, ...], max_amp: float) -> tuple:
    return tuple((order, float(rng.uniform(0, max_amp)), float(rng.uniform(0, 2 * np.pi))) for order in orders)


def _segment_distance(x: np.ndarray, y: np.ndarray, z: float, p: np.ndarray, q: np.ndarray) -> tuple:
    """Distance of the points ``(x, y, z)`` to the 3D segment ``p``-``q`` and the position ``u`` in [0, 1] along it."""
    d = q - p
    length2 = float(d @ d)
    u = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1] + (z - p[2]) * d[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((x - p[0] - u * d[0]) ** 2 + (y - p[1] - u * d[1]) ** 2 + (z - p[2] - u * d[2]) ** 2)
    return dist, u


class _Anatomy:
    """Per-case anatomy parameters and the slice renderer (world millimetres)."""

    def __init__(self, rng: np.random.Generator, spec: RefHLSpec, z_bottom: float, z_top: float) -> None:
        u = rng.uniform
        self.z_bottom, self.z_top = z_bottom, z_top
        scale = u(0.9, 1.08)
        self.scale = scale
        self.body = (0.0, u(-6, 6)), (u(150, 168) * scale, u(108, 124) * scale)
        self.body_harm = _random_harmonics(rng, (2, 3), 0.03)
        self.fat = u(8, 28)
        self.wall = u(7, 12)
        inner_ax = self.body[1][0] - self.fat - self.wall
        inner_ay = self.body[1][1] - self.fat - self.wall
        self.inner = self.body[0], (inner_ax, inner_ay)
        back = self.body[0][1] - inner_ay
        self.vertebra = (u(-3, 3), back + u(22, 28)), u(15, 19)
        self.aorta = (self.vertebra[0][0] - u(12, 20), self.vertebra[0][1] + self.vertebra[1] + u(10, 14)), u(9, 12)
        self.ivc = (self.vertebra[0][0] + u(20, 28), self.vertebra[0][1] + self.vertebra[1] + u(12, 18)), (
            u(10, 13), u(7, 10))
        self.aorta_hu, self.ivc_hu = u(140, 190), u(100, 140)
        # Liver: the right lobe hugs the right body wall, the left lobe crosses the midline anteriorly.
        ar, br = u(58, 68) * scale, u(78, 92) * scale
        self.right_lobe = (inner_ax - ar + u(2, 6), u(-12, 4)), (ar, br)
        self.left_lobe = (u(-5, 12), u(35, 50) * scale), (u(50, 62) * scale, u(24, 32) * scale)
        self.right_harm = _random_harmonics(rng, (2, 3, 4), 0.04)
        self.left_harm = _random_harmonics(rng, (2, 3), 0.05)
        self.fissure = (float(u(14, 24) * scale), float(u(-0.15, 0.15)))
        self.liver_hu = float(u(*spec.liver_hu))
        self.vessel_hu = self.liver_hu + float(u(*spec.vessel_contrast_hu))
        self.spleen_hu = self.liver_hu + u(-5, 10)
        self.kidney_hu = u(140, 180)
        self.kidney_side_shift = u(-6, 6)
        self.stomach_gas = bool(rng.random() < 0.5)
        self.bowel = [
            ((u(-inner_ax * 0.8, 10), u(-20, inner_ay * 0.8)), u(9, 22), bool(rng.random() < 0.25), u(0, 1))
            for _ in range(int(rng.integers(4, 9)))
        ]
        self.bias = [(spec.bias_field_hu * u(-1, 1), u(0.004, 0.012), u(0, 2 * np.pi), u(0, np.pi)) for _ in range(2)]
        self.vessels = self._vessel_tree(rng)
        self._static: tuple | None = None
        self._livers: dict[tuple, np.ndarray] = {}

    def t_of(self, z: float) -> float:
        """Relative height of ``z`` in the slab: 0 at the lowest slice, 1 at the highest."""
        return (z - self.z_bottom) / max(self.z_top - self.z_bottom, 1e-6)

    def z_of(self, t: float) -> float:
        return self.z_bottom + t * (self.z_top - self.z_bottom)

    def _vessel_tree(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        """Portal branches from the hilum and hepatic veins converging on the IVC: segments (p, q, r_p, r_q)."""
        (rx, ry), (ar, br) = self.right_lobe
        x0 = self.fissure[0]

        def point(x: float, y: float, t: float) -> np.ndarray:
            return np.array([x + rng.uniform(-6, 6), y + rng.uniform(-6, 6), self.z_of(t)])

        hilum = point(x0 + 25 * self.scale, -18 * self.scale, 0.3)
        right_pv = point(rx - 0.2 * ar, ry, 0.45)
        left_pv = point(x0 - 8, 18 * self.scale, 0.45)
        ivc_top = np.array([self.ivc[0][0], self.ivc[0][1], self.z_of(1.05)])
        segments = [
            (hilum, right_pv, 6.5, 5.0),
            (right_pv, point(rx + 0.45 * ar, ry + 0.45 * br, 0.55), 5.0, 2.5),
            (right_pv, point(rx + 0.35 * ar, ry - 0.5 * br, 0.5), 5.0, 2.5),
            (hilum, left_pv, 5.5, 4.5),
            (left_pv, point(x0 - 45 * self.scale, 42 * self.scale, 0.6), 4.5, 2.5),
            (ivc_top, point(rx + 0.5 * ar, ry - 0.1 * br, 0.55), 6.0, 2.5),
            (ivc_top, point(x0 + 18, 38 * self.scale, 0.5), 5.5, 2.5),
            (ivc_top, point(x0 - 32 * self.scale, 40 * self.scale, 0.7), 5.0, 2.5),
        ]
        return [(p, q, rp, rq) for p, q, rp, rq in segments if np.linalg.norm(q - p) > 1.0]

    def liver(self, x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
        """Boolean liver mask of the slice at relative height ``t`` (cached: do not modify the result)."""
        key = (x.shape, float(x.flat[0]), float(y.flat[0]), t)
        if key not in self._livers:
            self._livers[key] = self._liver(x, y, t)
        return self._livers[key]

    def _liver(self, x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
        grow_r = 1.0 - 0.4 * ((t - 0.45) / 0.6) ** 2
        (rx, ry), (ar, br) = self.right_lobe
        right = _normalised_radius(x, y, (rx + ar * (1 - grow_r) * 0.5, ry), (ar * grow_r, br * grow_r), 0.0,
                                   self.right_harm) < 1.0
        grow_l = float(np.clip((t - 0.15) / 0.45, 0.0, 1.0)) ** 0.5
        liver = right
        if grow_l > 0:
            (lx, ly), (al, bl) = self.left_lobe
            left = _normalised_radius(x, y, (lx + al * (1 - grow_l), ly), (al * grow_l, bl * max(grow_l, 0.5)), 0.0,
                                      self.left_harm) < 1.0
            liver = liver | left
        inner = _normalised_radius(x, y, *self.inner) < 0.97
        return liver & inner

    def _static_layers(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HU image of the structures that do not change along z (body wall, spine, muscles) and the inner mask."""
        key = (x.shape, float(x.flat[0]), float(y.flat[0]))
        if self._static is None or self._static[0] != key:
            image = np.full(x.shape, AIR_HU)
            image[_normalised_radius(x, y, *self.body, 0.0, self.body_harm) < 1.0] = FAT_HU
            (bx, by), (bax, bay) = self.body
            wall = _normalised_radius(x, y, (bx, by), (bax - self.fat, bay - self.fat), 0.0, self.body_harm)
            image[wall < 1.0] = MUSCLE_HU
            inner = _normalised_radius(x, y, *self.inner, 0.0, self.body_harm) < 1.0
            image[inner] = FAT_HU + 10
            (vx, vy), vr = self.vertebra
            for side in (-1, 1):
                image[_normalised_radius(x, y, (vx + side * (vr + 18), vy - 12), (16, 24)) < 1.0] = MUSCLE_HU + 5
            self._static = key, image, inner
        return self._static[1].copy(), self._static[2]

    def render_slice(self, x: np.ndarray, y: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
        """HU image (before lesions, blur and noise) and liver mask of one axial slice at world height ``z``."""
        t = self.t_of(z)
        image, inner = self._static_layers(x, y)
        for (cx, cy), radius, gas, phase in self.bowel:
            cy_t = cy + 8 * np.sin(2 * np.pi * (t + phase))
            r = np.hypot(x - cx, y - cy_t)
            loop = inner & (r < radius)
            image[loop] = 35.0
            image[loop & (r < radius - 2.5)] = -850.0 if gas else 15.0
        (vx, vy), vr = self.vertebra
        r = np.hypot(x - vx, y - vy)
        image[r < vr] = 620.0
        image[r < vr - 3] = 230.0
        image[_normalised_radius(x, y, (vx, vy - vr - 16), (5, 14)) < 1.0] = 520.0
        if t < 0.65:
            for side, top in ((1, 0.45), (-1, 0.62)):
                grow = float(np.clip((top - t) / 0.25, 0.0, 1.0)) ** 0.5
                if grow > 0:
                    center = (side * (68 + self.kidney_side_shift) * self.scale, vy + 8)
                    kidney = _normalised_radius(x, y, center, (24 * grow, 30 * grow), side * 0.5) < 1.0
                    image[kidney] = self.kidney_hu
        if t > 0.25:
            grow = float(np.clip((t - 0.25) / 0.3, 0.0, 1.0)) ** 0.5
            spleen = _normalised_radius(x, y, (-self.inner[1][0] + 38, vy + 25), (30 * grow, 52 * grow), -0.5) < 1.0
            image[spleen & inner] = self.spleen_hu
        if t > 0.45:
            stomach_r = _normalised_radius(x, y, (-55 * self.scale, 30 * self.scale), (42, 30), 0.3)
            image[(stomach_r < 1.0) & inner] = 40.0
            image[(stomach_r < 0.85) & inner] = -850.0 if self.stomach_gas else 12.0
        liver = self.liver(x, y, t)
        image[liver] = self.liver_hu
        for p, q, rp, rq in self.vessels:
            dist, u = _segment_distance(x, y, z, p, q)
            image[liver & (dist < rp + u * (rq - rp))] = self.vessel_hu
        x0, slope = self.fissure
        cleft = liver & (np.abs(x - (x0 + slope * y)) < 1.6) & (y > self.left_lobe[0][1] - 20 * self.scale)
        image[cleft] = -40.0
        image[np.hypot(x - self.aorta[0][0], y - self.aorta[0][1]) < self.aorta[1]] = self.aorta_hu
        image[_normalised_radius(x, y, *self.ivc) < 1.0] = self.ivc_hu
        soft = (image > -200) & (image < 300)
        bias = sum(np.cos(fx * x * np.cos(ang) + fx * y * np.sin(ang) + ph) * amp for amp, fx, ph, ang in self.bias)
        image = image + soft * bias
        return image, liver


def _place_lesions(
    rng: np.random.Generator, spec: RefHLSpec, anatomy: _Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray,
    spacing: float,
) -> list[PhantomLesion]:
    """Sample 1-3 non-touching lesions, each wholly inside one lobe at its central slice."""
    count = int(rng.choice([1, 2, 3], p=list(spec.lesions_per_case_probs)))
    nz = len(z)
    focus = int(rng.integers(max(1, nz // 2 - 2), min(nz - 1, nz // 2 + 2) + 1)) if nz > 2 else nz // 2
    lesions: list[PhantomLesion] = []
    low, high = spec.lesion_diameter_mm
    for _ in range(count):
        for _attempt in range(12):
            diameter = float(low + (high - low) * rng.beta(*spec.lesion_diameter_beta))
            harmonics = _random_harmonics(rng, (2, 3, 4), 0.06)
            a = diameter / 2
            b = a * rng.uniform(0.7, 1.0)
            c = a * rng.uniform(0.8, 1.15)
            reach = a * (1 + sum(amp for _, amp, _ in harmonics))
            k = int(np.clip(focus + rng.integers(-1, 2), 0, nz - 1))
            zc = float(z[k] + rng.uniform(-0.25, 0.25) * spec.slice_thickness_mm)
            liver = anatomy.liver(x, y, anatomy.t_of(z[k]))
            inside = ndimage.distance_transform_edt(liver) * spacing
            x0, slope = anatomy.fissure
            to_fissure = (x - (x0 + slope * y)) / np.sqrt(1 + slope**2)
            lobe = "right" if rng.random() < 0.7 else "left"
            allowed = (inside > reach + 3) & ((to_fissure if lobe == "right" else -to_fissure) > reach + 4)
            for other in lesions:
                other_reach = other.semi_axes_mm[0] * (1 + sum(amp for _, amp, _ in other.harmonics))
                allowed &= np.hypot(x - other.center_mm[0], y - other.center_mm[1]) > reach + other_reach + 4
            candidates = np.flatnonzero(allowed)
            if len(candidates) == 0:
                continue
            pick = candidates[rng.integers(len(candidates))]
            sign = -1.0 if rng.random() < spec.hypodense_fraction else 1.0
            lesions.append(PhantomLesion(
                value=len(lesions) + 1,
                center_mm=(float(x.flat[pick]), float(y.flat[pick]), zc),
                semi_axes_mm=(float(a), float(b), float(c)),
                angle_rad=float(rng.uniform(0, np.pi)),
                contrast_hu=float(sign * rng.uniform(*spec.lesion_contrast_hu)),
                lobe=lobe,
                diameter_mm=diameter,
                harmonics=harmonics,
            ))
            break
    return lesions


def _lesion_sections(lesion: PhantomLesion, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
    """Normalised radius of ``lesion`` in the slice at height ``z`` (< 1 inside; inf far from it).

    ``x`` and ``y`` are the ``(X, Y)`` world grids of the slice (x constant along axis 1, y along axis 0).
    """
    a, b, c = lesion.semi_axes_mm
    dz2 = ((z - lesion.center_mm[2]) / c) ** 2
    if dz2 >= 1.0:
        return np.full(x.shape, np.inf)
    shrink = np.sqrt(1.0 - dz2)
    reach = a * shrink * (1 + sum(amp for _, amp, _ in lesion.harmonics)) + 4.0
    rows = np.flatnonzero(np.abs(x[:, 0] - lesion.center_mm[0]) < reach)
    cols = np.flatnonzero(np.abs(y[0, :] - lesion.center_mm[1]) < reach)
    radius = np.full(x.shape, np.inf)
    if len(rows) and len(cols):
        box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        radius[box] = _normalised_radius(
            x[box], y[box], lesion.center_mm[:2], (a * shrink, b * shrink), lesion.angle_rad, lesion.harmonics
        )
    return radius


def render_phantom(rng: np.random.Generator, spec: RefHLSpec) -> Phantom:
    """Draw one case.

    Args:
        rng: the case's random generator (all randomness of the case comes from it).
        spec: generator parameters.

    Returns:
        The phantom on the canonical RAS grid; cases whose lesions could not be placed still come back, with fewer
        lesions (at least one).
    """
    n = spec.matrix
    spacing = float(rng.uniform(*spec.pixel_spacing_mm))
    nz = int(rng.integers(spec.slices_per_case[0], spec.slices_per_case[1] + 1))
    dz = spec.slice_thickness_mm
    offset = rng.uniform(-12, 12, size=2)
    z0 = float(rng.uniform(-1200, -1000))
    origin = np.array([offset[0] - (n - 1) / 2 * spacing, offset[1] - (n - 1) / 2 * spacing, z0])
    affine = np.diag([spacing, spacing, dz, 1.0])
    affine[:3, 3] = origin
    xs = origin[0] + spacing * np.arange(n)
    ys = origin[1] + spacing * np.arange(n)
    z = z0 + dz * np.arange(nz)
    x, y = np.meshgrid(xs, ys, indexing="ij")  # (X, Y): x varies along axis 0, y along axis 1

    anatomy = _Anatomy(rng, spec, float(z[0]), float(z[-1]))
    lesions = _place_lesions(rng, spec, anatomy, x, y, z, spacing)
    noise_sd = float(rng.uniform(*spec.noise_sd_hu))
    textures = [(float(rng.uniform(0.05, 0.25)), float(rng.uniform(-1, 1))) for _ in lesions]

    pixel_area = spacing * spacing
    sections = np.full((len(lesions), nz), None, dtype=object)
    areas = np.zeros((len(lesions), nz))
    livers = []
    images = []
    for k in range(nz):
        image, liver = anatomy.render_slice(x, y, float(z[k]))
        livers.append(liver)
        images.append(image)
        for i, lesion in enumerate(lesions):
            radius = _lesion_sections(lesion, x, y, float(z[k]))
            sections[i, k] = radius
            areas[i, k] = np.count_nonzero((radius < 1.0) & liver) * pixel_area

    image_hu = np.empty((n, n, nz), dtype=np.int16)
    labels = np.zeros((n, n, nz), dtype=np.uint8)
    keep = np.zeros_like(areas, dtype=bool)
    for i in range(len(lesions)):
        floor = max(spec.min_cross_section_mm2, spec.min_cross_section_fraction * areas[i].max())
        keep[i] = areas[i] >= floor
    for k in range(nz):
        image, liver = images[k], livers[k]
        body = image > -500
        for i, lesion in enumerate(lesions):
            if not keep[i, k]:
                continue
            radius = sections[i, k]
            edge = np.clip((1.0 - radius) * max(lesion.semi_axes_mm[0], 4.0) / 1.5 + 0.5, 0.0, 1.0) * liver
            core, tilt = textures[i]
            lesion_hu = anatomy.liver_hu + lesion.contrast_hu * (1.0 + core * (1.0 - np.clip(radius, 0, 1)) * tilt)
            image = image + edge * (lesion_hu - image)
            labels[:, :, k][(radius < 1.0) & liver] = lesion.value
        image = ndimage.gaussian_filter(image, 0.6)
        noise = ndimage.gaussian_filter(rng.standard_normal(image.shape), 0.6)
        noise *= noise_sd / max(float(noise.std()), 1e-6)
        image = image + noise * body
        image_hu[:, :, k] = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    visible = [lesion for i, lesion in enumerate(lesions) if keep[i].any()]
    return Phantom(
        image_hu=image_hu,
        labels=labels,
        affine=affine,
        lesions=tuple(visible),
        fissure=anatomy.fissure,
        liver_hu=anatomy.liver_hu,
    )
