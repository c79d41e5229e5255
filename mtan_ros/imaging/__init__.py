"""Image handling without ROS: decoding, encodings, size limits, transport codecs."""
