"""Agents as pure functions. dqn.py holds the DQN family; new agents go beside it."""
