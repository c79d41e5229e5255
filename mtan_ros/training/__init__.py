"""Training and evaluation of MTAN and its baselines (no ROS needed).

Small pieces, each usable on its own:
  losses     semantic / depth / normal losses, task_losses
  weighting  the Weighting base (backward hook) and its registry: equal, DWA, uncertainty, PCGrad
  schedule   learning-rate schedules (step, cosine, onecycle) as closed forms of the run's position
  config     TrainConfig (defaults = the paper's protocol), YAML + command line
  trainer    train(config) -> TrainResult: the resumable, multi-process loop, built from
    run        data, loaders, model, weighting, optimiser, schedule, resume (one function each)
    epoch      one training epoch and one validation pass
    checkpoints, rng, run_log   last.pt / best.pt, random state, console lines and per-epoch files
  evaluate   one pass over a split: losses and whole-split metrics
  train_cli, eval_cli, compare   the mtan-train / mtan-eval commands and the baseline comparison

Metrics, the report table and plots are in `mtan_ros.evaluation`, shared with
inference benchmarks and replay. Nothing is imported here, so `import mtan_ros.evaluation.metrics` stays light.
"""
