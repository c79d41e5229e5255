"""What the node does with frames, without ROS: newest-frame slot, multi-camera batch scheduler, input
monitoring, log throttling."""
