"""Camera input: subscriptions and QoS, DDS transport settings, sensor_msgs image conversion."""
