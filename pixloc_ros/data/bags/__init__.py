"""rosbag2 (MCAP) drive recordings, written and read with the ``rosbags`` library (pure Python CDR, no
rclpy): camera images and CameraInfo, wheel odometry, GNSS fixes, static transforms and ground-truth
poses. Shared by the synthetic data generator, the dataset importers, the offline evaluator and the
bag player. ROS-free; imports ``core.geometry``.

``messages``: what a recording holds (topics, frames, message types, one dataclass per message kind);
``writer``: ``DriveBagWriter``; ``reader``: ``iter_frames``, ``read_drive``, ``iter_raw``, ``bag_topics``.
Public API (imported on first use): every public name of the three.
"""
from pixloc_ros.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    **dict.fromkeys(["MAP_FRAME", "ODOM_FRAME", "BASE_FRAME", "CAMERA_FRAME", "IMAGE_MSG",
                      "COMPRESSED_IMAGE_MSG", "CAMERA_INFO_MSG", "ODOMETRY_MSG", "NAVSATFIX_MSG", "TF_MSG",
                      "POSE_STAMPED_MSG", "ENCODINGS", "NAVSAT_STATUS_FIX", "NAVSAT_SERVICE_GPS",
                      "COVARIANCE_TYPE_DIAGONAL_KNOWN", "typestore", "DriveTopics", "CameraInfoData",
                      "StaticTransform", "OdometrySample", "GnssFix", "PoseSample", "ImageFrame", "Drive",
                      "RawMessage", "BagTopic", "static_transform_chain", "rig_camera_topics",
                      "rig_camera_frame"], "messages"),
    **dict.fromkeys(["DriveBagWriter", "encode_image"], "writer"),
    **dict.fromkeys(["decode_image", "iter_frames", "read_drive", "iter_raw", "bag_topics"], "reader"),
})
