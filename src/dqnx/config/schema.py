"""The configuration schema: one frozen, typed dataclass per agent, every field documented.

`RunConfig` holds what every agent shares (budget, discount, exploration,
evaluation); `DQNConfig`, `PQNConfig`, `TabularConfig`, `LinearConfig` and `ImitationConfig` add their own fields.
parsing.py turns TOML values and --set strings into these fields' types; presets.py
layers the defaults, the environment's preset, a --config file and --set overrides.

To list every field with its default: ``python -c "import dqnx.config as c; print(c.describe())"``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from dqnx.errors import UsageError


# Hyperparameters that change neither an array's shape nor a branch of the compiled
# program: the training loop takes them as arrays, so a sweep vmaps many values of them
# in one program (dqnx.sweep). Every other field is static: configs that differ in one
# of those (network widths, batch size, double_dqn, ...) compile a program each.
VMAPPABLE = (
    "learning_rate", "gamma", "tau", "target_update_period", "epsilon_start", "epsilon_end",
    "epsilon_decay_steps", "adam_eps", "adam_b1", "adam_b2", "rmsprop_decay", "per_alpha", "per_beta",
    "per_eps", "temperature", "q_lambda", "reward_scale",
)


def hyperparameters(config: Any, hyper: dict[str, Any] | None = None) -> dict[str, Any]:
    """The vmappable hyperparameters a learner reads: `hyper` when given (the compiled
    loop's per-seed arrays), else the config's own values, as plain Python numbers.

    >>> hyperparameters(DQNConfig(gamma=0.9))["gamma"]
    0.9
    """
    if hyper is not None:
        return hyper
    return {name: getattr(config, name) for name in VMAPPABLE if hasattr(config, name)}


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"doc": text}, **kwargs)


def _check_lr_end(config: Any) -> None:
    if not 0.0 <= config.lr_end <= config.learning_rate:
        raise UsageError(f"lr_end must lie in [0, learning_rate = {config.learning_rate}], got {config.lr_end}")
    if config.lr_schedule_steps < 0:
        raise UsageError(f"lr_schedule_steps must be >= 0 (0 = total_steps), got {config.lr_schedule_steps}")


@dataclass(frozen=True)
class RunConfig:
    """Settings every agent shares: budget, discount, exploration, evaluation.

    Each agent's configuration extends this with its own fields (one level, data only).
    """

    # --- budget -------------------------------------------------------------------
    total_steps: int = _doc("Environment steps to train for (summed over parallel envs).", default=50_000)
    num_envs: int = _doc("Environments stepped in parallel per seed; each iteration adds num_envs transitions.", default=1)
    gamma: float = _doc("Discount factor of future rewards.", default=0.99)

    # --- exploration ----------------------------------------------------------------
    epsilon_start: float = _doc("Exploration rate at step 0.", default=1.0)
    epsilon_end: float = _doc("Exploration floor, reached at epsilon_decay_steps.", default=0.04)
    epsilon_decay_steps: int = _doc("Env steps over which epsilon falls from start to end.", default=8_000)
    epsilon_schedule: str = _doc("'linear' or 'exponential' (geometric) decay to the floor.", default="linear")

    # --- evaluation -----------------------------------------------------------------
    eval_every: int = _doc("Greedy evaluation every this many env steps (also the chunk length of the compiled loop).", default=1_000)
    eval_episodes: int = _doc("Episodes per periodic greedy evaluation (run in parallel inside JAX).", default=100)
    final_eval_episodes: int = _doc("Fresh episodes of the final evaluation of the best weights.", default=100)
    eval_epsilon: float = _doc("Exploration rate during evaluations: 0 is greedy; Atari uses 0.05 (as Mnih et al. 2015) so a game cannot stall.", default=0.0)
    eval_temperature: float = _doc("Stochastic evaluation policy: > 0 samples actions from softmax(Q / eval_temperature) instead of the greedy (or eval_epsilon) policy; 0 is off.", default=0.0)
    checkpoint_every: int = _doc("Write a resumable checkpoint every this many env steps (and on Ctrl-C).", default=10_000)
    vector_mode: str = _doc("Gymnasium backend: 'sync' steps the envs one after another in this process, 'async' in one subprocess each.", default="sync")
    action_mask: str = _doc("Legal-action masks: 'auto' uses the environment's when it gives them (Gymnasium info['action_mask'], a Dict observation's 'action_mask' key, a JAX env's legal-action mask), so acting never picks an illegal action and the bootstrap maximises over legal ones; 'off' ignores them.", default="auto")

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def validate(self):
        """Raise UsageError on the first value that cannot work; return self."""
        positive = ["total_steps", "num_envs", "eval_every", "eval_episodes", "final_eval_episodes",
                    "checkpoint_every", "epsilon_decay_steps"]
        for name in positive:
            _positive(self, name)
        if not 0.0 <= self.gamma <= 1.0:
            raise UsageError(f"gamma must lie in [0, 1], got {self.gamma}")
        for name in ("epsilon_start", "epsilon_end", "eval_epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.epsilon_end > self.epsilon_start:
            raise UsageError(f"epsilon_end ({self.epsilon_end}) is above epsilon_start ({self.epsilon_start}); exploration decays, so lower epsilon_end")
        if self.epsilon_schedule == "exponential" and self.epsilon_end <= 0 < self.epsilon_start:
            raise UsageError("an exponential epsilon schedule needs epsilon_end > 0; set --set epsilon_end=0.01 or use linear")
        if self.eval_temperature < 0:
            raise UsageError(f"eval_temperature must be >= 0 (0 = off), got {self.eval_temperature}")
        if self.eval_temperature > 0 and self.eval_epsilon > 0:
            raise UsageError("eval_epsilon and eval_temperature are both set; choose one stochastic evaluation policy")
        _choice(self, "epsilon_schedule", ("linear", "exponential"))
        _choice(self, "vector_mode", ("sync", "async"))
        _choice(self, "action_mask", ("auto", "off"))
        return self


def _positive(config: Any, name: str) -> None:
    if getattr(config, name) <= 0:
        raise UsageError(f"{name} must be a positive integer, got {getattr(config, name)}; set it with --set {name}=N")


def _choice(config: Any, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(config, name) not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(allowed)}; got {getattr(config, name)!r}")


@dataclass(frozen=True)
class DQNConfig(RunConfig):
    """Every hyperparameter of a DQN run. Defaults are CleanRL-like; presets tune them."""

    # --- network and optimizer ------------------------------------------------------
    network: str = _doc("'auto' (the Nature CNN for images of at least 36x36, the MinAtar network for boards with sides of at most 20 such as MinAtar's 10x10, else an MLP), 'mlp', 'cnn' (Nature, Mnih et al. 2015) or 'small_cnn' (MinAtar, Young & Tian 2019: one 3x3 convolution of 16 channels).", default="auto")
    hidden_sizes: tuple[int, ...] = _doc("Widths of the hidden dense layers (depth = their count); for the CNN, those after its convolutions.", default=(120, 84))
    activation: str = _doc("Nonlinearity of the dense layers: 'relu', 'tanh', 'elu', 'gelu', 'silu' or 'leaky_relu'.", default="relu")
    layer_norm: bool = _doc("LayerNorm after each hidden dense layer and each convolution (before its activation; over the channels at each position for a convolution).", default=False)
    conv_layer_norm: bool = _doc("With layer_norm, a LayerNorm after each convolution too (false: after the dense layers only). Runs of format dqnx-run/1 had none and load with false.", default=True)
    q_head: str = _doc("Q-network shape: 'per_action_output' (state in, one output per action), 'state_action' (state and one-hot action in, one value out; the agent scores each action) or 'per_action_heads' (a shared trunk, then a separate small head per action).", default="per_action_output")
    head_sizes: tuple[int, ...] = _doc("Hidden widths of each small per-action head (q_head = per_action_heads); empty = a single linear layer per action.", default=(32,))
    dueling: bool = _doc("Dueling heads: Q = V(s) + A(s, a) - mean_a A(s, a), value and advantages from the shared trunk.", default=False)
    noisy: bool = _doc("Noisy networks: factorised Gaussian noise on every dense layer's weights explores instead of (or beside) epsilon; set epsilon_start = epsilon_end = 0 for noise only.", default=False)
    noisy_sigma0: float = _doc("Initial noise scale sigma_0 of noisy layers (each sigma starts at sigma_0 / sqrt(fan_in)).", default=0.5)
    distributional: bool = _doc("Distributional C51: learn a categorical return distribution on num_atoms fixed atoms in [v_min, v_max] by cross-entropy (the loss field is then unused); Q is its mean.", default=False)
    num_atoms: int = _doc("Atoms of the C51 support.", default=51)
    v_min: float = _doc("Smallest return of the C51 support.", default=-10.0)
    v_max: float = _doc("Largest return of the C51 support.", default=10.0)
    optimizer: str = _doc("'adam', 'sgd' or 'rmsprop'.", default="adam")
    learning_rate: float = _doc("Optimizer step size (the peak value when a schedule is used).", default=1e-3)
    lr_schedule: str = _doc("'constant', 'linear' (to lr_end at total_steps) or 'cosine' decay of the learning rate.", default="constant")
    lr_end: float = _doc("Learning rate a linear or cosine schedule ends at, and keeps after its span.", default=0.0)
    lr_schedule_steps: int = _doc("Env steps a linear or cosine schedule spans; 0 = total_steps. `--resume --steps N` records the run's original total here: the past replays exactly and the added steps train at lr_end.", default=0)
    adam_eps: float = _doc("Adam's epsilon (numerical stability term); also RMSprop's.", default=1e-8)
    adam_b1: float = _doc("Adam's decay of the first-moment (mean) estimate.", default=0.9)
    adam_b2: float = _doc("Adam's decay of the second-moment estimate.", default=0.999)
    momentum: float = _doc("Momentum of SGD and RMSprop (0 = none).", default=0.0)
    nesterov: bool = _doc("Nesterov momentum (SGD and RMSprop, with momentum > 0).", default=False)
    rmsprop_decay: float = _doc("RMSprop's decay of the squared-gradient average.", default=0.9)
    rmsprop_centered: bool = _doc("Centered RMSprop (normalise by the gradient's estimated variance).", default=False)
    max_grad_norm: float = _doc("Clip the gradient's global norm to this value; 0 turns clipping off.", default=10.0)
    loss: str = _doc("'huber' (smooth L1, delta 1) or 'mse' (half squared TD error).", default="huber")
    double_dqn: bool = _doc("Double DQN: the online network picks the next action, the target network scores it.", default=False)
    n_step: int = _doc("n-step returns: sum n discounted rewards, then bootstrap with gamma^n (shorter at a terminal, which does not bootstrap, or at a truncation, which bootstraps from its true successor).", default=1)
    target: str = _doc("'td' (bootstrapped n-step TD targets) or 'monte_carlo' (the observed discounted return to the episode's end; only finished episodes are learned from).", default="td")
    exploration: str = _doc("'epsilon_greedy', or 'boltzmann': sample softmax(Q / T) with T = temperature * epsilon(t), so the epsilon schedule anneals the temperature.", default="epsilon_greedy")
    temperature: float = _doc("Boltzmann temperature at epsilon = 1 (exploration = boltzmann).", default=1.0)

    # --- memory (recurrent Q-networks, R2D2-style) -----------------------------------
    memory: str = _doc("'none' (a feed-forward Q-network), 'gru' or 'lstm': a recurrent cell after the hidden dense layers, for partially observable tasks. Acting and evaluation carry its hidden state through each episode (reset at an episode's start); replay samples sequences of burn_in + sequence_length steps with the hidden state stored at their start (Kapturowski et al. 2019, R2D2).", default="none")
    memory_size: int = _doc("Width of the recurrent cell's hidden state (memory = gru or lstm).", default=64)
    sequence_length: int = _doc("Steps of each replayed sequence that are learned from (memory = gru or lstm); a sequence may run across an episode's end (the hidden state resets there) and steps not yet collected are masked out of the loss.", default=20)
    frame_stack: int = _doc("Frame stacking, the simpler alternative to memory: the Q-network reads the last frame_stack observations side by side (zeros before an episode's first); 0 or 1 = off. Any env but Atari, whose observations are stacked 4 already.", default=0)
    burn_in: int = _doc("Steps before each replayed sequence that only warm up the hidden state from the stored one (no loss, no gradient; memory = gru or lstm). R2D2 used 40 with sequences of 80.", default=10)
    memory_gate_bias: float = _doc("Initial bias of the recurrent cell's gate that keeps its memory (the GRU's update gate, the LSTM's forget gate; memory = gru or lstm): the cell starts out keeping a fraction sigmoid(b) of its state at each step (0: one half, flax's default; 2: 0.88; 3: 0.95), so that a cue and its gradient survive a long span until the network learns to hold it (the LSTM forget-gate bias of Jozefowicz et al. 2015).", default=0.0)

    # --- replay and update cadence -------------------------------------------------
    replay: bool = _doc("Experience replay. false = online mode: learn from each step's own transition(s).", default=True)
    buffer_size: int = _doc("Replay capacity in transitions (oldest overwritten first).", default=50_000)
    batch_size: int = _doc("Transitions per gradient step, sampled with replacement (uniformly, or by priority).", default=64)
    prioritized: bool = _doc("Prioritized replay (proportional): sample transition i with probability p_i^alpha / sum_j p_j^alpha, p_i = |TD error| + per_eps.", default=False)
    per_alpha: float = _doc("Prioritisation exponent alpha (0 = uniform).", default=0.6)
    per_beta: float = _doc("Importance-sampling exponent at step 0, annealed linearly to 1 at total_steps.", default=0.4)
    per_eps: float = _doc("Added to |TD error| so that no transition's priority is 0.", default=1e-6)
    learning_starts: int = _doc("Env steps of pure collection before the first gradient step.", default=1_000)
    train_freq: int = _doc("Run a training phase every train_freq env steps.", default=1)
    gradient_steps: int = _doc("Gradient steps per training phase.", default=1)

    # --- target network -------------------------------------------------------------
    target_update_period: int = _doc("Sync the target network every this many gradient steps.", default=1)
    tau: float = _doc("Sync rule: target <- tau * online + (1 - tau) * target. 1.0 is a hard copy, < 1 is Polyak averaging.", default=0.005)

    def validate(self) -> "DQNConfig":
        RunConfig.validate(self)
        for name in ("batch_size", "train_freq", "gradient_steps", "target_update_period"):
            _positive(self, name)
        if self.train_freq < self.num_envs:
            raise UsageError(
                f"train_freq ({self.train_freq}) is below num_envs ({self.num_envs}): one iteration adds num_envs "
                "transitions and trains at most once; raise train_freq or gradient_steps instead"
            )
        if self.replay and self.buffer_size < max(self.batch_size, self.num_envs):
            raise UsageError(f"buffer_size ({self.buffer_size}) is smaller than batch_size ({self.batch_size}) or num_envs; raise buffer_size")
        if self.learning_starts < 0:
            raise UsageError(f"learning_starts must be >= 0, got {self.learning_starts}")
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise UsageError(f"hidden_sizes must be positive widths like 120,84, got {self.hidden_sizes}")
        for name in ("learning_rate", "adam_eps"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_grad_norm < 0:
            raise UsageError(f"max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm}")
        if not 0.0 < self.tau <= 1.0:
            raise UsageError(f"tau must lie in (0, 1] (1 = hard copy), got {self.tau}")
        _choice(self, "loss", ("huber", "mse"))
        _choice(self, "network", ("auto", "mlp", "cnn", "small_cnn"))
        _choice(self, "lr_schedule", ("constant", "linear", "cosine"))
        _check_lr_end(self)
        _choice(self, "activation", ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu"))
        _choice(self, "q_head", ("per_action_output", "state_action", "per_action_heads"))
        _choice(self, "optimizer", ("adam", "sgd", "rmsprop"))
        _choice(self, "target", ("td", "monte_carlo"))
        _choice(self, "exploration", ("epsilon_greedy", "boltzmann"))
        if any(h <= 0 for h in self.head_sizes):
            raise UsageError(f"head_sizes must be positive widths like 32 (or empty), got {self.head_sizes}")
        if self.dueling and self.q_head == "state_action":
            raise UsageError("dueling needs a head with one output per action; use q_head=per_action_output or per_action_heads")
        for name in ("adam_b1", "adam_b2", "momentum", "rmsprop_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.nesterov and self.optimizer == "adam":
            raise UsageError("nesterov applies to sgd and rmsprop; set optimizer=sgd or drop nesterov")
        if self.n_step < 1:
            raise UsageError(f"n_step must be >= 1 (1 = one-step TD), got {self.n_step}")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")
        if self.noisy_sigma0 < 0:
            raise UsageError(f"noisy_sigma0 must be >= 0, got {self.noisy_sigma0}")
        if self.distributional and (self.num_atoms < 2 or self.v_min >= self.v_max):
            raise UsageError(f"C51 needs num_atoms >= 2 and v_min < v_max, got {self.num_atoms}, {self.v_min}, {self.v_max}")
        if not 0.0 <= self.per_alpha <= 1.0 or not 0.0 <= self.per_beta <= 1.0:
            raise UsageError(f"per_alpha and per_beta must lie in [0, 1], got {self.per_alpha} and {self.per_beta}")
        if self.per_eps <= 0:
            raise UsageError(f"per_eps must be > 0, got {self.per_eps}")
        if not self.replay and (self.prioritized or self.n_step > 1 or self.target == "monte_carlo"):
            raise UsageError("prioritized, n_step > 1 and target=monte_carlo need experience replay; set replay=true")
        if self.target == "monte_carlo" and self.n_step > 1:
            raise UsageError("target=monte_carlo already sums rewards to the episode's end; leave n_step at 1")
        _choice(self, "memory", ("none", "gru", "lstm"))
        if self.frame_stack < 0:
            raise UsageError(f"frame_stack must be >= 0 (0 or 1 = off), got {self.frame_stack}")
        if self.frame_stack > 1 and self.memory != "none":
            raise UsageError(f"frame_stack ({self.frame_stack}) and memory={self.memory} are two memories; choose one")
        if self.memory != "none" or self.frame_stack > 1:
            self._validate_memory()
        return self

    def _validate_memory(self) -> None:
        for name in ("memory_size", "sequence_length"):
            _positive(self, name)
        if self.burn_in < 0:
            raise UsageError(f"burn_in must be >= 0, got {self.burn_in}")
        unsupported = [name for name, on in (
            ("replay=false", not self.replay), ("distributional", self.distributional), ("noisy", self.noisy),
            ("target=monte_carlo", self.target == "monte_carlo"), (f"q_head={self.q_head}", self.q_head != "per_action_output"),
            (f"network={self.network}", self.network not in ("auto", "mlp"))) if on]
        if unsupported:
            kind = f"memory={self.memory}" if self.memory != "none" else f"frame_stack={self.frame_stack}"
            raise UsageError(f"{kind} does not support {', '.join(unsupported)}; leave them at their defaults")
        if self.memory != "none" and self.n_step > self.sequence_length:
            raise UsageError(f"n_step ({self.n_step}) is longer than sequence_length ({self.sequence_length}); "
                             "n-step returns are summed inside each replayed sequence: raise sequence_length")


@dataclass(frozen=True)
class PQNConfig(RunConfig):
    """PQN, parallel Q-learning (Gallici et al., "Simplifying Deep Temporal Difference
    Learning", ICLR 2025): many envs, Q(lambda) targets over short rollouts, a few epochs
    of minibatches per rollout, LayerNorm in the Q-network; no replay, no target network
    (each may be switched on: replay_rollouts, target_network).

    Defaults are the paper's CartPole-v1 settings (purejaxql's pqn_cartpole config); a
    field's text says where its other published settings (MinAtar, Atari) differ.
    """

    # --- budget and exploration (RunConfig's fields with PQN's defaults) ------------
    total_steps: int = _doc("Environment steps to train for (summed over parallel envs). Paper, CartPole: 500k.", default=500_000)
    num_envs: int = _doc("Environments stepped in parallel per seed; a rollout holds rollout_steps x num_envs transitions. Paper: 32 (CartPole), 128 (MinAtar, Atari).", default=32)
    epsilon_end: float = _doc("Exploration floor, reached at epsilon_decay_steps. Paper: 0.2 (CartPole), 0.05 (MinAtar), 0.001 (Atari).", default=0.2)
    epsilon_decay_steps: int = _doc("Env steps over which epsilon falls from start to end. Paper: a fifth of the run (CartPole), a tenth (MinAtar, Atari).", default=100_000)
    eval_every: int = _doc("Greedy evaluation every this many env steps (also the chunk length of the compiled loop); a chunk may end inside a rollout, whose transitions then wait in the learner's state.", default=10_000)

    # --- rollouts and Q(lambda) -----------------------------------------------------
    rollout_steps: int = _doc("T: steps every env takes between learning phases; each phase learns from the T x num_envs transitions just collected. Paper: 64 (CartPole), 32 (MinAtar, Atari).", default=64)
    q_lambda: float = _doc("lambda of the Q(lambda) targets: 0 is one-step TD, 1 the Monte-Carlo return to the rollout's end (bootstrapped there). Paper: 0.95 (CartPole), 0.65 (MinAtar, Atari).", default=0.95)
    num_epochs: int = _doc("Passes over each rollout per learning phase (reshuffled every pass). Paper: 4 (CartPole), 2 (MinAtar, Atari).", default=4)
    num_minibatches: int = _doc("Minibatches each pass splits the rollout into (must divide rollout_steps x num_envs); one gradient step each. Paper: 16 (CartPole), 32 (MinAtar, Atari).", default=16)
    reward_scale: float = _doc("Rewards are multiplied by this in the learning targets (the reported returns stay unscaled). Paper: 0.1 for CartPole (the classic-control presets use it), 1 elsewhere.", default=1.0)

    # --- network and optimizer ------------------------------------------------------
    network: str = _doc("'auto' (the Nature CNN for images of at least 36x36, the MinAtar network for boards with sides of at most 20, else an MLP), 'mlp', 'cnn' or 'small_cnn'; with layer_norm, a LayerNorm follows every convolution and hidden dense layer (purejaxql's networks).", default="auto")
    hidden_sizes: tuple[int, ...] = _doc("Widths of the hidden dense layers. Paper, CartPole: 2 x 256.", default=(256, 256))
    activation: str = _doc("Nonlinearity of the dense layers: 'relu', 'tanh', 'elu', 'gelu', 'silu' or 'leaky_relu'.", default="relu")
    layer_norm: bool = _doc("LayerNorm after each hidden dense layer and each convolution (before its activation; over the channels at each position for a convolution, as purejaxql's CNNs): what keeps PQN stable without a target network.", default=True)
    conv_layer_norm: bool = _doc("With layer_norm, a LayerNorm after each convolution too (false: after the dense layers only). Runs of format dqnx-run/1 had none and load with false.", default=True)
    optimizer: str = _doc("'radam' (the paper's) or 'adam'.", default="radam")
    learning_rate: float = _doc("Optimizer step size (the starting value with lr_schedule = linear). Paper: 1e-4 (CartPole), 5e-4 (MinAtar), 2.5e-4 (Atari).", default=1e-4)
    lr_schedule: str = _doc("'linear' (decay to lr_end over the run's gradient steps; paper: CartPole, MinAtar, to 0) or 'constant' (paper: Atari).", default="linear")
    lr_end: float = _doc("Learning rate the linear schedule ends at, and keeps after its span. Paper: 0.", default=0.0)
    lr_schedule_steps: int = _doc("Env steps the linear schedule spans; 0 = total_steps. `--resume --steps N` records the run's original total here: the past replays exactly and the added steps train at lr_end.", default=0)
    adam_eps: float = _doc("(R)Adam's epsilon (numerical stability term).", default=1e-8)
    adam_b1: float = _doc("(R)Adam's decay of the first-moment (mean) estimate.", default=0.9)
    adam_b2: float = _doc("(R)Adam's decay of the second-moment estimate.", default=0.999)
    max_grad_norm: float = _doc("Clip the gradient's global norm to this value; 0 turns clipping off. Paper: 10.", default=10.0)
    loss: str = _doc("'mse' (half squared error, the paper's) or 'huber' (smooth L1, delta 1).", default="mse")

    # --- optional target network (off in the paper) ---------------------------------
    target_network: bool = _doc("Bootstrap the Q(lambda) targets from a target network instead of the online one (off in PQN: LayerNorm makes it unnecessary).", default=False)
    target_update_period: int = _doc("With target_network: sync it every this many learning phases (rollouts).", default=1)
    tau: float = _doc("With target_network: target <- tau * online + (1 - tau) * target at a sync; 1.0 is a hard copy.", default=1.0)

    # --- optional replay of past rollouts (off in the paper) ------------------------
    replay_rollouts: int = _doc("K: rollouts kept beside the current one and learned from again; 0 = off (the paper's). Each learning phase recomputes the Q(lambda) targets of the current rollout and the K before it with the current network (targets stored with a rollout would be stale), and each of its num_epochs passes takes (K + 1) x num_minibatches gradient steps of the usual minibatch size over all their samples (fewer while the first K rollouts fill the store): K + 1 times the gradient steps per env step, and K more rollouts in memory.", default=0)

    @property
    def rollout_env_steps(self) -> int:
        """Env steps (over all envs) of one rollout: a learning phase comes after each."""
        return self.rollout_steps * self.num_envs

    @property
    def train_freq(self) -> int:
        """Env steps between learning phases (the host loop stages this many before a learn call)."""
        return self.rollout_env_steps

    def validate(self) -> "PQNConfig":
        RunConfig.validate(self)
        for name in ("rollout_steps", "num_epochs", "num_minibatches", "target_update_period"):
            _positive(self, name)
        if self.rollout_env_steps % self.num_minibatches:
            raise UsageError(f"num_minibatches ({self.num_minibatches}) must divide rollout_steps x num_envs "
                             f"({self.rollout_steps} x {self.num_envs} = {self.rollout_env_steps}); change one of them")
        if self.total_steps < self.rollout_env_steps:
            raise UsageError(f"total_steps ({self.total_steps}) is below one rollout ({self.rollout_steps} x {self.num_envs} "
                             f"= {self.rollout_env_steps} env steps), so nothing would be learned; raise total_steps or lower rollout_steps")
        if not 0.0 <= self.q_lambda <= 1.0:
            raise UsageError(f"q_lambda must lie in [0, 1] (0 = one-step TD, 1 = Monte-Carlo), got {self.q_lambda}")
        for name in ("reward_scale", "learning_rate", "adam_eps"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise UsageError(f"hidden_sizes must be positive widths like 256,256, got {self.hidden_sizes}")
        if self.max_grad_norm < 0:
            raise UsageError(f"max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm}")
        if not 0.0 < self.tau <= 1.0:
            raise UsageError(f"tau must lie in (0, 1] (1 = hard copy), got {self.tau}")
        if self.replay_rollouts < 0:
            raise UsageError(f"replay_rollouts must be >= 0 (0 = off; K = learn again from the K previous rollouts), "
                             f"got {self.replay_rollouts}; set it with --set replay_rollouts=K")
        for name in ("adam_b1", "adam_b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        _choice(self, "network", ("auto", "mlp", "cnn", "small_cnn"))
        _choice(self, "activation", ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu"))
        _choice(self, "optimizer", ("radam", "adam"))
        _choice(self, "lr_schedule", ("linear", "constant"))
        _check_lr_end(self)
        _choice(self, "loss", ("mse", "huber"))
        return self


@dataclass(frozen=True)
class TabularConfig(RunConfig):
    """Tabular Q-learning and SARSA: a table Q[state, action] updated after every step.

    Discrete observations index the table directly; Box observations are cut into
    `bins` equal bins per dimension between `obs_low` and `obs_high` (values outside
    fall into the first or last bin).
    """

    learning_rate: float = _doc("Step size alpha of the tabular TD update.", default=0.1)
    bins: tuple[int, ...] = _doc("Bins per observation dimension for a Box observation: one value for all, or one per dimension.", default=(10,))
    obs_low: tuple[float, ...] = _doc("Lower clipping bound per observation dimension (Box observations; empty = the env's preset).", default=())
    obs_high: tuple[float, ...] = _doc("Upper clipping bound per observation dimension (Box observations; empty = the env's preset).", default=())
    initial_q: float = _doc("Initial value of every table entry (optimistic values explore more).", default=0.0)

    def validate(self) -> "TabularConfig":
        RunConfig.validate(self)
        if not self.bins or any(b <= 0 for b in self.bins):
            raise UsageError(f"bins must be positive counts like 10 or 1,1,6,3, got {self.bins}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise UsageError(f"learning_rate of a tabular agent must lie in (0, 1], got {self.learning_rate}")
        if len(self.obs_low) != len(self.obs_high):
            raise UsageError(f"obs_low has {len(self.obs_low)} values and obs_high {len(self.obs_high)}; give one per observation dimension")
        if any(lo >= hi for lo, hi in zip(self.obs_low, self.obs_high)):
            raise UsageError(f"every obs_low must be below its obs_high, got {self.obs_low} and {self.obs_high}")
        return self


@dataclass(frozen=True)
class LinearConfig(RunConfig):
    """Linear Q-learning: Q(s, a) = w_a . phi(s) + b_a, one semi-gradient step per env step."""

    learning_rate: float = _doc("SGD step size of the semi-gradient TD update.", default=0.01)
    features: str = _doc("phi(s): 'raw' (the observation), 'normalized' (divided by obs_scale) or 'quadratic' (normalized, plus pairwise products).", default="normalized")
    obs_scale: tuple[float, ...] = _doc("Per-dimension scale for 'normalized'/'quadratic' features (empty = 1 for every dimension).", default=())

    def validate(self) -> "LinearConfig":
        RunConfig.validate(self)
        if self.learning_rate <= 0:
            raise UsageError(f"learning_rate must be > 0, got {self.learning_rate}")
        _choice(self, "features", ("raw", "normalized", "quadratic"))
        if any(v <= 0 for v in self.obs_scale):
            raise UsageError(f"obs_scale values must be > 0, got {self.obs_scale}")
        return self


@dataclass(frozen=True)
class ImitationConfig(RunConfig):
    """A classifier policy trained by `dqnx imitate` on an expert's (state, action) pairs.

    The network maps a state to one logit per action and is trained with cross-entropy
    against the expert's action; its greedy action is the argmax of the logits, so
    `dqnx eval` runs it like any agent. No hidden layers means a linear (multinomial
    logistic regression) policy. Of the shared fields only the evaluation ones are used
    (eval_episodes, final_eval_episodes): training never steps the environment.
    """

    hidden_sizes: tuple[int, ...] = _doc("Widths of the MLP's hidden layers (ReLU between them); empty = a linear policy.", default=(256, 256))
    epochs: int = _doc("Passes over the training set.", default=150)
    batch_size: int = _doc("Samples per Adam step, at most the training set's size (reshuffled every epoch; a last partial batch is dropped).", default=64)
    learning_rate: float = _doc("Adam step size.", default=1e-3)
    eval_every_epochs: int = _doc("Greedy evaluation in the environment (eval_episodes episodes) every this many epochs; the best one gives best.safetensors.", default=10)

    def validate(self) -> "ImitationConfig":
        RunConfig.validate(self)
        for name in ("epochs", "batch_size", "eval_every_epochs"):
            _positive(self, name)
        if any(h <= 0 for h in self.hidden_sizes):
            raise UsageError(f"hidden_sizes must be positive widths like 256,256 (or empty for a linear policy), got {self.hidden_sizes}")
        if self.learning_rate <= 0:
            raise UsageError(f"learning_rate must be > 0, got {self.learning_rate}")
        return self


# Agent name -> its configuration class (`--agent`).
CONFIGS: dict[str, type[RunConfig]] = {
    "dqn": DQNConfig,
    "rainbow": DQNConfig,  # DQN with every improvement on: presets/rainbow/ (see build_config)
    "pqn": PQNConfig,
    "tabular-q": TabularConfig,
    "sarsa": TabularConfig,
    "linear-q": LinearConfig,
    "imitation": ImitationConfig,
}


def config_class(agent: str) -> type[RunConfig]:
    if agent not in CONFIGS:
        raise UsageError(f"unknown agent {agent!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[agent]


def _fields(cls: type) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(cls)}


def describe(cls: type[RunConfig] = DQNConfig) -> str:
    """Every field with its type, default and meaning, one per line."""
    default, types = cls(), typing.get_type_hints(cls)
    return "\n".join(
        f"{name} ({_type_name(types[name])}, default {getattr(default, name)!r}): {f.metadata['doc']}"
        for name, f in _fields(cls).items()
    )


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        item = "integers" if typing.get_args(kind)[0] is int else "numbers"
        return f"a comma-separated list of {item}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
