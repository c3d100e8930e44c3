"""Hyperparameter search: sweep.py trains a grid of configurations x seeds (vmapped
hyperparameters in one compiled program per group of shapes); tune.py searches with
Optuna (TPE, pruning, SQLite storage); distributed.py runs either on a Ray cluster.
"""
