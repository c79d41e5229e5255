"""Utilities every layer may use: no ROS, no torch at import time."""
