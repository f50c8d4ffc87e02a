"""Referring expressions for lesions, computed relative to the other lesions of the same slice.

A lesion's **facts** in a slice (:class:`LesionFacts`) are measured on the stored label volume and mapped to world
space with the affine: in-slice area, centroid ``x`` (RAS+: larger = more to the patient's right) and ``y`` (larger =
more anterior), anatomical lobe, and density class. A **description** (:class:`Description`) is an attribute and a
value, such as ``("size", "max")`` or ``("size_in_lobe", "min:right")``. :func:`resolve` returns every lesion of the
slice a description could mean, treating near-ties as ambiguous (areas within ``size_ratio`` of each other, positions
within ``position_margin_mm``). A description is used only if it resolves to exactly its lesion.

Templates are data (:data:`TEMPLATES`): several paraphrases per attribute for training and a disjoint held-out set
used only for the test split. Each has a stable ``template_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "TEMPLATES",
    "Description",
    "LesionFacts",
    "Template",
    "candidate_descriptions",
    "choose_expressions",
    "render",
    "resolve",
    "templates_for",
]

ATTRIBUTES = ("only", "lobe", "density", "size", "lateral", "ap", "size_in_lobe", "size_in_density")
_COUNT_WORDS = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class LesionFacts:
    """What can be said about one lesion in one slice.

    Attributes:
        lesion: the lesion's value in the label volume.
        lobe: ``"right"`` or ``"left"`` anatomical liver lobe.
        density: ``"hypodense"`` or ``"hyperdense"``.
        area_mm2: in-slice cross-section area.
        x_mm: RAS+ world x of the in-slice centroid (larger = more to the patient's right).
        y_mm: RAS+ world y of the in-slice centroid (larger = more anterior).
    """

    lesion: int
    lobe: str
    density: str
    area_mm2: float
    x_mm: float
    y_mm: float


@dataclass(frozen=True)
class Description:
    """An attribute and value that may single out a lesion (see the module docstring)."""

    attribute: str
    value: str


@dataclass(frozen=True)
class Template:
    """A paraphrase for one attribute; ``held_out`` templates are used only in the test split."""

    template_id: str
    attribute: str
    text: str
    held_out: bool


def _t(template_id: str, text: str) -> Template:
    attribute = template_id.rsplit(".", 1)[0]
    return Template(template_id, attribute, text, held_out=template_id.rsplit(".", 1)[1].startswith("h"))


TEMPLATES: tuple[Template, ...] = (
    _t("only.t1", "the only lesion in this slice"),
    _t("only.t2", "the single {dens} lesion in the {side} lobe"),
    _t("only.t3", "segment the solitary liver lesion"),
    _t("only.h1", "the sole {dens} focal lesion"),
    _t("only.h2", "the one lesion seen in the {side} hepatic lobe"),
    _t("lobe.t1", "the lesion in the {side} lobe"),
    _t("lobe.t2", "the {side} lobe lesion"),
    _t("lobe.t3", "segment the lesion located in the {side} liver lobe"),
    _t("lobe.h1", "the focal lesion within the {side} hepatic lobe"),
    _t("lobe.h2", "find the lesion of the {side} lobe of the liver"),
    _t("density.t1", "the {dens} lesion"),
    _t("density.t2", "the lesion that is {darker} than the liver"),
    _t("density.t3", "segment the {dens} liver lesion"),
    _t("density.t4", "the {attn}-attenuation lesion"),
    _t("density.h1", "the focal lesion appearing {darker} than the surrounding parenchyma"),
    _t("density.h2", "find the {dens} hepatic lesion"),
    _t("size.t1", "the {larger} lesion"),
    _t("size.t2", "the {larger} of the {n} lesions"),
    _t("size.t3", "segment the {larger} liver lesion"),
    _t("size.h1", "the lesion that is {larger} in size"),
    _t("size.h2", "find the {larger} of the {n} focal lesions in this slice"),
    _t("lateral.t1", "the lesion {further} to the patient's {side}"),
    _t("lateral.t2", "the {side}most lesion"),
    _t("lateral.t3", "segment the {side}most liver lesion"),
    _t("lateral.h1", "the {side}most of the {n} hepatic lesions"),
    _t("lateral.h2", "find the lesion closest to the patient's {side} side"),
    _t("ap.t1", "the {more} {anterior} lesion"),
    _t("ap.t2", "the lesion located {more} {anterior}ly"),
    _t("ap.t3", "segment the {more} {anterior} liver lesion"),
    _t("ap.h1", "the lesion closest to the {front} of the abdomen"),
    _t("ap.h2", "the {more} {ventral} hepatic lesion"),
    _t("size_in_lobe.t1", "the {larger} lesion in the {side} lobe"),
    _t("size_in_lobe.t2", "of the lesions in the {side} lobe, the {larger} one"),
    _t("size_in_lobe.t3", "segment the {larger} {side} lobe lesion"),
    _t("size_in_lobe.h1", "the {larger} focal lesion within the {side} hepatic lobe"),
    _t("size_in_lobe.h2", "find the {larger} of the {side} lobe lesions"),
    _t("size_in_density.t1", "the {larger} {dens} lesion"),
    _t("size_in_density.t2", "of the {dens} lesions, the {larger} one"),
    _t("size_in_density.t3", "segment the {larger} {dens} liver lesion"),
    _t("size_in_density.h1", "the {larger} of the {dens} focal lesions"),
    _t("size_in_density.h2", "find the {larger} {attn}-attenuation lesion"),
)


def templates_for(attribute: str, held_out: bool) -> list[Template]:
    """Templates of one attribute, from the training pool or the held-out pool."""
    return [t for t in TEMPLATES if t.attribute == attribute and t.held_out == held_out]


def _extreme(facts: Sequence[LesionFacts], key: str, largest: bool, tolerance: float, ratio: bool) -> list[int]:
    """Lesions that could be "the most ``key``": the extreme one and any within ``tolerance`` of it."""
    values = np.array([getattr(f, key) for f in facts], dtype=float)
    best = values.max() if largest else values.min()
    if ratio:
        close = values * tolerance > best if largest else values < best * tolerance
    else:
        close = values > best - tolerance if largest else values < best + tolerance
    return [f.lesion for f, c in zip(facts, close) if c]


def resolve(
    description: Description, facts: Sequence[LesionFacts], size_ratio: float = 1.4, position_margin_mm: float = 10.0
) -> list[int]:
    """Every lesion of the slice that ``description`` could refer to.

    Args:
        description: attribute and value.
        facts: all lesions of the slice.
        size_ratio: areas within this factor of the extreme count as ties. Defaults to 1.4.
        position_margin_mm: centroids within this distance of the extreme (along the compared axis) count as ties.
            Defaults to 10.0.

    Returns:
        Lesion values; the description identifies a lesion when this is exactly ``[lesion]``.
    """
    attribute, value = description.attribute, description.value
    if attribute == "only":
        return [f.lesion for f in facts]
    if attribute in ("lobe", "density"):
        return [f.lesion for f in facts if getattr(f, attribute) == value]
    if attribute == "size":
        return _extreme(facts, "area_mm2", value == "max", size_ratio, ratio=True) if len(facts) > 1 else []
    if attribute == "lateral":
        return _extreme(facts, "x_mm", value == "right", position_margin_mm, ratio=False) if len(facts) > 1 else []
    if attribute == "ap":
        return _extreme(facts, "y_mm", value == "anterior", position_margin_mm, ratio=False) if len(facts) > 1 else []
    if attribute in ("size_in_lobe", "size_in_density"):
        extreme, group = value.split(":")
        field = "lobe" if attribute == "size_in_lobe" else "density"
        members = [f for f in facts if getattr(f, field) == group]
        if len(members) < 2:
            return []
        return _extreme(members, "area_mm2", extreme == "max", size_ratio, ratio=True)
    raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")


def candidate_descriptions(target: LesionFacts, facts: Sequence[LesionFacts]) -> list[Description]:
    """Descriptions that are true of ``target`` (uniqueness is checked separately with :func:`resolve`)."""
    if len(facts) == 1:
        return [Description("only", "")]
    right = target.x_mm >= max(f.x_mm for f in facts)
    front = target.y_mm >= max(f.y_mm for f in facts)
    big = target.area_mm2 >= max(f.area_mm2 for f in facts)
    lobe_mates = [f.area_mm2 for f in facts if f.lobe == target.lobe]
    density_mates = [f.area_mm2 for f in facts if f.density == target.density]
    return [
        Description("lobe", target.lobe),
        Description("density", target.density),
        Description("size", "max" if big else "min"),
        Description("lateral", "right" if right else "left"),
        Description("ap", "anterior" if front else "posterior"),
        Description("size_in_lobe", f"{'max' if target.area_mm2 >= max(lobe_mates) else 'min'}:{target.lobe}"),
        Description("size_in_density", f"{'max' if target.area_mm2 >= max(density_mates) else 'min'}:{target.density}"),
    ]


def render(template: Template, description: Description, target: LesionFacts, facts: Sequence[LesionFacts]) -> str:
    """Fill a template for ``target`` under ``description`` (the template's attribute must match)."""
    if template.attribute != description.attribute:
        raise ValueError(
            f"template {template.template_id} is for {template.attribute!r}, not {description.attribute!r}"
        )
    value = description.value
    extreme, group = value.split(":") if ":" in value else (value, "")
    if description.attribute in ("size_in_lobe", "size_in_density"):
        field = "lobe" if description.attribute == "size_in_lobe" else "density"
        compared = sum(getattr(f, field) == group for f in facts)
    else:
        compared = len(facts)
    superlative = compared > 2
    hypo = target.density == "hypodense"
    anterior = value == "anterior"
    slots = {
        "side": value if description.attribute == "lateral" else target.lobe,
        "dens": target.density,
        "darker": "darker" if hypo else "brighter",
        "attn": "low" if hypo else "high",
        "n": _COUNT_WORDS.get(len(facts), str(len(facts))),
        "larger": {("max", False): "larger", ("max", True): "largest", ("min", False): "smaller",
                   ("min", True): "smallest"}.get((extreme, superlative), ""),
        "further": "furthest" if superlative else "further",
        "more": "most" if superlative else "more",
        "anterior": "anterior" if anterior else "posterior",
        "ventral": "ventral" if anterior else "dorsal",
        "front": "front" if anterior else "back",
    }
    return template.text.format(**slots)


def choose_expressions(
    target: LesionFacts,
    facts: Sequence[LesionFacts],
    count: int,
    held_out: bool,
    rng: np.random.Generator,
    size_ratio: float = 1.4,
    position_margin_mm: float = 10.0,
) -> list[tuple[str, Template, Description]]:
    """Pick ``count`` expressions that identify ``target`` uniquely among ``facts``.

    Distinct descriptions are preferred; when fewer are valid than ``count``, descriptions repeat with other
    templates.

    Args:
        target: the lesion to describe.
        facts: all lesions of the slice (``target`` included).
        count: number of expressions.
        held_out: draw templates from the held-out pool (test split) instead of the training pool.
        rng: random generator.
        size_ratio: see :func:`resolve`. Defaults to 1.4.
        position_margin_mm: see :func:`resolve`. Defaults to 10.0.

    Returns:
        ``(text, template, description)`` triples; empty if no description identifies the lesion.
    """
    valid = [
        d for d in candidate_descriptions(target, facts)
        if resolve(d, facts, size_ratio, position_margin_mm) == [target.lesion]
    ]
    if not valid:
        return []
    order = list(rng.permutation(len(valid)))
    chosen = [valid[order[i % len(valid)]] for i in range(count)]
    picked: list[tuple[str, Template, Description]] = []
    used: set[str] = set()
    for description in chosen:
        pool = [t for t in templates_for(description.attribute, held_out) if t.template_id not in used] or \
            templates_for(description.attribute, held_out)
        template = pool[int(rng.integers(len(pool)))]
        used.add(template.template_id)
        picked.append((render(template, description, target, facts), template, description))
    return picked
