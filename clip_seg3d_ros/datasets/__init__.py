"""Dataset loaders; every one returns :class:`clip_seg3d_ros.sample.Sample` objects."""
