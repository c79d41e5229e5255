"""The perception node: lifecycle, parameters, outputs, diagnostics, point clouds."""
