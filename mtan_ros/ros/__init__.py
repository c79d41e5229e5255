"""Everything that needs ROS: the node (node/), camera input (camera/), replay (replay/), process plumbing."""
