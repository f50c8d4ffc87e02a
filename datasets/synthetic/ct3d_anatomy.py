"""Normal chest anatomy of the synthetic CT: sampling per patient and drawing on a :class:`~.ct3d_draw.Canvas`.

All positions are LPS+ patient millimetres (+x = patient's left, +y = posterior, +z = superior), relative to the
body axis ``(shift_x, shift_y)``. The body is an elliptic cylinder with a flat back on a curved table: skin and
subcutaneous fat, a muscle wall, ribs (sloping down anteriorly, with costal cartilage), sternum, scapulae, a spine
with vertebral bodies, discs, canal and spinous processes, paraspinal muscles. Inside: two lungs tapering to the apices
and resting on diaphragm domes (the right one higher) with a posterior density gradient and parenchymal texture,
bronchovascular trees (vessels with companion bronchi), trachea and main bronchi, a rotated ellipsoid heart in
pericardial fat, ascending aorta, arch and descending aorta, pulmonary trunk and arteries, superior vena cava,
oesophagus, a few normal-sized lymph nodes; below the domes liver, stomach (with a gas fundus) and spleen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datasets.synthetic.ct3d_draw import Canvas, Grid, smooth_field

__all__ = ["Anatomy", "Branch", "Chest", "sample_anatomy", "build_chest", "draw_body", "draw_lungs", "draw_heart",
           "draw_mediastinum", "draw_tree", "draw_bones", "SIDE_SIGN"]

SIDE_SIGN = {"left": 1.0, "right": -1.0}
FAT_HU, MUSCLE_HU, BLOOD_HU, FLUID_HU = -95.0, 45.0, 40.0, 12.0


@dataclass(frozen=True)
class Anatomy:
    """Per-patient anatomy (mm, LPS+ relative to the body axis unless said otherwise).

    Attributes:
        sex: ``"M"`` or ``"F"``.
        age: years.
        half_width: body half-width (left-right).
        half_depth: body half-depth (anterior-posterior).
        fat_mm: subcutaneous fat thickness.
        apex_z: lung apex height.
        dome_z: ``(right, left)`` heights of the diaphragm domes.
        heart_center: heart centre.
        heart_radii: heart semi-axes (long axis first) before any enlargement.
        heart_angle: in-plane angle of the heart's long axis, radians from +x towards -y (anterior).
        aorta_radius: descending aorta radius; the ascending aorta is 20% wider.
        carina_z: height of the carina.
        lung_hu: mean attenuation of normal lung.
        shift: body axis position ``(x, y)`` in the grid's patient coordinates.
        tree_seed: seed of the bronchovascular trees.
    """

    sex: str
    age: int
    half_width: float
    half_depth: float
    fat_mm: float
    apex_z: float
    dome_z: tuple[float, float]
    heart_center: tuple[float, float, float]
    heart_radii: tuple[float, float, float]
    heart_angle: float
    aorta_radius: float
    carina_z: float
    lung_hu: float
    shift: tuple[float, float]
    tree_seed: int


@dataclass(frozen=True)
class Branch:
    """One segment of a bronchovascular tree: an artery and (for generations < 3) its companion bronchus.

    Attributes:
        side: ``"left"`` or ``"right"`` lung.
        zone: ``"upper"``, ``"middle"`` or ``"lower"`` (lobe-level region of the segment's root).
        generation: 0 at the hilum.
        start: segment start (absolute patient mm).
        end: segment end.
        radius: artery radius in mm.
    """

    side: str
    zone: str
    generation: int
    start: np.ndarray
    end: np.ndarray
    radius: float


@dataclass
class Chest:
    """An anatomy resolved on a grid: absolute positions, the lung masks and the trees.

    Attributes:
        anatomy: the sampled :class:`Anatomy`.
        grid: the voxel grid.
        lungs: ``{"left": mask, "right": mask}``, boolean ``grid.shape`` arrays.
        body: boolean mask of the patient (where image noise is added).
        heart_rotation: ``(3, 3)`` matrix whose columns are the heart's axes.
        branches: the bronchovascular tree segments of both lungs.
        cavity: inner chest-wall semi-axes ``(a, b)``.
    """

    anatomy: Anatomy
    grid: Grid
    lungs: dict[str, np.ndarray]
    body: np.ndarray
    heart_rotation: np.ndarray
    branches: list[Branch] = field(default_factory=list)
    cavity: tuple[float, float] = (0.0, 0.0)

    def point(self, x: float, y: float, z: float) -> np.ndarray:
        """Absolute position of a point given relative to the body axis."""
        return np.array([x + self.anatomy.shift[0], y + self.anatomy.shift[1], z], np.float32)

    def lung_frame(self, side: str) -> tuple[float, float, float, float]:
        """Centre ``(cx, cy)`` (relative to the body axis) and semi-axes ``(rx, ry)`` of one lung's cross-section."""
        a, b = self.cavity
        return SIDE_SIGN[side] * 0.46 * a, 0.03 * b, 0.55 * a * (1.04 if side == "right" else 1.0), 0.96 * b

    def lung_point(self, side: str, zone: str, radial: float, angle: float) -> np.ndarray:
        """A point inside a lung: zone height, fraction ``radial`` of the semi-axes, in-plane ``angle`` (radians).

        ``angle`` 0 points laterally, pi/2 posteriorly. The z of the zone is placed between the dome and the apex.
        """
        cx, cy, rx, ry = self.lung_frame(side)
        dome = self.anatomy.dome_z[0 if side == "right" else 1]
        span = self.anatomy.apex_z - dome
        z = dome + span * {"upper": 0.72, "middle": 0.45, "lower": 0.2}[zone]
        taper = 1.0 if zone != "upper" else 0.8
        x = cx + SIDE_SIGN[side] * radial * taper * rx * np.cos(angle)
        y = cy + radial * taper * ry * np.sin(angle)
        return self.point(x, y, z)

    def heart_scale_radii(self, scale: float) -> np.ndarray:
        """Heart semi-axes multiplied by ``scale``."""
        return np.asarray(self.anatomy.heart_radii, np.float32) * np.float32(scale)


def sample_anatomy(rng: np.random.Generator, sex: str, age: int) -> Anatomy:
    """Draw one patient's anatomy."""
    female = sex == "F"
    half_width = rng.uniform(140, 165) if female else rng.uniform(150, 178)
    half_depth = half_width * rng.uniform(0.64, 0.74)
    apex = rng.uniform(108, 132)
    dome_right = rng.uniform(-75, -50)
    dome_left = dome_right - rng.uniform(8, 18)
    heart = (rng.uniform(10, 22), -rng.uniform(18, 28), dome_left + rng.uniform(28, 36))
    return Anatomy(
        sex=sex, age=age, half_width=float(half_width), half_depth=float(half_depth),
        fat_mm=float(rng.uniform(6, 16) if not female else rng.uniform(9, 22)), apex_z=float(apex),
        dome_z=(float(dome_right), float(dome_left)), heart_center=tuple(float(v) for v in heart),
        heart_radii=(float(rng.uniform(50, 57)), float(rng.uniform(36, 42)), float(rng.uniform(30, 36))),
        heart_angle=float(rng.uniform(0.45, 0.8)), aorta_radius=float(rng.uniform(10, 12) + 0.03 * (age - 40)),
        carina_z=float(rng.uniform(25, 45)), lung_hu=float(rng.uniform(-875, -835)),
        shift=(float(rng.uniform(-8, 8)), float(rng.uniform(-6, 10))), tree_seed=int(rng.integers(2**31)),
    )


def _heart_rotation(angle: float) -> np.ndarray:
    tilt = 0.5  # the apex points anterior-left and down
    long_axis = np.array([np.cos(angle) * np.cos(tilt), -np.sin(angle) * np.cos(tilt), -np.sin(tilt)])
    second = np.array([np.sin(angle), np.cos(angle), 0.0])
    third = np.cross(long_axis, second)
    return np.stack([long_axis, second, third], axis=1).astype(np.float32)


def _relative_axes(grid: Grid, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = (grid.axis(0) - anatomy.shift[0])[:, None, None]
    y = (grid.axis(1) - anatomy.shift[1])[None, :, None]
    return x, y, grid.axis(2)[None, None, :]


def _lung_mask(chest: Chest, side: str, heart_radii: np.ndarray) -> np.ndarray:
    anatomy, grid = chest.anatomy, chest.grid
    x, y, z = _relative_axes(grid, anatomy)
    cx, cy, rx, ry = chest.lung_frame(side)
    q = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    top = anatomy.apex_z - 80.0
    taper = np.where(z > top, np.clip(1 - ((z - top) / (anatomy.apex_z - top)) ** 2, 0, 1), 1.0)
    dome = anatomy.dome_z[0 if side == "right" else 1]
    mask = (q <= taper) & (z >= dome - 45.0 * np.minimum(q, 1.0))
    widen = np.clip((z - (anatomy.heart_center[2] + 20)) / 60.0, 0, 1)
    mask &= SIDE_SIGN[side] * x >= 6.0 + 14.0 * widen
    spine_y = _spine_y(anatomy)
    mask &= x ** 2 + (y - spine_y) ** 2 > 24.0 ** 2
    for sign in (-1.0, 1.0):
        mask &= ((x - sign * 30) / 20.0) ** 2 + ((y - spine_y - 50) / 17.0) ** 2 > 1.0
    if side == "left":
        ax, ay = _descending_aorta_xy(anatomy)
        mask &= ((x - ax) ** 2 + (y - ay) ** 2 > (anatomy.aorta_radius + 4) ** 2) | (z > anatomy.carina_z + 20)
    c = np.asarray(anatomy.heart_center, np.float32)
    rot = chest.heart_rotation
    d = (x - c[0], y - c[1], z - c[2])
    rho2 = sum(((d[0] * rot[0, j] + d[1] * rot[1, j] + d[2] * rot[2, j]) / (heart_radii[j] + 3.0)) ** 2
               for j in range(3))
    return mask & (rho2 > 1.0)


def _spine_y(anatomy: Anatomy) -> float:
    return 0.9 * anatomy.half_depth - anatomy.fat_mm - 58.0


def _descending_aorta_xy(anatomy: Anatomy) -> tuple[float, float]:
    return 22.0, _spine_y(anatomy) - 18.0


def build_chest(anatomy: Anatomy, grid: Grid, heart_scale: float, pericardial_mm: float) -> Chest:
    """Resolve ``anatomy`` on ``grid``: lung masks (the heart's size carves them), body mask and the trees."""
    a = anatomy.half_width - anatomy.fat_mm - 20.0
    b = anatomy.half_depth - anatomy.fat_mm - 20.0
    chest = Chest(anatomy, grid, {}, np.zeros(grid.shape, bool), _heart_rotation(anatomy.heart_angle), cavity=(a, b))
    radii = chest.heart_scale_radii(heart_scale) + np.float32(pericardial_mm + 4.0)
    chest.lungs = {side: _lung_mask(chest, side, radii) for side in ("right", "left")}
    chest.branches = _trees(chest)
    return chest


def _trees(chest: Chest) -> list[Branch]:
    rng = np.random.default_rng(chest.anatomy.tree_seed)
    branches: list[Branch] = []
    carina = chest.anatomy.carina_z
    for side in ("right", "left"):
        sign = SIDE_SIGN[side]
        hilum = chest.point(sign * 50.0, 12.0, carina - 22.0)
        for zone, count in (("upper", 2), ("middle", 1), ("lower", 3)):
            for _ in range(count):
                target = chest.lung_point(side, zone, rng.uniform(0.45, 0.8), rng.uniform(-1.2, 1.6))
                target[2] += rng.uniform(-12, 12)
                _grow(branches, rng, side, zone, 0, hilum, target - hilum, 5.5, 34.0, chest)
    return branches


def _grow(branches: list[Branch], rng: np.random.Generator, side: str, zone: str, generation: int,
          start: np.ndarray, direction: np.ndarray, radius: float, length: float, chest: Chest) -> None:
    direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
    end = (start + direction * length).astype(np.float32)
    branches.append(Branch(side, zone, generation, start, end, radius))
    if generation >= 4:
        return
    for _ in range(2):
        turn = rng.normal(0.0, 0.45, 3)
        _grow(branches, rng, side, zone, generation + 1, end, direction + turn, radius * 0.72,
              length * rng.uniform(0.7, 0.9), chest)


def _ellipse_weight(x: np.ndarray, y: np.ndarray, a: float, b: float, edge: float) -> np.ndarray:
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    return np.clip((1.0 - rho) * min(a, b) / edge + 0.5, 0.0, 1.0)


def draw_body(canvas: Canvas, chest: Chest) -> None:
    """Table, skin and fat, breasts, muscle wall and the cavity's fat; sets ``chest.body``."""
    anatomy = chest.anatomy
    x, y, z = _relative_axes(canvas.grid, anatomy)
    a, b, edge = anatomy.half_width, anatomy.half_depth, canvas.edge_mm
    back = 0.9 * b
    table = np.abs(y - back - 14.0 - 0.0004 * x ** 2) < 3.0
    canvas.hu[np.broadcast_to(table, canvas.hu.shape)] = 120.0
    outline = _ellipse_weight(x, y, a, b, edge) * np.clip((back - y) / edge + 0.5, 0, 1)
    outline = np.broadcast_to(outline, canvas.hu.shape)
    canvas.hu += outline * (FAT_HU - canvas.hu)
    if anatomy.sex == "F":
        for sign in (-1.0, 1.0):
            canvas.ellipsoid(chest.point(sign * 0.42 * a, -0.8 * b, 10.0), np.array([0.3 * a, 0.36 * b, 45.0]), -90)
            canvas.ellipsoid(chest.point(sign * 0.42 * a, -0.85 * b, 10.0), np.array([0.18 * a, 0.22 * b, 30.0]), 5)
    f = anatomy.fat_mm
    muscle = _ellipse_weight(x, y, a - f, b - f, edge) * np.clip((back - f - y) / edge + 0.5, 0, 1)
    canvas.hu += np.broadcast_to(muscle, canvas.hu.shape) * (MUSCLE_HU - canvas.hu)
    ca, cb = chest.cavity
    inner = np.broadcast_to(_ellipse_weight(x, y, ca + 6, cb + 6, edge), canvas.hu.shape)
    canvas.hu += inner * (FAT_HU + 15.0 - canvas.hu)
    chest.body = canvas.hu > -990.0


def draw_lungs(canvas: Canvas, chest: Chest, rng: np.random.Generator) -> None:
    """Lung parenchyma (gradient and texture), then liver, stomach and spleen below the domes."""
    anatomy = chest.anatomy
    x, y, z = _relative_axes(canvas.grid, anatomy)
    ca, cb = chest.cavity
    below = (((x / (ca + 4)) ** 2 + (y / (cb + 4)) ** 2) <= 1) & (z < anatomy.dome_z[0] + 5)
    liver_top = anatomy.dome_z[0] - 6.0 - 40.0 * ((x + 0.45 * ca) / (0.6 * ca)) ** 2
    liver = below & (z < liver_top) & (x < 25.0 - 0.3 * y)
    canvas.hu[liver] = 58.0
    dome_left = anatomy.dome_z[1]
    canvas.ellipsoid(chest.point(0.7 * ca, 0.55 * cb, dome_left - 45), np.array([28, 45, 45]), 48.0)
    stomach = chest.point(0.45 * ca, -0.1 * cb, dome_left - 42)
    canvas.ellipsoid(stomach, np.array([40, 38, 32]), 20.0)
    canvas.ellipsoid(stomach + np.array([0, 0, 14], np.float32), np.array([30, 28, 14]), -1000.0)
    texture = smooth_field(rng, canvas.grid, (8.0, 30.0), terms=12)
    parenchyma = np.float32(anatomy.lung_hu) + np.float32(35.0 / cb) * y + np.float32(10.0) * texture
    for mask in chest.lungs.values():
        canvas.hu[mask] = np.broadcast_to(parenchyma, canvas.hu.shape)[mask]


def draw_heart(canvas: Canvas, chest: Chest, scale: float, pericardial_mm: float) -> None:
    """Pericardial fat, an optional pericardial fluid rim of ``pericardial_mm``, and the heart enlarged by ``scale``."""
    center = chest.point(*chest.anatomy.heart_center[:2], chest.anatomy.heart_center[2])
    radii = chest.heart_scale_radii(scale)
    rot = chest.heart_rotation
    canvas.ellipsoid(center, radii + np.float32(pericardial_mm + 4.0), FAT_HU + 10.0, rot)
    if pericardial_mm > 0:
        canvas.ellipsoid(center, radii + np.float32(pericardial_mm), FLUID_HU, rot)
        canvas.ellipsoid(center, radii + np.float32(1.5), FAT_HU + 20.0, rot)
    canvas.ellipsoid(center, radii, BLOOD_HU, rot)


def aorta_path(chest: Chest) -> list[np.ndarray]:
    """Centre-line points of the aorta: aortic root, ascending aorta, arch, descending aorta down to the grid's end."""
    anatomy = chest.anatomy
    hx, hy, hz = anatomy.heart_center
    ax, ay = _descending_aorta_xy(anatomy)
    arch_z = anatomy.carina_z + 22.0
    root = chest.point(hx - 20.0, hy + 14.0, hz + 25.0)
    points = [root, chest.point(-12.0, hy + 6.0, arch_z - 12.0)]
    for t in np.linspace(0.15, 0.85, 5):
        angle = np.pi * t
        points.append(chest.point(-12.0 + (ax + 12.0) * t, (hy + 6.0 + ay) / 2 - (ay - hy - 6.0) / 2 * np.cos(angle),
                                  arch_z + 14.0 * np.sin(angle)))
    points.append(chest.point(ax, ay, arch_z - 12.0))
    points.append(chest.point(ax - 4.0, ay + 2.0, chest.grid.origin[2] - 10.0))
    return points


def draw_mediastinum(canvas: Canvas, chest: Chest) -> None:
    """Aorta, pulmonary arteries, SVC, oesophagus, trachea and main bronchi, and small normal lymph nodes."""
    anatomy = chest.anatomy
    path = aorta_path(chest)
    radius = anatomy.aorta_radius
    for i, (start, end) in enumerate(zip(path[:-1], path[1:])):
        canvas.tube(start, end, radius * (1.2 if i < 2 else 1.0), BLOOD_HU)
    hx, hy, hz = anatomy.heart_center
    carina = anatomy.carina_z
    trunk = chest.point(hx - 2.0, hy + 2.0, carina - 14.0)
    canvas.tube(chest.point(hx, hy - 5.0, hz + 20.0), trunk, 12.0, BLOOD_HU)
    for side in ("right", "left"):
        canvas.tube(trunk, chest.point(SIDE_SIGN[side] * 48.0, 12.0, carina - 22.0), 9.0, BLOOD_HU)
    canvas.tube(chest.point(-24.0, -4.0, canvas.grid.axis(2)[-1] + 5), chest.point(-22.0, hy + 10.0, hz + 35.0), 9.0,
                BLOOD_HU)
    spine_y = _spine_y(anatomy)
    canvas.tube(chest.point(4.0, spine_y - 30.0, canvas.grid.axis(2)[-1] + 5),
                chest.point(14.0, spine_y - 32.0, anatomy.dome_z[1] - 5.0), 7.0, MUSCLE_HU - 5.0)
    trachea_top = chest.point(0.0, spine_y - 48.0, canvas.grid.axis(2)[-1] + 5)
    carina_point = chest.point(0.0, spine_y - 44.0, carina)
    canvas.tube(trachea_top, carina_point, 10.5, MUSCLE_HU - 30.0)
    canvas.tube(trachea_top, carina_point, 8.5, -990.0)
    for side in ("right", "left"):
        hilum = chest.point(SIDE_SIGN[side] * 46.0, 14.0, carina - 22.0)
        canvas.tube(carina_point, hilum, 7.0, MUSCLE_HU - 30.0)
        canvas.tube(carina_point, hilum, 5.5, -990.0)
    for x, y, dz in ((-16.0, spine_y - 40.0, 28.0), (6.0, spine_y - 30.0, -18.0), (18.0, spine_y - 58.0, 12.0)):
        canvas.ellipsoid(chest.point(x, y, carina + dz), np.array([3.5, 3.0, 4.0]), MUSCLE_HU)


def draw_tree(canvas: Canvas, chest: Chest, bronchus_scale: dict[tuple[str, str], float],
              wall_scale: dict[tuple[str, str], float]) -> None:
    """Pulmonary vessels and companion bronchi inside the lungs.

    Args:
        canvas: the canvas.
        chest: the chest (its trees and lung masks).
        bronchus_scale: ``{(side, zone): factor}`` on the bronchial lumen (bronchiectasis: about 2; else 1), which
            also makes bronchi visible one generation further out.
        wall_scale: ``{(side, zone): factor}`` on the bronchial wall thickness (peribronchial thickening: about 3).
    """
    lungs = chest.lungs["left"] | chest.lungs["right"]
    for branch in chest.branches:
        canvas.tube(branch.start, branch.end, branch.radius, BLOOD_HU, lungs, end_radius=branch.radius * 0.85)
    for branch in chest.branches:
        dilation = bronchus_scale.get((branch.side, branch.zone), 1.0)
        if branch.generation > (2 if dilation == 1.0 else 3):
            continue
        lumen = branch.radius * 0.75 * dilation
        wall = (0.7 + 0.22 * lumen) * wall_scale.get((branch.side, branch.zone), 1.0)
        offset = _perpendicular(branch.end - branch.start) * np.float32(branch.radius + lumen + wall + 0.5)
        start, end = branch.start + offset, branch.end + offset
        wall_hu = -60.0 if wall_scale.get((branch.side, branch.zone), 1.0) == 1.0 else 20.0
        canvas.tube(start, end, lumen + wall, wall_hu, lungs)
        canvas.tube(start, end, lumen, -985.0, lungs)


def _perpendicular(direction: np.ndarray) -> np.ndarray:
    helper = np.array([0.0, 0.0, 1.0], np.float32) if abs(direction[2]) < 0.9 * np.linalg.norm(direction) else \
        np.array([1.0, 0.0, 0.0], np.float32)
    normal = np.cross(direction, helper)
    return (normal / max(float(np.linalg.norm(normal)), 1e-6)).astype(np.float32)


def draw_bones(canvas: Canvas, chest: Chest) -> None:
    """Spine (bodies, discs, canal, spinous processes), paraspinal muscles, ribs and cartilage, sternum, scapulae."""
    anatomy = chest.anatomy
    x, y, z = _relative_axes(canvas.grid, anatomy)
    spine_y = _spine_y(anatomy)
    shape = canvas.hu.shape
    for sign in (-1.0, 1.0):
        para = ((x - sign * 30) / 20.0) ** 2 + ((y - spine_y - 50) / 17.0) ** 2 <= 1.0
        canvas.hu[np.broadcast_to(para, shape)] = MUSCLE_HU + 5.0
    r2 = x ** 2 + (y - spine_y) ** 2
    level = np.mod(z + 7.0, 28.0)
    body = np.broadcast_to(r2 <= 19.0 ** 2, shape)
    canvas.hu[body] = np.broadcast_to(np.where(level < 5.0, 85.0, 230.0), shape)[body]
    cortex = np.broadcast_to((r2 <= 19.0 ** 2) & (r2 > 16.5 ** 2), shape) & np.broadcast_to(level >= 5.0, shape)
    canvas.hu[cortex] = 600.0
    canal = x ** 2 + (y - spine_y - 28.0) ** 2
    ring = np.broadcast_to((canal <= 11.0 ** 2) & (canal > 7.5 ** 2), shape)
    canvas.hu[ring] = 520.0
    canvas.hu[np.broadcast_to(canal <= 7.5 ** 2, shape)] = 15.0
    spinous = (np.abs(x) < 4.0) & (y > spine_y + 38.0) & (y < spine_y + 64.0) & (np.mod(z, 28.0) < 16.0)
    canvas.hu[np.broadcast_to(spinous, shape)] = 480.0
    a, b = chest.cavity
    angle = np.arctan2(x, y)  # 0 posterior midline, +-pi anterior
    radius = np.sqrt((x / (a + 9.0)) ** 2 + (y / (b + 9.0)) ** 2)
    phase = np.mod((z + 30.0 * np.abs(angle)) / 27.0, 1.0)
    rib_zone = (np.abs(angle) > 0.45) & (z < anatomy.apex_z + 5.0) & (z > anatomy.dome_z[1] - 70.0)
    rib = rib_zone & (np.abs(radius - 1.0) < 5.0 / (b + 9.0)) & (phase < 0.3)
    cartilage = rib & (np.abs(angle) > 2.55)
    canvas.hu[cartilage] = 110.0
    bone = rib & ~cartilage
    marrow = np.broadcast_to(np.abs(radius - 1.0) < 2.0 / (b + 9.0), shape)
    canvas.hu[bone & marrow] = 260.0
    canvas.hu[bone & ~marrow] = 650.0
    sternum = (np.abs(x) < 14.0) & (np.abs(y + b + 9.0) < 5.0) & (z > anatomy.heart_center[2] - 30.0) & (
        z < anatomy.apex_z - 10.0)
    canvas.hu[np.broadcast_to(sternum, shape)] = 320.0
    scapula = (np.abs(np.abs(angle) - 0.9) < 0.22) & (np.abs(radius - 1.0 - 22.0 / b) < 3.5 / b) & (
        z > anatomy.carina_z - 10.0) & (z < anatomy.apex_z + 10.0)
    canvas.hu[np.broadcast_to(scapula, shape)] = 420.0
