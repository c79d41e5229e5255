"""What the node does with frames, without ROS: the newest-frame batch scheduler (one camera or several),
input monitoring, log throttling."""
