"""The run directory: config, checkpoints, weights, metrics, summary (run_dir.py)."""
