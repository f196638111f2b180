"""Objects as a few primitives each, with sizes typical of the real class so that geometry is informative.

Each function draws one object's dimensions from ``rng`` and returns its parts in the object frame: x along
its length (forward), y to its left, z up from the ground it stands on. Riders are labelled with their
vehicle as one class, as SemanticKITTI labels a bicyclist (person and bicycle) as ``bicyclist``.
"""

from __future__ import annotations

import numpy as np

from clip_seg3d_ros.synthetic.classes import class_index
from clip_seg3d_ros.synthetic.primitives import BOX, CYLINDER, ELLIPSOID, Part


def box(x: float, y: float, bottom: float, size: tuple[float, float, float], label: int) -> Part:
    """A box of full ``size`` (length, width, height) standing at height ``bottom`` under (x, y)."""
    length, width, height = size
    return Part(BOX, (x, y, bottom + height / 2), (length / 2, width / 2, height / 2), label)


def cylinder(x: float, y: float, bottom: float, radius: float, height: float, label: int) -> Part:
    return Part(CYLINDER, (x, y, bottom + height / 2), (radius, radius, height / 2), label)


def ellipsoid(center: tuple[float, float, float], semi_axes: tuple[float, float, float], label: int) -> Part:
    return Part(ELLIPSOID, center, semi_axes, label)


def footprint(parts: list[Part]) -> tuple[float, float]:
    """Half length (along x) and half width (along y) of the rectangle about the object origin that holds
    every part's footprint (parts are axis-aligned in the object frame)."""
    half_length = max(abs(part.center[0]) + part.half_size[0] for part in parts)
    half_width = max(abs(part.center[1]) + part.half_size[1] for part in parts)
    return half_length, half_width


def _wheels(axles_x: list[float], track: float, diameter: float, width: float, label: int) -> list[Part]:
    return [box(x, side * track / 2, 0.0, (diameter, width, diameter), label) for x in axles_x for side in (-1, 1)]


def car(rng: np.random.Generator) -> list[Part]:
    """A passenger car: 3.9-4.8 m long, 1.7-1.9 m wide, 1.4-1.6 m high; body, cabin and four wheels."""
    label = class_index("car")
    length, width, height = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6)
    body_top = rng.uniform(0.85, 0.95)
    return [
        box(0.0, 0.0, 0.3, (length, width, body_top - 0.3), label),
        box(-0.08 * length, 0.0, body_top, (0.5 * length, 0.9 * width, height - body_top), label),
        *_wheels([length / 2 - 0.75, -length / 2 + 0.75], width - 0.3, 0.62, 0.22, label),
    ]


def truck(rng: np.random.Generator) -> list[Part]:
    """A box truck: 7-10 m long, 2.3-2.55 m wide, 3.2-3.8 m high; cab, chassis, cargo box, three axles."""
    label = class_index("truck")
    length, width, height = rng.uniform(7.0, 10.0), rng.uniform(2.3, 2.55), rng.uniform(3.2, 3.8)
    cab, gap = 2.2, 0.2
    cargo = length - cab - gap
    return [
        box(length / 2 - cab / 2, 0.0, 0.5, (cab, width, 0.8 * height - 0.5), label),
        box(-length / 2 + cargo / 2, 0.0, 1.1, (cargo, width, height - 1.1), label),
        box(0.0, 0.0, 0.5, (length - 0.4, 0.8 * width, 0.6), label),
        *_wheels([length / 2 - 1.1, -length / 2 + 1.8, -length / 2 + 0.8], width - 0.4, 1.0, 0.35, label),
    ]


def other_vehicle(rng: np.random.Generator) -> list[Part]:
    """A bus: 10-12.5 m long, 2.55 m wide, 2.9-3.3 m high; one long body on two axles."""
    label = class_index("other-vehicle")
    length, height = rng.uniform(10.0, 12.5), rng.uniform(2.9, 3.3)
    return [
        box(0.0, 0.0, 0.35, (length, 2.55, height - 0.35), label),
        *_wheels([length / 2 - 2.5, -length / 2 + 3.0], 2.15, 1.0, 0.3, label),
    ]


def person(rng: np.random.Generator) -> list[Part]:
    """A pedestrian 1.55-1.9 m tall: legs, torso and head."""
    label = class_index("person")
    height = rng.uniform(1.55, 1.9)
    hip = 0.5 * height
    return [
        box(0.0, 0.0, 0.0, (0.25, 0.35, hip), label),
        cylinder(0.0, 0.0, hip, rng.uniform(0.18, 0.24), height - hip - 0.24, label),
        ellipsoid((0.0, 0.0, height - 0.12), (0.1, 0.09, 0.12), label),
    ]


def _bicycle_frame(rng: np.random.Generator, label: int) -> list[Part]:
    """Two thin wheels, frame, saddle and handlebar: 1.65-1.8 m long, about 1.05 m high, 0.55 m wide."""
    length, wheel = rng.uniform(1.65, 1.8), 0.68
    front = length / 2 - wheel / 2
    return [
        *[box(x, 0.0, 0.0, (wheel, 0.05, wheel), label) for x in (front, -front)],
        box(0.05, 0.0, 0.45, (0.9, 0.05, 0.25), label),
        box(-0.25, 0.0, 0.7, (0.05, 0.05, 0.2), label),
        box(-0.25, 0.0, 0.9, (0.25, 0.12, 0.06), label),
        box(front - 0.1, 0.0, 0.68, (0.05, 0.05, 0.32), label),
        box(front - 0.1, 0.0, 1.0, (0.06, 0.55, 0.06), label),
    ]


def _motorcycle_frame(rng: np.random.Generator, label: int) -> list[Part]:
    """Wheels, engine/body, tank and seat, handlebar: 1.9-2.2 m long, about 1.1 m high, 0.75 m wide."""
    length, wheel = rng.uniform(1.9, 2.2), 0.62
    front = length / 2 - wheel / 2
    return [
        *[box(x, 0.0, 0.0, (wheel, 0.15, wheel), label) for x in (front, -front)],
        box(0.0, 0.0, 0.3, (1.1, 0.4, 0.5), label),
        box(-0.1, 0.0, 0.8, (0.95, 0.32, 0.18), label),
        box(front - 0.15, 0.0, 0.5, (0.08, 0.1, 0.55), label),
        box(front - 0.2, 0.0, 1.05, (0.08, 0.75, 0.06), label),
    ]


def _rider(label: int, seat_x: float, seat_z: float, reach: float, helmet: bool) -> list[Part]:
    """A seated rider whose hips are at (seat_x, seat_z) and whose hands reach ``reach`` metres forward."""
    head = 0.14 if helmet else 0.11
    return [
        box(seat_x + 0.1, 0.0, seat_z - 0.5, (0.3, 0.4, 0.55), label),
        cylinder(seat_x, 0.0, seat_z, 0.19, 0.6, label),
        box(seat_x + reach / 2, 0.0, seat_z + 0.35, (reach, 0.45, 0.08), label),
        ellipsoid((seat_x + 0.05, 0.0, seat_z + 0.6 + head), (head, 0.9 * head, head), label),
    ]


def bicycle(rng: np.random.Generator) -> list[Part]:
    return _bicycle_frame(rng, class_index("bicycle"))


def bicyclist(rng: np.random.Generator) -> list[Part]:
    """A bicycle with its rider, about 1.75 m high, all labelled ``bicyclist``."""
    label = class_index("bicyclist")
    return [*_bicycle_frame(rng, label), *_rider(label, seat_x=-0.25, seat_z=0.95, reach=0.65, helmet=False)]


def motorcycle(rng: np.random.Generator) -> list[Part]:
    return _motorcycle_frame(rng, class_index("motorcycle"))


def motorcyclist(rng: np.random.Generator) -> list[Part]:
    """A motorcycle with its helmeted rider, about 1.75 m high, all labelled ``motorcyclist``."""
    label = class_index("motorcyclist")
    return [*_motorcycle_frame(rng, label), *_rider(label, seat_x=-0.3, seat_z=0.98, reach=0.7, helmet=True)]


def pole(rng: np.random.Generator) -> list[Part]:
    """A lamp or utility pole, 5-9 m high, 8-15 cm radius; half of them carry a lamp arm along +x."""
    label = class_index("pole")
    height, radius = rng.uniform(5.0, 9.0), rng.uniform(0.08, 0.15)
    parts = [cylinder(0.0, 0.0, 0.0, radius, height, label)]
    if rng.random() < 0.5:
        arm = rng.uniform(1.0, 2.0)
        parts.append(box(arm / 2, 0.0, height - 0.3, (arm, 0.12, 0.12), label))
    return parts


def traffic_sign(rng: np.random.Generator) -> list[Part]:
    """A sign plate (square or round, 0.6-0.9 m, facing along x) on a 2.0-2.6 m post labelled ``pole``."""
    sign, post_label = class_index("traffic-sign"), class_index("pole")
    post, size = rng.uniform(2.0, 2.6), rng.uniform(0.6, 0.9)
    plate_center = post + size / 2 - 0.1
    if rng.random() < 0.5:
        plate = box(0.05, 0.0, plate_center - size / 2, (0.04, size, size), sign)
    else:
        plate = ellipsoid((0.05, 0.0, plate_center), (0.02, size / 2, size / 2), sign)
    return [cylinder(0.0, 0.0, 0.0, 0.04, post, post_label), plate]


def tree(rng: np.random.Generator) -> list[Part]:
    """A trunk (12-30 cm radius, 2-3.5 m) carrying an ellipsoid crown 2.4-6 m wide."""
    trunk_height, crown, crown_height = rng.uniform(2.0, 3.5), rng.uniform(1.2, 3.0), rng.uniform(1.2, 2.5)
    axes = (crown, crown * rng.uniform(0.85, 1.15), crown_height)
    return [
        cylinder(0.0, 0.0, 0.0, rng.uniform(0.12, 0.3), trunk_height, class_index("trunk")),
        ellipsoid((0.0, 0.0, trunk_height + 0.7 * crown_height), axes, class_index("vegetation")),
    ]


def bush(rng: np.random.Generator) -> list[Part]:
    """A round bush (1-3 m wide) or a hedge (3-8 m long, 0.8-1.5 m high)."""
    label = class_index("vegetation")
    if rng.random() < 0.5:
        axes = (rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), rng.uniform(0.4, 0.9))
        return [ellipsoid((0.0, 0.0, 0.8 * axes[2]), axes, label)]
    return [box(0.0, 0.0, 0.0, (rng.uniform(3.0, 8.0), 0.8, rng.uniform(0.8, 1.5)), label)]


def fence(length: float, rng: np.random.Generator) -> list[Part]:
    """A fence panel ``length`` metres along x, 5-10 cm thick, 1-2 m high."""
    return [box(0.0, 0.0, 0.0, (length, rng.uniform(0.05, 0.1), rng.uniform(1.0, 2.0)), class_index("fence"))]


def building(length: float, depth: float, rng: np.random.Generator) -> list[Part]:
    """A block ``length`` x ``depth``, 5-20 m high; a third of them get a set-back upper storey block."""
    label = class_index("building")
    height = rng.uniform(5.0, 20.0)
    parts = [box(0.0, 0.0, 0.0, (length, depth, height), label)]
    if rng.random() < 1 / 3:
        parts.append(box(0.0, 0.0, height, (0.6 * length, 0.6 * depth, rng.uniform(3.0, 8.0)), label))
    return parts
