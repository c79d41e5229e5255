"""Replay: the bag player, the evaluator, the synthetic camera and the graph that wires them."""
