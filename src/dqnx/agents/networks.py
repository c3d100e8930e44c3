"""Q-networks: an MLP for vector observations, the Nature CNN for images.

Both map a batch of observations to one Q-value per action. uint8 observations
(images) are scaled to [0, 1] inside the network, so replay can keep them as bytes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _as_float(obs: jax.Array) -> jax.Array:
    if obs.dtype == jnp.uint8:
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


class QNetwork(nn.Module):
    """MLP from a (batch of) observation(s), flattened, to one Q-value per action."""

    num_actions: int
    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _as_float(obs).reshape(obs.shape[0], -1)
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


class NatureCNN(nn.Module):
    """The convolutional Q-network of Mnih et al. (2015): 32 8x8/4, 64 4x4/2, 64 3x3/1,
    then a dense layer of 512 per `hidden_sizes` (default one) and the Q-values.

    `layout` says how observations arrive: "CHW" (stacked frames, channels first) or
    "HWC" (an RGB image, as most Gymnasium image observations).
    """

    num_actions: int
    hidden_sizes: tuple[int, ...] = (512,)
    layout: str = "CHW"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _as_float(obs)
        if self.layout == "CHW":
            x = jnp.moveaxis(x, -3, -1)  # flax convolutions take channels last
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), padding="VALID")(x))
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


# The Nature CNN's valid convolutions (8/4, 4/2, 3/1) need images of at least 36x36.
MIN_CNN_SIZE = 36


def make_network(kind: str, num_actions: int, hidden_sizes: tuple[int, ...], obs_shape: tuple[int, ...],
                 image_layout: str | None = None) -> nn.Module:
    """'mlp', 'cnn', or 'auto': the CNN for images (rank 3, uint8, at least 36x36), else the MLP.

    Small rank-3 observations such as MinAtar's 10x10x4 boards go to the MLP under 'auto'.
    """
    height, width = _image_size(obs_shape, image_layout)
    if kind == "auto":
        big_image = image_layout is not None and min(height, width) >= MIN_CNN_SIZE
        kind = "cnn" if big_image else "mlp"
    if kind == "cnn":
        from dqnx.errors import UsageError

        if len(obs_shape) != 3 or min(height, width) < MIN_CNN_SIZE:
            raise UsageError(f"network=cnn needs image observations of at least {MIN_CNN_SIZE}x{MIN_CNN_SIZE}, "
                             f"got shape {obs_shape}; use network=mlp")
        return NatureCNN(num_actions=num_actions, hidden_sizes=tuple(hidden_sizes), layout=image_layout or "HWC")
    return QNetwork(num_actions=num_actions, hidden_sizes=tuple(hidden_sizes))


def _image_size(obs_shape: tuple[int, ...], layout: str | None) -> tuple[int, int]:
    if len(obs_shape) != 3:
        return 0, 0
    return tuple(obs_shape[1:]) if layout == "CHW" else tuple(obs_shape[:2])
