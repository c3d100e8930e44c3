"""Train a classifier policy on an expert's (state, action) pairs: supervised imitation.

    dqnx imitate TRAIN_FILE --test TEST_FILE [--hidden 256,256] [--epochs 150] [--batch-size 64] [--lr 1e-3]

    per epoch:   shuffle the training set -> Adam steps on minibatches (one compiled lax.scan)
                 -> loss and accuracy on the whole training set and on the held-out test set
                 -> every eval_every_epochs (and at the end) a greedy evaluation in the environment
    at the end:  evaluate the best and the last weights on fresh episodes -> summary.json

The run directory is the standard one (config.json with agent "imitation", best/last
weights in safetensors, metrics.csv, summary.json), plus TensorBoard event files in
tensorboard/. "best" are the weights of the highest periodic greedy evaluation in the
environment, as for every agent; the test set only measures, it never selects.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dqnx import jax_setup

jax_setup.configure()  # before JAX starts its backend (as in dqnx.api)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from dqnx.agents import make_learner  # noqa: E402
from dqnx.agents.imitation import accuracy, cross_entropy  # noqa: E402
from dqnx.config import ImitationConfig, build_config  # noqa: E402
from dqnx.drivers import jax_loop, make_driver  # noqa: E402
from dqnx.envs import Env, make_env  # noqa: E402
from dqnx.errors import UsageError  # noqa: E402
from dqnx.imitation.dataset import Dataset, read_dataset  # noqa: E402
from dqnx.runs.files import atomic_write_bytes  # noqa: E402
from dqnx.runs.run_dir import METRICS, RunDir, RunSpec, default_run_dir  # noqa: E402
from dqnx.runs.trust import require_trust  # noqa: E402

METRIC_COLUMNS = [
    "epoch", "updates", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
    "eval_mean_return", "eval_std_return", "wall_seconds",
]
TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class ImitationRun:
    path: Path
    config: ImitationConfig
    summary: dict[str, Any]


def _same_source(a: Dataset, b: Dataset) -> bool:
    """Both files hold the same episodes: the same expert weights rolled out from the same seed."""
    def source(d: Dataset) -> tuple:
        expert = d.meta.get("expert") or {}
        return (d.env_id, d.meta.get("seed"), d.meta.get("key_stream"),
                expert.get("run_dir"), expert.get("weights"), expert.get("seed"), expert.get("weights_env_steps"))

    return a.meta.get("expert") is not None and source(a) == source(b)


def _shared_rows(train: Dataset, test: Dataset) -> int:
    """How many test rows (state and action) appear verbatim in the training set."""
    seen = {row.tobytes() for row in np.concatenate([train.obs, train.actions[:, None].astype(np.float32)], axis=1)}
    return sum(row.tobytes() in seen for row in np.concatenate([test.obs, test.actions[:, None].astype(np.float32)], axis=1))


def load_pair(train_file: str | Path, test_file: str | Path, trust_env_code: bool = False,
              env: Any = None) -> tuple[Dataset, Dataset, Env]:
    """Both datasets, checked to come from the same environment and to be distinct; and that environment."""
    train, test = read_dataset(train_file), read_dataset(test_file)
    if train.source != test.source:
        raise UsageError(f"{test.path} comes from {test.env_id} {test.env_params or ''} but {train.path} from "
                         f"{train.env_id} {train.env_params or ''}; the test set must come from the same environment")
    if train.meta["columns"] != test.meta["columns"]:
        raise UsageError(f"{test.path} and {train.path} have different columns; generate both with `dqnx dataset`")
    if Path(train.path).resolve() == Path(test.path).resolve() or _same_source(train, test):
        raise UsageError(f"{test.path} holds the same episodes as {train.path}; the test set must be held out: "
                         "generate it with another --seed")
    source = train.source
    if env is not None:  # the user's own environment: nothing the files name is imported
        env = make_env(env, None, source.backend)
    else:
        require_trust(source, str(train.path), trust_env_code,
                      how="dqnx.imitation.train.imitate(train_file, test_file, env=...)")
        env = make_env(source.env_id, source.env_params, source.backend, source.wrappers)
    features = int(np.prod(env.obs_shape))
    if train.obs.shape[1] != features or train.meta["num_actions"] != env.num_actions:
        raise UsageError(f"{train.path} has {train.obs.shape[1]} state columns and {train.meta['num_actions']} actions, but "
                         f"{env.env_id} has {features} observation values and {env.num_actions} actions")
    return train, test, env


def imitate(
    train_file: str | Path,
    test_file: str | Path,
    *,
    config: ImitationConfig | dict[str, Any] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    trust_env_code: bool = False,
    env: Any = None,
) -> ImitationRun:
    """Train a classifier policy on `train_file`, measure it on `test_file`, write a run directory.

    config: an ImitationConfig, or a dict of overrides of its defaults (e.g. {"hidden_sizes": (256,)}).
    seed: initial weights and minibatch order. on_epoch: called with each metrics row.
    trust_env_code: build an environment whose description in the dataset names code (module:Class,
    package:EnvId, wrappers) that this user did not run here (see dqnx.runs.trust); or pass the
    environment yourself as env (an id, a gymnasium.Env or a factory), and nothing the files name is imported.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise UsageError(f"--seed must be an integer in [0, 2^31), got {seed!r}")
    train, test, env = load_pair(train_file, test_file, trust_env_code, env)
    if isinstance(config, ImitationConfig):
        cfg = config.validate()
    else:
        cfg = build_config(env.env_id, overrides=dict(config or {}), agent="imitation")
    from dqnx.envs.source import describe_spaces

    spec = RunSpec(env_id=env.env_id, agent="imitation", env_params=train.env_params, seeds=[seed], config=cfg,
                   backend=env.backend, wrappers=getattr(env, "wrappers", ()), spaces=describe_spaces(env))
    learner = make_learner("imitation", cfg, env)
    run = RunDir.create(out if out is not None else default_run_dir(f"{env.env_id}-imitation"), spec)
    atomic_write_bytes(run.path / METRICS, (",".join(METRIC_COLUMNS) + "\n").encode())

    train_obs, train_actions = _as_env_arrays(env, train)
    test_obs, test_actions = _as_env_arrays(env, test)
    size = len(train)
    batch_size = min(cfg.batch_size, size)
    batches = size // batch_size
    run_epoch, measure, optimizer = _epoch_functions(learner, cfg.learning_rate, size, batch_size)

    init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
    params = learner.init(init_key).params
    opt_state = optimizer.init(params)

    driver = make_driver(cfg, env, learner, [seed])  # evaluates in the env: compiled loop or host loop

    def env_returns(params: Any, stream: int, step: int, episodes: int) -> np.ndarray:
        stacked = jax.tree.map(lambda x: x[None], params)
        return driver.evaluate(stacked, jax_loop.eval_keys([seed], stream, step), episodes)[0]

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir=str(run.path / TENSORBOARD))
    started = time.perf_counter()
    best = {"epoch": None, "eval_mean_return": None, "test_accuracy": None, "params": params}
    row: dict[str, Any] = {}
    try:
        for epoch in range(1, cfg.epochs + 1):
            params, opt_state = run_epoch(params, opt_state, jax.random.fold_in(shuffle_key, epoch), train_obs, train_actions)
            train_loss, train_acc = map(float, measure(params, train_obs, train_actions))
            test_loss, test_acc = map(float, measure(params, test_obs, test_actions))
            row = {"epoch": epoch, "updates": epoch * batches, "train_loss": train_loss, "train_accuracy": train_acc,
                   "test_loss": test_loss, "test_accuracy": test_acc, "eval_mean_return": None, "eval_std_return": None}
            if epoch % cfg.eval_every_epochs == 0 or epoch == cfg.epochs:
                returns = env_returns(params, jax_loop.PERIODIC_EVAL_STREAM, epoch, cfg.eval_episodes)
                row["eval_mean_return"], row["eval_std_return"] = float(returns.mean()), float(returns.std())
                if best["eval_mean_return"] is None or row["eval_mean_return"] > best["eval_mean_return"]:
                    best = {"epoch": epoch, "eval_mean_return": row["eval_mean_return"], "test_accuracy": test_acc, "params": params}
                    run.save_weights("best", _stacked(params), {"epoch": [epoch], "eval_mean_return": [row["eval_mean_return"]]})
                run.save_weights("last", _stacked(params), {"epoch": [epoch]})
            row["wall_seconds"] = round(time.perf_counter() - started, 3)
            _append(run.path / METRICS, row)
            for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "eval_mean_return"):
                if row[name] is not None:
                    writer.add_scalar(f"imitation/{name}", row[name], epoch)
            if on_epoch is not None:
                on_epoch(row)
    finally:
        writer.close()

    try:
        best_final = env_returns(best["params"], jax_loop.FINAL_EVAL_STREAM, 0, cfg.final_eval_episodes)
        last_final = env_returns(params, jax_loop.FINAL_EVAL_STREAM, 0, cfg.final_eval_episodes)
    finally:
        driver.close()  # a Gymnasium env's evaluation copies (processes, when async)
    summary = _summary(env, cfg, train, test, best, row, best_final, last_final, batches, batch_size,
                       time.perf_counter() - started, driver.compile_seconds)
    run.write_summary(summary)
    return ImitationRun(path=run.path, config=cfg, summary=summary)


def _as_env_arrays(env: Env, data: Dataset) -> tuple[jax.Array, jax.Array]:
    """A dataset's observations (shaped and typed as the environment gives them) and actions."""
    # Rows hold numbers; the policy must see them as the environment gives them (uint8 images
    # are scaled inside the network), so they go back to the env's observation dtype.
    obs_dtype = getattr(env, "obs_dtype", np.float32)
    return jnp.asarray(data.obs.reshape((-1, *env.obs_shape)).astype(obs_dtype)), jnp.asarray(data.actions)


def _epoch_functions(learner: Any, learning_rate: float, size: int, batch_size: int):
    """(run_epoch, measure, optimizer): one epoch of Adam steps on shuffled minibatches, and
    (cross-entropy, accuracy) of the policy on a dataset, both jitted."""
    batches = size // batch_size
    optimizer = optax.adam(learning_rate)

    def loss_fn(params: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
        return cross_entropy(learner.q_values(params, obs), actions)

    @jax.jit
    def run_epoch(params: Any, opt_state: Any, key: jax.Array, obs: jax.Array, actions: jax.Array):
        order = jax.random.permutation(key, size)[: batches * batch_size].reshape(batches, batch_size)

        def step(carry, index):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, obs[index], actions[index])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), order)[0]

    @jax.jit
    def measure(params: Any, obs: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = learner.q_values(params, obs)
        return cross_entropy(logits, actions), accuracy(logits, actions)

    return run_epoch, measure, optimizer


def _summary(env: Env, cfg: ImitationConfig, train: Dataset, test: Dataset, best: dict[str, Any], row: dict[str, Any],
             best_final: np.ndarray, last_final: np.ndarray, batches: int, batch_size: int, wall: float,
             compile_seconds: float) -> dict[str, Any]:
    """summary.json of an imitation run: the best weights' final evaluation, the last epoch's figures."""
    threshold = env.solve_threshold
    mean = float(best_final.mean())
    summary = {
        "env_id": env.env_id,
        "agent": "imitation",
        "total_steps": 0,  # env steps of training: none, the policy learns from the dataset
        "wall_seconds": round(wall, 3),
        "compile_seconds": round(compile_seconds, 3),
        "steps_to_solve": None,
        "eval_mean_return": mean,
        "eval_std_return": float(best_final.std()),
        "eval_episodes": int(best_final.shape[0]),
        "eval_weights": "best",
        "solve_threshold": threshold,
        "seeds_solved": None if threshold is None else int(mean >= threshold),
        "num_seeds": 1,
        "epochs": cfg.epochs,
        "updates": cfg.epochs * batches,
        "batch_size": batch_size,
        "best_epoch": best["epoch"],
        "best_test_accuracy": best["test_accuracy"],
        # The last epoch's weights: test figures and a fresh-episode evaluation of the same weights.
        "train_loss": row["train_loss"],
        "train_accuracy": row["train_accuracy"],
        "test_loss": row["test_loss"],
        "test_accuracy": row["test_accuracy"],
        "last_eval_mean_return": float(last_final.mean()),
        "last_eval_std_return": float(last_final.std()),
        "train_file": str(Path(train.path).resolve()),
        "test_file": str(Path(test.path).resolve()),
        "train_samples": len(train),
        "test_samples": len(test),
        "test_rows_also_in_train": _shared_rows(train, test),
        "expert": train.meta.get("expert"),
    }
    return summary


def _stacked(params: Any) -> Any:
    """A leading seed axis of one, the layout of every run's weight files."""
    return jax.tree.map(lambda x: np.asarray(x)[None], params)


def _append(path: Path, row: dict[str, Any]) -> None:
    text = io.StringIO()
    csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n").writerow(
        {k: "" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in METRIC_COLUMNS}
    )
    with open(path, "a", newline="") as f:
        f.write(text.getvalue())
