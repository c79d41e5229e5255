"""Judging predictions: whole-split metrics, the paper's report table, plots, replay scoring."""
