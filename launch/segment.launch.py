"""Start the segmentation node (and optionally RViz).

    ros2 launch clip_seg3d_ros segment.launch.py checkpoint:=/path/model.pt input_topic:=/velodyne_points
    ros2 launch clip_seg3d_ros segment.launch.py checkpoint:=model.pt rviz:=true device:=cpu

Arguments: ``checkpoint`` (required), ``input_topic`` (remapped onto the node's ``~/input/points``),
``device``, ``use_cameras`` (camera topics come from the parameters file), ``rviz`` (starts rviz2 with
config/segment.rviz) and ``params_file`` (default: the installed config/segment.yaml). Arguments given here
override the same parameters in the file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "clip_seg3d_ros"
NODE_NAME = "clip_seg3d_node"  # clip_seg3d_ros.nodes.settings.NODE_NAME, the key in config/segment.yaml


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("checkpoint", description="path of the trained checkpoint (.pt)"),
        DeclareLaunchArgument("input_topic", default_value="/points", description="the LiDAR's PointCloud2 topic"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("use_cameras", default_value="false",
                              description="fuse CLIP on camera images (camera_topics in params_file)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/segment.rviz"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "segment.yaml"]),
                              description="node parameters (clip_seg3d_node: ros__parameters: ...)"),
    ]
    segment = Node(
        package=PACKAGE,
        executable="segment",
        name=NODE_NAME,
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "use_cameras": ParameterValue(LaunchConfiguration("use_cameras"), value_type=bool),
            },
        ],
        remappings=[("~/input/points", LaunchConfiguration("input_topic"))],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "segment.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, segment, rviz])
