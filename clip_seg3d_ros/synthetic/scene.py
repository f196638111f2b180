"""Procedural street scenes: the ground, buildings and objects of one scene as :class:`Primitives`.

The street runs along x through the LiDAR origin (the ego vehicle drives in the lane at y = 0, towards +x).
Across it, on each side: road, a curbed sidewalk, a verge of segments (terrain, parking or other-ground),
then a zone of buildings with terrain between them. Objects stand where their class belongs: vehicles in
lanes or parked at the curb or in parking lots, people and parked two-wheelers on sidewalks, poles and signs
at the curb, trees and bushes on terrain. All heights are in the LiDAR frame, the road surface at ``ground_z``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clip_seg3d_ros.synthetic import objects
from clip_seg3d_ros.synthetic.classes import class_index
from clip_seg3d_ros.synthetic.primitives import Part, PrimitiveBuilder, Primitives

LANE_WIDTH = 3.5
GROUND_THICKNESS = 1.0  # ground tiles are solid slabs, so curbs and steps between them show as faces
EGO_CLEARANCE = 3.5  # metres around the origin kept free: the ego vehicle is there
# Height ranges of verge surfaces above the sidewalk: grass a little raised or sunk, lots and squares level.
VERGE_HEIGHTS = {"terrain": (-0.05, 0.25), "parking": (-0.03, 0.02), "other-ground": (0.0, 0.1)}
EGO_LANE_GAP = 10.0  # metres between the ego vehicle's centre and the nearest end of a vehicle in its lane


@dataclass
class SceneConfig:
    """Street extent and object counts; each count is an inclusive (min, max) range drawn per scene.

    Objects are placed within ``object_range`` metres of the origin along the street, where the LiDAR sees them
    with enough points; an object that finds no free spot in a few tries is left out.
    """

    half_length: float = 80.0
    object_range: float = 45.0
    cars: tuple[int, int] = (8, 14)
    trucks: tuple[int, int] = (1, 3)
    other_vehicles: tuple[int, int] = (1, 2)
    persons: tuple[int, int] = (4, 8)
    bicycles: tuple[int, int] = (2, 4)
    bicyclists: tuple[int, int] = (2, 3)
    motorcycles: tuple[int, int] = (2, 3)
    motorcyclists: tuple[int, int] = (1, 2)
    poles: tuple[int, int] = (6, 10)
    traffic_signs: tuple[int, int] = (3, 6)
    trees: tuple[int, int] = (6, 12)
    bushes: tuple[int, int] = (4, 8)
    fences: tuple[int, int] = (2, 4)
    placement_tries: int = 30


@dataclass(frozen=True)
class _Area:
    """A rectangle of ground, x0 < x1 and y0 < y1, whose surface is at height ``top``."""

    kind: str
    x0: float
    x1: float
    y0: float
    y1: float
    top: float


@dataclass
class _Street:
    """Where things may go: ground areas by kind, driving lanes and curb parking lines as (y, yaw)."""

    areas: list[_Area]
    lanes: list[tuple[float, float]]
    curbs: list[tuple[float, float]]
    road_top: float


class _Occupancy:
    """Footprints already taken, as discs; an object's rectangle is covered by discs along its length."""

    def __init__(self) -> None:
        self._discs = np.array([[0.0, 0.0, EGO_CLEARANCE]])

    @staticmethod
    def discs(x: float, y: float, yaw: float, half_length: float, half_width: float) -> np.ndarray:
        # Discs at most half_width apart cover the rectangle's corners too (for widths up to 5 m).
        radius = half_width + 0.3  # a small gap, so that neighbours do not touch
        reach = max(half_length - half_width, 0.0)
        count = int(np.ceil(2 * reach / half_width)) + 1
        along = np.linspace(-reach, reach, count)
        return np.stack([x + np.cos(yaw) * along, y + np.sin(yaw) * along, np.full(count, radius)], axis=1)

    def take_if_free(self, discs: np.ndarray) -> bool:
        gaps = np.hypot(discs[:, None, 0] - self._discs[None, :, 0], discs[:, None, 1] - self._discs[None, :, 1])
        if np.any(gaps < discs[:, None, 2] + self._discs[None, :, 2]):
            return False
        self._discs = np.concatenate([self._discs, discs])
        return True


def _segments(rng: np.random.Generator, start: float, stop: float, shortest: float, longest: float) -> list[tuple]:
    """Split [start, stop] into consecutive pieces of random length in [shortest, longest] (the last may be shorter)."""
    edges = [start]
    while edges[-1] < stop:
        edges.append(min(edges[-1] + rng.uniform(shortest, longest), stop))
    return list(zip(edges[:-1], edges[1:], strict=True))


def _ground_strip(builder: PrimitiveBuilder, label: int, pieces: list[tuple], y0: float, y1: float, top: float) -> None:
    """One object of slab tiles (tiles keep each primitive's bounding box small, so culling stays tight)."""
    parts = [objects.box((x0 + x1) / 2, (y0 + y1) / 2, -GROUND_THICKNESS, (x1 - x0, y1 - y0, GROUND_THICKNESS), label)
             for x0, x1 in pieces]
    builder.add(parts, 0.0, 0.0, top, 0.0)


def _lay_out_ground(config: SceneConfig, ground_z: float, rng: np.random.Generator,
                    builder: PrimitiveBuilder) -> _Street:
    """Road, sidewalks, verges, buildings and fences; returns where objects may go."""
    length = config.half_length
    right, left = -rng.uniform(2.5, 6.0), rng.uniform(5.5, 12.0)
    tiles = _segments(rng, -length, length, 10.0, 20.0)
    _ground_strip(builder, class_index("road"), tiles, right, left, ground_z)
    # Lanes at multiples of the lane width from the ego lane, leaving room for curb parking on the left.
    lanes = [(k * LANE_WIDTH, 0.0 if k * LANE_WIDTH < (left + right) / 2 else np.pi)
             for k in range(4) if k * LANE_WIDTH + LANE_WIDTH / 2 <= left - 2.0]
    curbs = [(left - 1.0, np.pi)] + ([(right + 1.0, 0.0)] if right <= -4.0 else [])

    areas = []
    fence_spots = []
    for side, edge in ((-1.0, right), (1.0, left)):
        sidewalk_top = ground_z + rng.uniform(0.1, 0.18)
        sidewalk_outer = edge + side * rng.uniform(2.0, 4.0)
        verge_outer = sidewalk_outer + side * rng.uniform(3.0, 10.0)
        back_outer = verge_outer + side * 60.0
        _ground_strip(builder, class_index("sidewalk"), tiles, *sorted((edge, sidewalk_outer)), sidewalk_top)
        areas.append(_Area("sidewalk", -length, length, *sorted((edge, sidewalk_outer)), sidewalk_top))

        # The verge: segments of terrain (slightly raised grass), parking lots and other ground.
        for x0, x1 in _segments(rng, -length, length, 8.0, 25.0):
            kind = str(rng.choice(["terrain", "parking", "other-ground"], p=[0.5, 0.3, 0.2]))
            top = sidewalk_top + rng.uniform(*VERGE_HEIGHTS[kind])
            _ground_strip(builder, class_index(kind), [(x0, x1)], *sorted((sidewalk_outer, verge_outer)), top)
            areas.append(_Area(kind, x0, x1, *sorted((sidewalk_outer, verge_outer)), top))
            if kind != "parking":
                fence_spots.append((x0, x1, verge_outer - side * 0.1, top))

        # Behind the verge: buildings with terrain in the gaps, on a terrain strip wide enough for the far rays.
        back_top = sidewalk_top + rng.uniform(0.0, 0.2)
        _ground_strip(builder, class_index("terrain"), tiles, *sorted((verge_outer, back_outer)), back_top)
        for x0, x1 in _segments(rng, -length, length, 10.0, 30.0):
            if rng.random() < 0.7:
                gap, setback, depth = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(8.0, 15.0)
                parts = objects.building(x1 - x0 - gap, depth, rng)
                builder.add(parts, (x0 + x1) / 2, verge_outer + side * (setback + depth / 2), back_top, 0.0)
            else:
                areas.append(_Area("backyard", x0, x1, *sorted((verge_outer, verge_outer + side * 15.0)), back_top))

    # Fences along the outer edge of terrain and other-ground verge segments near the ego vehicle.
    near = [spot for spot in fence_spots if spot[1] > -config.object_range and spot[0] < config.object_range]
    for index in rng.permutation(len(near))[: rng.integers(config.fences[0], config.fences[1] + 1)]:
        x0, x1, y, top = near[index]
        builder.add(objects.fence(x1 - x0 - 1.0, rng), (x0 + x1) / 2, y, top, 0.0)
    return _Street(areas=areas, lanes=lanes, curbs=curbs, road_top=ground_z)


def _place(builder: PrimitiveBuilder, occupancy: _Occupancy, parts: list[Part], tries: int,
           pose: Callable[[float, float], tuple[float, float, float, float] | None]) -> None:
    """Put ``parts`` at the first free pose ``pose(half_length, half_width)`` draws: (x, y, ground z, yaw);
    a draw of None (the chosen area is too small for the object) counts as a failed try."""
    half_length, half_width = objects.footprint(parts)
    for _ in range(tries):
        drawn = pose(half_length, half_width)
        if drawn is None:
            continue
        x, y, z, yaw = drawn
        if occupancy.take_if_free(_Occupancy.discs(x, y, yaw, half_length, half_width)):
            builder.add(parts, x, y, z, yaw)
            return


class _Poses:
    """Pose samplers for the places objects go; each returns (x, y, ground z, yaw), or None if no such place."""

    def __init__(self, street: _Street, config: SceneConfig, rng: np.random.Generator) -> None:
        self.street, self.range, self.rng = street, config.object_range, rng

    def _x(self) -> float:
        return self.rng.uniform(-self.range, self.range)

    def lane(self, half_length: float, half_width: float) -> tuple:
        """Driving in a lane; in the ego lane at least EGO_LANE_GAP ahead or behind, as traffic keeps its distance
        (and a bus right in front would hide most of the camera's view)."""
        y, yaw = self.street.lanes[self.rng.integers(len(self.street.lanes))]
        if y == 0.0:
            x = self.rng.choice([-1.0, 1.0]) * self.rng.uniform(EGO_LANE_GAP + half_length, self.range)
        else:
            x = self._x()
        return x, y + self.rng.normal(0.0, 0.15), self.street.road_top, yaw + self.rng.normal(0.0, 0.03)

    def curb(self, half_length: float, half_width: float) -> tuple:
        y, yaw = self.street.curbs[self.rng.integers(len(self.street.curbs))]
        return self._x(), y + self.rng.normal(0.0, 0.1), self.street.road_top, yaw + self.rng.normal(0.0, 0.05)

    def road_edge(self, half_length: float, half_width: float) -> tuple:
        """Riding near the curb, inside the outermost lane on either side."""
        y, yaw = self.street.curbs[self.rng.integers(len(self.street.curbs))]
        return self._x(), y + self.rng.uniform(-0.2, 0.2), self.street.road_top, yaw + self.rng.normal(0.0, 0.05)

    def area(self, kinds: tuple[str, ...], heading: str = "random", curb_offset: float | None = None):
        """A sampler for a random spot in an area of one of ``kinds`` within range.

        ``heading``: "random", "along" the street or "road" (x axis towards the road: lamp arms reach over it);
        ``curb_offset``: stand that far from the area's road-side edge (poles and signs line the curb).
        """
        def sample(half_length: float, half_width: float) -> tuple | None:
            areas = [a for a in self.street.areas if a.kind in kinds and a.x1 > -self.range and a.x0 < self.range]
            if not areas:
                return None
            extent = np.array([min(a.x1, self.range) - max(a.x0, -self.range) for a in areas])
            area = areas[self.rng.choice(len(areas), p=extent / extent.sum())]
            right_side = area.y1 <= 0
            yaw = {"random": self.rng.uniform(-np.pi, np.pi), "along": self.rng.normal(0.0, 0.05),
                   "road": np.pi / 2 if right_side else -np.pi / 2}[heading]
            # The margins keep the turned footprint inside the area (at the curb, lamp arms may reach over the road).
            margin_x = abs(np.cos(yaw)) * half_length + abs(np.sin(yaw)) * half_width
            margin_y = abs(np.sin(yaw)) * half_length + abs(np.cos(yaw)) * half_width
            x0, x1 = max(area.x0, -self.range) + margin_x, min(area.x1, self.range) - margin_x
            y0, y1 = area.y0 + margin_y, area.y1 - margin_y
            if curb_offset is not None:
                y0 = y1 = area.y1 - curb_offset if right_side else area.y0 + curb_offset
            if x0 >= x1 or y0 > y1:
                return None
            return self.rng.uniform(x0, x1), self.rng.uniform(y0, y1), area.top, yaw
        return sample


def generate_scene(config: SceneConfig, ground_z: float, rng: np.random.Generator) -> Primitives:
    """One street scene drawn from ``rng``; the road surface is at height ``ground_z`` (LiDAR frame)."""
    builder = PrimitiveBuilder()
    street = _lay_out_ground(config, ground_z, rng, builder)
    occupancy = _Occupancy()
    poses = _Poses(street, config, rng)
    parked_in_lot = poses.area(("parking",), "road")
    # Big things first, so that they find room; each entry: count range, object model, where it goes.
    plan = [
        (config.other_vehicles, objects.other_vehicle, lambda: poses.lane),
        (config.trucks, objects.truck, lambda: [poses.lane, poses.curb][rng.integers(2)]),
        (config.cars, objects.car, lambda: [poses.lane, poses.curb, parked_in_lot][rng.choice(3, p=[0.4, 0.4, 0.2])]),
        (config.motorcyclists, objects.motorcyclist, lambda: [poses.lane, poses.road_edge][rng.integers(2)]),
        (config.bicyclists, objects.bicyclist, lambda: poses.road_edge),
        (config.traffic_signs, objects.traffic_sign, lambda: poses.area(("sidewalk",), "along", curb_offset=0.3)),
        (config.poles, objects.pole, lambda: poses.area(("sidewalk",), "road", curb_offset=0.5)),
        (config.trees, objects.tree, lambda: poses.area(("terrain", "backyard", "sidewalk"))),
        (config.bushes, objects.bush, lambda: poses.area(("terrain", "backyard"))),
        (config.motorcycles, objects.motorcycle, lambda: [poses.curb, poses.area(("sidewalk",))][rng.integers(2)]),
        (config.bicycles, objects.bicycle, lambda: poses.area(("sidewalk", "parking"))),
        (config.persons, objects.person, lambda: poses.area(("sidewalk", "parking", "terrain"))),
    ]
    for (low, high), model, where in plan:
        for _ in range(rng.integers(low, high + 1)):
            _place(builder, occupancy, model(rng), config.placement_tries, where())
    return builder.build()
