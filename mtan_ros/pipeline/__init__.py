"""What the node does with frames, without ROS: newest-frame slot, input monitoring, log throttling."""
