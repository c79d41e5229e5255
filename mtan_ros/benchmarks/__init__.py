"""Measurements printed as tables: Predictor backends, the node over DDS, several cameras, the GPU check."""
