"""Rosbags of camera frames with ground truth (no ROS needed).

- `make_bag`: `mtan-make-bag`, a dataset split -> rosbag2 (mcap or sqlite3) with
  image, camera_info, depth and label ground truth (see its module doc for the topics);
- `reader`: `open_bag(path).messages()`, a sequential reader that hands out every intact
  message of a damaged bag, lists what was lost in `Bag.damage` and then raises
  `BagCorruptError`;
- `messages`: CDR bytes of the messages, built and parsed with the rosbags type store,
  and the default topic names shared by the player, the evaluator and the launch file.

Nothing here imports rclpy; the ROS nodes live in `mtan_ros.ros`.
"""
