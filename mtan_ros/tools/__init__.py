"""Operator tools that sit on top of the package (checks of a machine, not library code)."""
