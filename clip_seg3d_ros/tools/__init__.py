"""Command-line tools around the library (run with ``python -m clip_seg3d_ros.tools.<name>``)."""
