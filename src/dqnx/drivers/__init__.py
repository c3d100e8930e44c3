"""Training loops. jax_loop.py: the compiled loop for JAX-native environments."""
