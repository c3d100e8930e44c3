"""Imitation learning: a trained agent's greedy decisions as labelled data, and a classifier policy learned from them.

    dataset.py   roll out an expert (any trained run) and write (state, action) rows to CSV or Parquet;
                 read such a file back strictly (errors name the row and column)
    train.py     train a classifier policy on them with cross-entropy; write a standard run directory
                 that `dqnx eval` evaluates like any agent

The policy itself is an agent, dqnx/agents/imitation.py; its settings are `ImitationConfig`.
"""
