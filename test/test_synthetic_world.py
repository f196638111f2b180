"""The synthetic world: exact ray casting, determinism, classes, the LiDAR model, and agreement between the
LiDAR sweep and the camera renders through the calibration."""

import numpy as np
import pytest

from clip_seg3d_ros.geometry.camera import project_points
from clip_seg3d_ros.synthetic import (
    CLASS_NAMES,
    CameraConfig,
    LidarConfig,
    SyntheticWorld,
    WorldConfig,
    class_index,
)
from clip_seg3d_ros.synthetic.objects import box, cylinder, ellipsoid
from clip_seg3d_ros.synthetic.primitives import PrimitiveBuilder
from clip_seg3d_ros.synthetic.raycast import RayWindows, cast, surface_normals

# Smaller sensors than the defaults keep the tests fast; every check below holds for the defaults too.
SMALL = WorldConfig(seed=0, lidar=LidarConfig(beams=32, azimuth_steps=1024),
                    cameras=(CameraConfig(width=320, height=192),))


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(SMALL)


@pytest.fixture(scope="module")
def scenes(world):
    return [world.scene(index) for index in range(3)]


def full_windows(count: int, rows: int, cols: int) -> RayWindows:
    """Every ray against every primitive: the reference the culled windows must match."""
    return RayWindows(np.zeros(count, np.int64), np.full(count, rows), np.zeros(count, np.int64), np.full(count, cols))


def test_ray_casting_hits_each_primitive_kind_where_geometry_says():
    builder = PrimitiveBuilder()
    builder.add([box(10.0, 0.0, -1.0, (2.0, 2.0, 2.0), 0)], 0.0, 0.0, 0.0, 0.0)  # faces x = 9
    builder.add([cylinder(0.0, 10.0, -1.0, 1.0, 2.0, 1)], 0.0, 0.0, 0.0, 0.0)  # side at y = 9
    builder.add([ellipsoid((-10.0, 0.0, 0.0), (2.0, 1.0, 1.0), 2)], 0.0, 0.0, 0.0, 0.0)  # x = -8
    builder.add([cylinder(0.0, 0.0, -12.0, 1.0, 4.0, 3)], 0.0, 0.0, 0.0, 0.0)  # top cap at z = -8
    builder.add([box(0.0, 0.0, -1.0, (6.0, 2.0, 2.0), 4)], 0.0, -10.0, 0.0, np.pi / 2)  # turned: faces y = -7
    primitives = builder.build()
    directions = np.array([[[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, -1], [0, -1, 0]]], dtype=np.float64)
    origin = np.zeros(3)
    hits = cast(origin, directions, primitives, full_windows(len(primitives), 1, 5))
    np.testing.assert_allclose(hits.distance, [9.0, 9.0, 8.0, 8.0, 7.0])
    np.testing.assert_array_equal(primitives.label[hits.primitive], [0, 1, 2, 3, 4])
    normals = surface_normals(origin, directions, primitives, hits)
    np.testing.assert_allclose(normals, [[-1, 0, 0], [0, -1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], atol=1e-12)


def test_culled_windows_find_exactly_the_hits_of_testing_every_primitive():
    config = WorldConfig(seed=5, lidar=LidarConfig(beams=16, azimuth_steps=360),
                         cameras=(CameraConfig(width=96, height=64),))
    world = SyntheticWorld(config)
    primitives = world.primitives(0)
    for sensor, origin in ((world.lidar, np.zeros(3)), (world.cameras[0], world.cameras[0].origin)):
        rows, cols = sensor.directions.shape[:2]
        culled = cast(origin, sensor.directions, primitives, sensor.windows(primitives))
        reference = cast(origin, sensor.directions, primitives, full_windows(len(primitives), rows, cols))
        np.testing.assert_array_equal(culled.primitive, reference.primitive)
        np.testing.assert_array_equal(culled.distance, reference.distance)
        assert (reference.primitive >= 0).mean() > 0.5  # the comparison covers many hits


def test_same_seed_gives_the_same_scene_and_another_index_another(scenes):
    again = SyntheticWorld(SMALL).scene(0)
    first = scenes[0]
    np.testing.assert_array_equal(again.points, first.points)
    np.testing.assert_array_equal(again.labels, first.labels)
    for name in ("image", "label_image", "depth"):
        np.testing.assert_array_equal(getattr(again.cameras[0], name), getattr(first.cameras[0], name))
    np.testing.assert_array_equal(again.cameras[0].camera.lidar_to_camera, first.cameras[0].camera.lidar_to_camera)
    other = scenes[1]
    assert other.name != first.name
    assert len(other.points) != len(first.points) or not np.array_equal(other.points, first.points)
    assert (other.cameras[0].label_image != first.cameras[0].label_image).mean() > 0.05


def test_sensor_settings_do_not_move_objects_but_the_seed_does():
    layout = SyntheticWorld(SMALL).primitives(0)
    same = SyntheticWorld(WorldConfig(seed=0)).primitives(0)  # default sensors
    np.testing.assert_array_equal(layout.center, same.center)
    np.testing.assert_array_equal(layout.label, same.label)
    other = SyntheticWorld(WorldConfig(seed=1)).primitives(0)
    assert len(other) != len(layout) or not np.array_equal(other.center, layout.center)


def test_every_class_occurs_in_a_few_sweeps(scenes):
    counts = sum(np.bincount(scene.labels, minlength=len(CLASS_NAMES)) for scene in scenes)
    assert len(counts) == len(CLASS_NAMES) == 19
    missing = [name for name, count in zip(CLASS_NAMES, counts, strict=True) if count < 10]
    assert not missing, f"classes with fewer than 10 points in 3 sweeps: {missing}"
    # The bulk of a street sweep is ground and buildings, as in SemanticKITTI.
    ground = sum(counts[class_index(name)] for name in ("road", "sidewalk", "parking", "terrain", "other-ground"))
    assert 0.4 < ground / counts.sum() < 0.9


def test_sweeps_follow_the_lidar_model(world, scenes):
    config = world.config.lidar
    for scene in scenes:
        points, labels = scene.points, scene.labels
        assert points.dtype == np.float32 and points.shape[1] == 4 and labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() < len(CLASS_NAMES)  # a LiDAR return always hit something
        assert 0.6 * config.beams * config.azimuth_steps < len(points) <= config.beams * config.azimuth_steps
        distance = np.linalg.norm(points[:, :3], axis=1)
        assert distance.min() > config.min_range - 0.2 and distance.max() < config.max_range + 0.2
        elevation = np.degrees(np.arcsin(points[:, 2] / distance))
        assert elevation.max() < config.elevation_max_deg + 0.1 and elevation.min() > config.elevation_min_deg - 0.1
        road = points[labels == class_index("road")]
        assert abs(np.median(road[:, 2]) + config.mount_height) < 0.01  # the road lies 1.73 m below the sensor
        intensity = points[:, 3]
        assert intensity.min() >= 0 and intensity.max() <= 1
        signs = intensity[labels == class_index("traffic-sign")]
        if len(signs):
            assert signs.mean() > 0.7 > intensity[labels == class_index("road")].mean()


def test_range_noise_and_dropout_have_their_configured_strength():
    def sweep(noise: float, dropout: float) -> np.ndarray:
        lidar = LidarConfig(beams=32, azimuth_steps=1024, range_noise_std=noise, dropout=dropout)
        return SyntheticWorld(WorldConfig(seed=2, lidar=lidar, cameras=())).scene(0).points

    clean, noisy, sparse = sweep(0.0, 0.0), sweep(0.05, 0.0), sweep(0.0, 0.3)
    assert len(noisy) == len(clean)  # without dropout the same rays return, in the same order
    error = np.linalg.norm(noisy[:, :3], axis=1) - np.linalg.norm(clean[:, :3], axis=1)
    assert abs(error.std() - 0.05) < 0.005 and abs(error.mean()) < 0.002
    assert abs(len(sparse) / len(clean) - 0.7) < 0.02


def test_camera_calibration_follows_the_lidar_and_optical_conventions(world):
    model = world.cameras[0].model
    ahead, left, up = np.array([10.27, 0.0, -0.08]), np.array([10.27, 1.0, -0.08]), np.array([10.27, 0.0, 0.92])
    # 45 deg to the left at the 90 deg camera's left border: u = -0.5, the border of the first pixel.
    border = np.array([10.27, 10.0, -0.08])
    projection = project_points(np.stack([ahead, left, up, border]), model)
    np.testing.assert_array_equal(projection.point_indices, [0, 1, 2])
    np.testing.assert_allclose(projection.depth, 10.0)
    (u0, v0), (u1, _), (_, v2) = projection.pixels
    assert (u0, v0) == pytest.approx(((model.width - 1) / 2, (model.height - 1) / 2))
    assert u1 < u0 and v2 < v0
    centre = model.lidar_to_camera @ np.append(border, 1.0)
    assert model.K[0, 0] * centre[0] / centre[2] + model.K[0, 2] == pytest.approx(-0.5)


def test_renders_are_consistent_images(scenes):
    for scene in scenes:
        frame = scene.cameras[0]
        height, width = frame.camera.height, frame.camera.width
        assert frame.image.shape == (height, width, 3) and frame.image.dtype == np.uint8
        assert frame.label_image.shape == (height, width) and frame.label_image.dtype == np.int64
        assert frame.depth.shape == (height, width) and frame.depth.dtype == np.float32
        sky = frame.label_image == -1
        np.testing.assert_array_equal(sky, np.isinf(frame.depth))
        assert 0.05 < sky.mean() < 0.6
        sky_rgb = frame.image[sky].astype(float).mean(axis=0)
        assert sky_rgb[2] > sky_rgb[0] + 20  # blue sky
        assert (frame.label_image[-1] == class_index("road")).mean() > 0.5  # the ego lane below the camera


def test_lidar_labels_and_ranges_agree_with_the_camera_render(scenes):
    for scene in scenes:
        frame = scene.cameras[0]
        projection = project_points(scene.points[:, :3], frame.camera)
        # Part of the sweep is seen by the camera, most of it by the LiDAR only.
        assert 0.1 < len(projection.point_indices) / len(scene.points) < 0.5
        rows, cols = projection.pixel_indices()
        labels = scene.labels[projection.point_indices]
        agree = frame.label_image[rows, cols] == labels
        assert agree.mean() >= 0.95, f"{scene.name}: {agree.mean():.3f} of projected labels agree"

        # A point's depth lies between the depths of the four pixel centres around its exact projection (on one
        # surface 1/depth is affine in the pixel coordinates), up to the range noise (2 cm) and float error.
        u, v = projection.pixels[:, 0], projection.pixels[:, 1]
        u0 = np.clip(np.floor(u).astype(int), 0, frame.camera.width - 2)
        v0 = np.clip(np.floor(v).astype(int), 0, frame.camera.height - 2)
        around = np.stack([frame.depth[v0 + dv, u0 + du] for dv in (0, 1) for du in (0, 1)], axis=1)
        between = (around.min(axis=1) - 0.1 <= projection.depth) & (projection.depth <= around.max(axis=1) + 0.1)
        assert between[agree].mean() >= 0.95, f"{scene.name}: {between[agree].mean():.3f} of depths agree"
        assert np.median(np.abs(frame.depth[rows, cols] - projection.depth)[agree]) < 0.1
