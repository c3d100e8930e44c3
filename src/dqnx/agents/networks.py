"""Q-networks: an MLP for vector observations, the Nature CNN for images, the MinAtar
network for small multi-channel boards, and their heads.

Every network maps a batch of observations to Q(s, .) of shape [batch, actions]; a
distributional (C51) network to logits of shape [batch, actions, atoms]. uint8
observations (images) are scaled to [0, 1] inside the network, so replay can keep
them as bytes.

Three shapes of Q-network (`q_head`):

- per_action_output: state in, one output per action (DQN's shape);
- state_action: state and a one-hot action in, one value out; the network is run
  once per action (all actions in one batched call) and the agent scores each;
- per_action_heads: a shared trunk, then a separate small MLP head per action.

Dueling adds a value stream V(s) and treats the action outputs as advantages,
Q = V + A - mean_a A. Noisy networks replace every dense layer with `NoisyDense`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
}


def _as_float(obs: jax.Array) -> jax.Array:
    if obs.dtype == jnp.uint8:
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


def hidden_layers(x: jax.Array, widths: tuple[int, ...], dense: Any, layer_norm: bool, act: Any) -> jax.Array:
    """Dense layers of `widths` (`dense(width)` builds each), each followed by a LayerNorm when
    `layer_norm`, then `act`. Called inside a module's compact method: the layers are the caller's
    submodules, named in creation order (Dense_i, LayerNorm_i), as saved runs' tensors are."""
    for width in widths:
        x = dense(width)(x)
        if layer_norm:
            x = nn.LayerNorm()(x)
        x = act(x)
    return x


class PatchConv(nn.Module):
    """A VALID, strided 2-D convolution written as patches times a matrix (im2col), with
    nn.Conv's parameters (`kernel` [size, size, in, out], `bias` [out]) and outputs.

    Hand-written because XLA's CPU backend computes a convolution's kernel gradient about
    8x slower inside a compiled loop (lax.scan / while) than outside it, and dqnx trains
    inside one. `python benchmarks/conv.py` (2-core CPU, jax 0.10.2), per gradient step in
    lax.scan: the MinAtar network on 128 boards 15.4 ms with nn.Conv, 2.0 ms with this; the
    Nature CNN on 32 frames 326 ms against 39 ms. Patches are cut by slicing, so the gradient is
    slices and one matrix product, which XLA runs at matmul speed everywhere.
    """

    features: int
    size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        size, stride, channels = self.size, self.stride, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (size, size, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        height = (x.shape[-3] - size) // stride + 1
        width = (x.shape[-2] - size) // stride + 1
        # The (row, column, channel) order of the patch features matches the kernel's reshape below.
        patches = jnp.concatenate(
            [x[..., i:i + stride * (height - 1) + 1:stride, j:j + stride * (width - 1) + 1:stride, :]
             for i in range(size) for j in range(size)], axis=-1)
        return patches @ kernel.reshape(size * size * channels, self.features) + bias


class NoisyDense(nn.Module):
    """A dense layer with factorised Gaussian weight noise (Fortunato et al. 2018).

    w = mu_w + sigma_w * (f(e_in) f(e_out)^T), b = mu_b + sigma_b * f(e_out), with
    f(x) = sign(x) sqrt(|x|) and e ~ N(0, 1) drawn from the 'noise' RNG stream. With
    `noise` False the layer is its mean (mu) alone: the greedy policy is deterministic.
    flax has no noisy layer, hence this one.
    """

    features: int
    sigma0: float = 0.5
    noise: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)  # noqa: E731
        mu_kernel = self.param("mu_kernel", uniform, (fan_in, self.features))
        mu_bias = self.param("mu_bias", uniform, (self.features,))
        sigma = self.sigma0 / math.sqrt(fan_in)
        sigma_kernel = self.param("sigma_kernel", nn.initializers.constant(sigma), (fan_in, self.features))
        sigma_bias = self.param("sigma_bias", nn.initializers.constant(sigma), (self.features,))
        if not self.noise:
            return x @ mu_kernel + mu_bias
        in_key, out_key = jax.random.split(self.make_rng("noise"))
        scale = lambda e: jnp.sign(e) * jnp.sqrt(jnp.abs(e))  # noqa: E731
        noise_in = scale(jax.random.normal(in_key, (fan_in,)))
        noise_out = scale(jax.random.normal(out_key, (self.features,)))
        kernel = mu_kernel + sigma_kernel * jnp.outer(noise_in, noise_out)
        return x @ kernel + mu_bias + sigma_bias * noise_out


class QNetwork(nn.Module):
    """Observation(s) to Q(s, .) [batch, actions], or C51 logits [batch, actions, atoms].

    With `conv` the Nature CNN's convolutions come first (see NatureCNN), with
    `small_conv` the MinAtar network's one convolution (see SmallCNN); with `layer_norm`
    (and `conv_layer_norm`, its default) a LayerNorm follows every convolution too, as in
    PQN's networks; runs of format dqnx-run/1 predate it and load with `conv_layer_norm`
    False. With the
    defaults (relu, no LayerNorm, per_action_output, no dueling, no noise, one atom)
    this is the plain MLP, with the same parameter names as before these options.
    """

    num_actions: int
    hidden_sizes: tuple[int, ...]
    activation: str = "relu"
    layer_norm: bool = False
    q_head: str = "per_action_output"
    head_sizes: tuple[int, ...] = (32,)
    dueling: bool = False
    noisy: bool = False
    noisy_sigma0: float = 0.5
    num_atoms: int = 1
    conv: bool = False
    small_conv: bool = False
    layout: str = "CHW"
    conv_layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array, noise: bool = False) -> jax.Array:
        act = ACTIVATIONS[self.activation]

        def dense(width: int) -> nn.Module:
            return NoisyDense(width, self.noisy_sigma0, noise) if self.noisy else nn.Dense(width)

        def mlp(x: jax.Array, widths: tuple[int, ...]) -> jax.Array:
            return hidden_layers(x, widths, dense, self.layer_norm, act)

        batch, actions, atoms = obs.shape[0], self.num_actions, self.num_atoms
        x = _as_float(obs)
        if (self.conv or self.small_conv) and self.layout == "CHW":
            x = jnp.moveaxis(x, -3, -1)  # flax convolutions take channels last
        convolutions = []
        if self.small_conv:
            convolutions = [(SMALL_CNN_CHANNELS, 3, 1)]
        if self.conv:
            convolutions = [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
        for i, (channels, size, stride) in enumerate(convolutions):
            x = PatchConv(channels, size, stride, name=f"Conv_{i}")(x)
            if self.layer_norm and self.conv_layer_norm:
                # As purejaxql's PQN CNNs (MinAtar, Atari): LayerNorm over the channels at each position,
                # before the ReLU. Named apart so the dense layers' LayerNorm_i keep their names.
                x = nn.LayerNorm(name=f"ConvLayerNorm_{i}")(x)
            x = nn.relu(x)
        x = x.reshape(batch, -1)

        if self.q_head == "state_action":
            # Every (state, action) pair in one batched pass: [batch, actions, features + actions].
            one_hot = jnp.broadcast_to(jnp.eye(actions, dtype=x.dtype), (batch, actions, actions))
            pairs = jnp.concatenate([jnp.broadcast_to(x[:, None], (batch, actions, x.shape[-1])), one_hot], -1)
            out = dense(atoms)(mlp(pairs, self.hidden_sizes))  # [batch, actions, atoms]
        else:
            x = mlp(x, self.hidden_sizes)
            if self.q_head == "per_action_heads":
                out = jnp.stack([dense(atoms)(mlp(x, self.head_sizes)) for _ in range(actions)], axis=1)
            else:
                out = dense(actions * atoms)(x).reshape(batch, actions, atoms)
            if self.dueling:
                value = dense(atoms)(x)[:, None, :]  # [batch, 1, atoms]
                out = dueling_combine(value, out)
        return out[..., 0] if atoms == 1 else out


def dueling_combine(value: jax.Array, advantage: jax.Array) -> jax.Array:
    """Q = V + A - mean_a A (Wang et al. 2016), broadcast over the action axis (axis 1).

    >>> dueling_combine(jnp.array([[1.0]]), jnp.array([[2.0, 4.0]]))
    Array([[0., 2.]], dtype=float32)
    """
    return value + advantage - advantage.mean(axis=1, keepdims=True)


class NatureCNN(QNetwork):
    """The convolutional Q-network of Mnih et al. (2015): 32 8x8/4, 64 4x4/2, 64 3x3/1,
    then a dense layer of 512 per `hidden_sizes` (default one) and the Q-values.

    `layout` says how observations arrive: "CHW" (stacked frames, channels first) or
    "HWC" (an RGB image, as most Gymnasium image observations).
    """

    hidden_sizes: tuple[int, ...] = (512,)
    conv: bool = True


class SmallCNN(QNetwork):
    """The MinAtar network of Young & Tian (2019): one 3x3 convolution of 16 channels,
    stride 1, no padding, ReLU; then a dense layer of 128 per `hidden_sizes` (default)
    and the Q-values. A 10x10 board becomes 8x8x16 = 1,024 features, a quarter of the
    Nature CNN's filters and widths for a board a hundredth of Atari's 84x84 frames.

    `layout` as NatureCNN's: "HWC" (MinAtar's boards, channels last) or "CHW".
    """

    hidden_sizes: tuple[int, ...] = (128,)
    small_conv: bool = True
    layout: str = "HWC"


# The Nature CNN's valid convolutions (8/4, 4/2, 3/1) need images of at least 36x36.
MIN_CNN_SIZE = 36
# Boards whose sides are all at most this go to the MinAtar network under network=auto
# (MinAtar's 10x10, MiniGrid's 7x7 views); between it and MIN_CNN_SIZE, the MLP.
MAX_SMALL_CNN_SIZE = 20
# The MinAtar network's 3x3 convolution needs boards of at least 3x3.
MIN_SMALL_CNN_SIZE = 3
SMALL_CNN_CHANNELS = 16  # Young & Tian's filters: a quarter of the Nature CNN's 64


def make_network(kind: str, num_actions: int, hidden_sizes: tuple[int, ...], obs_shape: tuple[int, ...],
                 image_layout: str | None = None, **options) -> nn.Module:
    """'mlp', 'cnn' (Nature), 'small_cnn' (MinAtar), or 'auto', which picks by the observation:

    - an image (rank 3 with a known `image_layout`) of at least 36x36: the Nature CNN;
    - a multi-channel board (rank 3, known layout) with sides of at most 20: the MinAtar network;
    - anything else: the MLP.

    `options` are QNetwork's head and layer fields (activation, layer_norm, q_head, ...).
    """
    from dqnx.errors import UsageError

    height, width = _image_size(obs_shape, image_layout)
    if kind == "auto":
        kind = "mlp"
        if image_layout is not None and min(height, width) >= MIN_CNN_SIZE:
            kind = "cnn"
        elif image_layout is not None and MIN_SMALL_CNN_SIZE <= min(height, width) and max(height, width) <= MAX_SMALL_CNN_SIZE:
            kind = "small_cnn"
    if kind == "cnn":
        if len(obs_shape) != 3 or min(height, width) < MIN_CNN_SIZE:
            small = " or network=small_cnn" if len(obs_shape) == 3 and min(height, width) >= MIN_SMALL_CNN_SIZE else ""
            raise UsageError(f"network=cnn needs image observations of at least {MIN_CNN_SIZE}x{MIN_CNN_SIZE}, "
                             f"got shape {obs_shape}; use network=mlp{small}")
        return NatureCNN(num_actions=num_actions, hidden_sizes=tuple(hidden_sizes), layout=image_layout or "HWC", **options)
    if kind == "small_cnn":
        if len(obs_shape) != 3 or min(height, width) < MIN_SMALL_CNN_SIZE:
            raise UsageError(f"network=small_cnn needs rank-3 board observations (height, width, channels) of at least "
                             f"{MIN_SMALL_CNN_SIZE}x{MIN_SMALL_CNN_SIZE}, got shape {obs_shape}; use network=mlp")
        return SmallCNN(num_actions=num_actions, hidden_sizes=tuple(hidden_sizes), layout=image_layout or "HWC", **options)
    return QNetwork(num_actions=num_actions, hidden_sizes=tuple(hidden_sizes), **options)


def _image_size(obs_shape: tuple[int, ...], layout: str | None) -> tuple[int, int]:
    if len(obs_shape) != 3:
        return 0, 0
    return tuple(obs_shape[1:]) if layout == "CHW" else tuple(obs_shape[:2])


class RecurrentQNetwork(nn.Module):
    """One step of a recurrent Q-network: (memory, observation) -> (memory, Q(s, .)).

    The MLP of `hidden_sizes` (as QNetwork's), then flax's recurrent cell (`memory`:
    'gru' is nn.GRUCell, 'lstm' nn.OptimizedLSTMCell) of `memory_size` units, then the
    Q head (dueling optional). The memory is the cell's carry: an array [batch,
    memory_size] for a GRU, a (cell, hidden) pair for an LSTM; `initial_memory` builds
    the zeros an episode starts from. Sequences are unrolled by the caller
    (agents/dqn.py), one call per step.
    """

    num_actions: int
    hidden_sizes: tuple[int, ...]
    memory: str = "gru"
    memory_size: int = 64
    activation: str = "relu"
    layer_norm: bool = False
    dueling: bool = False

    @nn.compact
    def __call__(self, memory: Any, obs: jax.Array) -> tuple[Any, jax.Array]:
        act = ACTIVATIONS[self.activation]
        x = _as_float(obs).reshape(obs.shape[0], -1)
        x = hidden_layers(x, self.hidden_sizes, nn.Dense, self.layer_norm, act)
        cell = nn.GRUCell(self.memory_size) if self.memory == "gru" else nn.OptimizedLSTMCell(self.memory_size)
        memory, x = cell(memory, x)
        q = nn.Dense(self.num_actions)(x)
        if self.dueling:
            q = dueling_combine(nn.Dense(1)(x), q)
        return memory, q


def with_memory_gate_bias(params: Any, memory: str, bias: float) -> Any:
    """RecurrentQNetwork's `params` with `bias` added to the bias of the gate that keeps the
    memory: the GRU's update gate z (flax's GRUCell: h' = (1 - z) n + z h, z = sigmoid(W_iz x +
    b_iz + W_hz h)) or the LSTM's forget gate (OptimizedLSTMCell's `hf`). flax initializes every
    gate bias alike (bias_init), so the one gate is set after `init`.

    >>> import jax, jax.numpy as jnp
    >>> net = RecurrentQNetwork(num_actions=2, hidden_sizes=(), memory="gru", memory_size=3)
    >>> params = net.init(jax.random.PRNGKey(0), initial_memory("gru", 1, 3), jnp.zeros((1, 2)))
    >>> with_memory_gate_bias(params, "gru", 2.0)["params"]["GRUCell_0"]["iz"]["bias"].tolist()
    [2.0, 2.0, 2.0]
    """
    if not bias:
        return params
    cell, gate = ("GRUCell_0", "iz") if memory == "gru" else ("OptimizedLSTMCell_0", "hf")
    inner = params["params"]
    biased = {**inner[cell][gate], "bias": inner[cell][gate]["bias"] + bias}
    return {**params, "params": {**inner, cell: {**inner[cell], gate: biased}}}


class StackedQNetwork(nn.Module):
    """Frame stacking as a memory: (the last K-1 observations, observation) -> (the last K-1
    observations, Q of the K stacked). The memory is a window, not learned: stacked
    observations [batch, K - 1, *obs_shape], zeros before an episode's first. A
    feed-forward MLP (and head) reads the K observations flattened side by side.
    """

    num_actions: int
    hidden_sizes: tuple[int, ...]
    activation: str = "relu"
    layer_norm: bool = False
    dueling: bool = False

    @nn.compact
    def __call__(self, memory: jax.Array, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = ACTIVATIONS[self.activation]
        stacked = jnp.concatenate([memory, _as_float(obs)[:, None]], axis=1)  # oldest first
        x = stacked.reshape(obs.shape[0], -1)
        x = hidden_layers(x, self.hidden_sizes, nn.Dense, self.layer_norm, act)
        q = nn.Dense(self.num_actions)(x)
        if self.dueling:
            q = dueling_combine(nn.Dense(1)(x), q)
        return stacked[:, 1:], q


def initial_memory(kind: str, batch: int, size: int, obs_shape: tuple[int, ...] = ()) -> Any:
    """The zero carry of `batch` episodes' starts: [batch, size] (GRU), a (cell, hidden) pair (LSTM),
    the layout of flax's GRUCell and OptimizedLSTMCell; for a frame stack ('stack') of `size` frames,
    the size - 1 observations before the first, zeros [batch, size - 1, *obs_shape]."""
    if kind == "stack":
        return jnp.zeros((batch, size - 1, *obs_shape), jnp.float32)
    zeros = jnp.zeros((batch, size), jnp.float32)
    return zeros if kind == "gru" else (zeros, zeros)
