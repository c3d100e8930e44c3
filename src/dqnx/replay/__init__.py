"""Replay storage as pure functions on array pytrees. uniform.py: the plain ring buffer."""
