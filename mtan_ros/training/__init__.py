"""Training and evaluation of MTAN and its baselines (no ROS needed).

Small pieces, each usable on its own:
  metrics    ConfusionMatrix, DepthErrors, depth_errors (reference definitions)
  losses     semantic / depth / normal losses, task_losses
  weighting  EqualWeighting, DynamicWeightAverage, UncertaintyWeighting
  config     TrainConfig (defaults = the paper's protocol), YAML + command line
  trainer    train(config) -> TrainResult: the resumable, multi-process loop
  evaluate   one pass over a split: losses and whole-split metrics
  report     the paper-style results table, report.json
  plots      training curves and prediction mosaics
  train_cli, eval_cli, compare   the mtan-train / mtan-eval commands and the baseline comparison

Nothing is imported here, so `import mtan_ros.training.metrics` stays light.
"""
