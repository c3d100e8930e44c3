"""Expert datasets: a trained agent's greedy (state, action) pairs, written to CSV or Parquet.

    dqnx dataset RUN_DIR --samples N --out FILE.csv|FILE.parquet [--seed S]

One row per environment step: the state's features (flattened observation, columns
obs_0, obs_1, ...) and the expert's greedy action (column `action`). Episodes are
written whole and in order; the last one is cut at N rows. Which environment the
rows come from travels with the data, so `dqnx imitate` can evaluate in it:

- FILE.csv: a sidecar FILE.csv.json (env_id, env_params, columns, seed, expert, ...),
  keeping the CSV itself plain, readable by any tool;
- FILE.parquet: the same JSON in the file's key-value metadata (key "dqnx").

Rollout keys come from `seed` on a key stream of their own (DATASET_STREAM), so
different seeds give different, independent episodes (train and test sets never share
an episode), and no dataset replays the episodes of training or evaluation.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dqnx.drivers.episodes import play_host, play_jax
from dqnx.envs import JaxEnv
from dqnx.errors import UsageError
from dqnx.runs.files import atomic_write_bytes, atomic_write_json, parse_json, read_json

FORMAT = "dqnx-dataset/1"
ACTION_COLUMN = "action"
# jax_loop folds streams 1-3 into a seed's key for evaluation, and training splits the
# seed's key directly; rollouts for datasets draw from this stream only.
DATASET_STREAM = 4
SUFFIXES = (".csv", ".parquet")
# Largest recorded batch of episodes (episodes x max steps x features, float32 values).
_MAX_RECORDED_VALUES = 1 << 24


@dataclass(frozen=True)
class Dataset:
    """Labelled states read from a dataset file: obs [N, features] float32, actions [N] int32."""

    path: Path
    obs: np.ndarray
    actions: np.ndarray
    meta: dict[str, Any]

    @property
    def env_id(self) -> str:
        return self.meta["env_id"]

    @property
    def env_params(self) -> dict[str, Any]:
        return self.meta.get("env_params") or {}

    @property
    def source(self) -> Any:
        """What builds the environment the rows come from (checked as data when the file was read)."""
        from dqnx.envs.source import EnvSource, wrappers_from_data

        return EnvSource(env_id=self.env_id, backend=self.meta.get("backend", "jax"), env_params=self.env_params,
                         wrappers=wrappers_from_data(self.meta.get("wrappers")))

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def feature_columns(obs_shape: tuple[int, ...]) -> list[str]:
    """Column names of a flattened observation: obs_0, obs_1, ..."""
    return [f"obs_{i}" for i in range(math.prod(obs_shape))]


def rollout_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), DATASET_STREAM)


# --- rollouts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySteps:
    """`samples` steps of a policy, whole episodes in order (not a protocols.Rollout: no rewards, no [T, N] axes)."""

    obs: np.ndarray  # [N, *obs_shape]
    actions: np.ndarray  # [N]
    episode_lengths: list[int]  # rows per episode, in order; the last episode may be cut short
    complete_returns: list[float]  # returns of the episodes that ended (terminated or truncated) within the rows


def rollout(env: Any, policy: Callable[..., jax.Array], key: jax.Array, samples: int,
            masked: bool = False) -> PolicySteps:
    """`samples` steps of `policy` (a batch of observations -> actions) in `env`, whole episodes in order.

    Episode i starts from fold_in(key, i), whatever the batch size, so a dataset is a
    pure function of (policy, env, key, samples): inside JAX for JAX-native environments,
    stepped on the host for Gymnasium ones. masked: policy(obs, mask) also gets the legal
    actions [batch, num_actions] of each observation (the env's action masks).
    """
    from dqnx.envs import backend_of

    if backend_of(env).loop == "host":
        return _rollout_gymnasium(env, policy, key, samples, masked)
    if not isinstance(env, JaxEnv):
        raise UsageError(f"datasets need a dqnx environment (JAX-native or Gymnasium), not {type(env).__name__}")
    return _rollout_jax(env, policy, key, samples, masked)


def _rollout_gymnasium(env: Any, policy: Callable[..., jax.Array], key: jax.Array, samples: int,
                       masked: bool) -> PolicySteps:
    """The same for a Gymnasium env: episode i resets with a seed drawn from fold_in(key, i)."""
    act = jax.jit(policy)
    instance = env.make(train=False)

    def reset_seeds():
        index = 0
        while True:
            yield int(jax.random.randint(jax.random.fold_in(key, index), (), 0, 2**31 - 1))
            index += 1

    try:
        def choose(obs, *mask):  # mask: the legal actions of obs, when masked
            return int(np.asarray(act(jnp.asarray(obs)[None], *(jnp.asarray(m)[None] for m in mask)))[0]), None

        played = play_host(instance, choose, reset_seeds(), max_steps=samples, masked=masked)
    finally:
        instance.close()
    obs_parts = [np.asarray(o, np.float32) for e in played for o in e.observations[:len(e.actions)]]
    action_parts = [a for e in played for a in e.actions]
    lengths = [len(e.actions) for e in played]
    returns = [float(sum(e.rewards)) for e in played if e.ended]
    return PolicySteps(
        obs=np.stack(obs_parts).astype(np.float32),
        actions=np.asarray(action_parts, np.int32),
        episode_lengths=lengths,
        complete_returns=returns,
    )


def _rollout_jax(env: JaxEnv, policy: Callable[..., jax.Array], key: jax.Array, samples: int, masked: bool) -> PolicySteps:
    steps = env.max_episode_steps
    features = max(1, math.prod(env.obs_shape))
    batch = int(max(1, min(32, _MAX_RECORDED_VALUES // (steps * features))))

    @jax.jit
    def episodes(first: jax.Array):
        """Every step of `batch` episodes (first, first+1, ...), with a mask of the steps inside each episode."""
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(batch))
        reset_keys, step_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        steps_ = play_jax(env, lambda obs, t, *mask: (policy(obs, *mask), None), reset_keys,
                          lambda t: jax.vmap(lambda k: jax.random.fold_in(k, t))(step_keys), record=True,
                          masked=masked)[1]
        ended = steps_.alive & (steps_.terminated | steps_.truncated)
        return steps_.obs, steps_.action, steps_.reward, steps_.alive, ended

    obs_parts, action_parts, lengths, returns = [], [], [], []
    collected, first = 0, 0
    while collected < samples:
        obs, actions, rewards, alive, ended = jax.device_get(episodes(jnp.asarray(first, jnp.int32)))
        for b in range(batch):
            length = int(alive[:, b].sum())  # alive is a prefix: an episode never comes back to life
            take = min(length, samples - collected)
            obs_parts.append(obs[:take, b])
            action_parts.append(actions[:take, b])
            lengths.append(take)
            if take == length and ended[:, b].any():
                returns.append(float(rewards[:length, b].sum()))
            collected += take
            if collected >= samples:
                break
        first += batch
    return PolicySteps(
        obs=np.concatenate(obs_parts).astype(np.float32),
        actions=np.concatenate(action_parts).astype(np.int32),
        episode_lengths=lengths,
        complete_returns=returns,
    )


def make_dataset(run_dir: str | Path, samples: int, out: str | Path, seed: int = 0, weights: str = "best",
                 seed_index: int = 0, trust_env_code: bool = False) -> dict[str, Any]:
    """Roll out the greedy policy of the run in `run_dir` for `samples` steps and write them to `out`
    (trust_env_code: as for dqnx.load).

    Returns the dataset's metadata (what the sidecar or the Parquet metadata holds).
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        raise UsageError(f"--samples must be a positive number of rows, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise UsageError(f"--seed must be an integer in [0, 2^31), got {seed!r}")
    out = _check_out(Path(out))
    from dqnx import trained
    from dqnx.agents import make_learner
    from dqnx.agents.exploration import greedy as greedy_action

    agent = trained.load(run_dir, weights=weights, trust_env_code=trust_env_code)
    if not 0 <= seed_index < len(agent.seeds):
        raise UsageError(f"--seed-index must lie in [0, {len(agent.seeds) - 1}] for this {len(agent.seeds)}-seed run")
    params = jax.tree.map(lambda x: x[seed_index], agent.params)
    q_values = make_learner(agent.algorithm, agent.config, agent.env).q_values

    def greedy(obs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return greedy_action(q_values(params, obs), mask).astype(jnp.int32)

    start = time.perf_counter()
    data = rollout(agent.env, greedy, rollout_key(seed), samples, masked=agent.action_masks)
    columns = feature_columns(agent.env.obs_shape) + [ACTION_COLUMN]
    meta = {
        "format": FORMAT,
        "env_id": agent.env_id,
        "backend": agent.env.backend,
        **_spec_env(agent.run_dir),
        "obs_shape": list(agent.env.obs_shape),
        "num_actions": agent.env.num_actions,
        "columns": columns,
        "samples": samples,
        "seed": seed,
        "key_stream": DATASET_STREAM,
        "episodes": len(data.episode_lengths),
        "episode_lengths": data.episode_lengths,
        "action_masks": agent.action_masks,  # the expert acted among the legal actions of each state
        "expert": {
            "run_dir": str(Path(agent.run_dir).resolve()),
            "agent": agent.algorithm,
            "weights": weights,
            "seed": agent.seeds[seed_index],
            "weights_env_steps": _index(agent.weights_info.get("env_steps"), seed_index),
            "mean_return_complete_episodes": float(np.mean(data.complete_returns)) if data.complete_returns else None,
            "complete_episodes": len(data.complete_returns),
        },
        "rollout_seconds": round(time.perf_counter() - start, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_dataset(out, data.obs.reshape(samples, -1), data.actions, meta)
    return meta


def _spec_env(run_dir: Path) -> dict[str, Any]:
    """The expert run's env parameters and wrappers, as its config.json records them."""
    from dqnx.runs.run_dir import RunDir

    spec = RunDir.open(run_dir).read_config()
    return {"env_params": spec.env_params, "wrappers": [w.to_dict() for w in spec.wrappers]}


def _index(value: Any, i: int) -> Any:
    return value[i] if isinstance(value, list) and i < len(value) else value


def _check_out(out: Path) -> Path:
    if out.suffix not in SUFFIXES:
        raise UsageError(f"--out {out} must end in .csv or .parquet")
    if out.exists():
        raise UsageError(f"{out} already exists; pick another --out or delete it first")
    if out.suffix == ".csv" and sidecar_path(out).exists():
        raise UsageError(f"{sidecar_path(out)} already exists; pick another --out or delete it first")
    if out.suffix == ".parquet":
        _pyarrow()
    return out


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError("Parquet files need pyarrow: pip install 'dqnx[parquet]', or use a .csv file") from None
    return pyarrow


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


# --- writing --------------------------------------------------------------------------------


def write_dataset(path: str | Path, obs: np.ndarray, actions: np.ndarray, meta: dict[str, Any]) -> None:
    """Write rows (obs [N, F], actions [N]) to a .csv (+ sidecar .csv.json) or a .parquet file, atomically."""
    path = Path(path)
    columns = meta["columns"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the directory of {path} ({e.strerror}); pick another --out") from None
    if path.suffix == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        # 9 significant digits write every float32 exactly: reading a row back gives the very state the expert saw.
        for features, action in zip(obs.tolist(), actions.tolist()):
            writer.writerow([f"{v:.9g}" for v in features] + [action])
        atomic_write_bytes(path, text.getvalue().encode())
        atomic_write_json(sidecar_path(path), meta)
        return
    pa = _pyarrow()
    import pyarrow.parquet as pq

    arrays = [pa.array(obs[:, i].astype(np.float32)) for i in range(obs.shape[1])] + [pa.array(actions.astype(np.int32))]
    table = pa.Table.from_arrays(arrays, names=columns).replace_schema_metadata({"dqnx": json.dumps(meta)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# --- reading --------------------------------------------------------------------------------


def read_dataset(path: str | Path) -> Dataset:
    """A dataset file read strictly: every problem is a UsageError naming the file, row and column."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise UsageError(f"{path}: a dataset must be a .csv or .parquet file written by `dqnx dataset`")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a .csv or .parquet dataset file")
    if not path.is_file():
        raise UsageError(f"dataset {path} does not exist; write one with `dqnx dataset RUN_DIR --samples N --out {path.name}`")
    if path.stat().st_size == 0:
        raise UsageError(f"dataset {path} is empty (0 bytes); write it again with `dqnx dataset`")
    if path.suffix == ".csv":
        return _read_csv(path)
    return _read_parquet(path)


def _check_meta(meta: Any, where: str) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{where} is not dqnx dataset metadata (format {FORMAT}); write the dataset with `dqnx dataset`")
    columns, env_id, num_actions = meta.get("columns"), meta.get("env_id"), meta.get("num_actions")
    if not (isinstance(env_id, str) and isinstance(columns, list) and len(columns) >= 2
            and all(isinstance(c, str) for c in columns) and columns[-1] == ACTION_COLUMN
            and isinstance(num_actions, int) and num_actions > 0 and isinstance(meta.get("env_params", {}), dict)):
        raise UsageError(f"{where} is corrupted (env_id, columns or num_actions missing or wrong); write the dataset again")
    from dqnx.envs import BACKENDS
    from dqnx.envs.source import env_source

    # The fields that say how to build the environment, checked as data (nothing they name is imported here).
    env_source(env_id, meta.get("backend", "jax"), meta.get("env_params"), meta.get("wrappers"), where, BACKENDS)
    return meta


def _check_header(path: Path, header: list[str], expected: list[str], line_label: str) -> list[int]:
    """Position of every expected column in `header`; missing, extra or repeated columns are errors."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise UsageError(f"{path}{line_label}, column {i + 1}: column {name!r} appears twice (also column {seen[name] + 1})")
        seen[name] = i
    for name in expected:
        if name not in seen:
            raise UsageError(f"{path}{line_label}: column {name!r} is missing; the columns must be {','.join(expected)}")
    for i, name in enumerate(header):
        if name not in expected:
            raise UsageError(f"{path}{line_label}, column {i + 1}: unexpected column {name!r}; the columns must be {','.join(expected)}")
    return [seen[name] for name in expected]


def _read_csv(path: Path) -> Dataset:
    # A small strict reader on the csv module rather than pandas: pandas would be a heavy
    # dependency for this, and its reader guesses types and fills gaps with NaN, where the
    # user needs to hear which row and column of the file is wrong.
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise UsageError(f"{path} has no {meta_path.name} beside it (it names the environment); "
                         "keep the two files together as `dqnx dataset` wrote them")
    meta = _check_meta(read_json(meta_path, "dataset sidecar"), str(meta_path))
    expected = meta["columns"]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                raise UsageError(f"{path} is empty (no header line); write it again with `dqnx dataset`")
            header = [cell.strip() for cell in header]
            order = _check_header(path, header, expected, " line 1 (header)")
            cells: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row:
                    continue  # a blank line carries no sample
                row_label = f"{path} row {len(cells) + 1} (line {reader.line_num})"
                if len(row) != len(header):
                    where = f"column {header[len(row)]!r} is missing" if len(row) < len(header) else f"value {len(header) + 1} has no column"
                    raise UsageError(f"{row_label}: {len(row)} values but the header has {len(header)} columns ({where})")
                cells.append([row[i] for i in order])
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a UTF-8 text CSV file; write it again with `dqnx dataset`") from None
    except csv.Error as e:
        raise UsageError(f"{path} line {reader.line_num}: not valid CSV ({e})") from None
    if not cells:
        raise UsageError(f"{path} has a header but no data rows; write it again with `dqnx dataset --samples N`")
    columns = list(zip(*cells))
    values = []
    for j, name in enumerate(expected):
        try:
            values.append(np.asarray(columns[j], dtype=np.float64))
        except ValueError:  # numpy's fast parse failed: find the culprit with Python's own, one value at a time
            parsed = []
            for i, text in enumerate(columns[j]):
                try:
                    parsed.append(float(text))
                except ValueError:
                    raise UsageError(f"{path} row {i + 1} (line {lines[i]}), column {name!r}: {text!r} is not a number") from None
            values.append(np.asarray(parsed, np.float64))
    return _validated(path, meta, values, lambda i: f"row {i + 1} (line {lines[i]})")


def _read_parquet(path: Path) -> Dataset:
    pa = _pyarrow()
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise UsageError(f"{path} is not a readable Parquet file ({e}); write it again with `dqnx dataset`") from None
    raw = (table.schema.metadata or {}).get(b"dqnx")
    if raw is None:
        raise UsageError(f"{path} has no dqnx metadata (it names the environment); write the dataset with `dqnx dataset`")
    meta = _check_meta(parse_json(raw, f"{path} (dqnx metadata)"), f"{path} (metadata)")
    expected = meta["columns"]
    order = _check_header(path, list(table.column_names), expected, " (schema)")
    if table.num_rows == 0:
        raise UsageError(f"{path} has columns but no data rows; write it again with `dqnx dataset --samples N`")
    values = []
    for j, name in zip(order, expected):
        column = table.column(j)
        if column.null_count:
            row = int(np.flatnonzero(np.asarray(column.is_null()))[0])
            raise UsageError(f"{path} row {row + 1}, column {name!r}: the value is missing (null)")
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values.append(column.to_numpy().astype(np.float64))
            continue
        texts = column.to_pylist()
        numbers = []
        for i, text in enumerate(texts):
            try:
                if isinstance(text, bool) or not isinstance(text, (str, int, float)):
                    raise ValueError
                numbers.append(float(text))
            except ValueError:
                raise UsageError(f"{path} row {i + 1}, column {name!r}: {text!r} is not a number") from None
        values.append(np.asarray(numbers, np.float64))
    return _validated(path, meta, values, lambda i: f"row {i + 1}")


def _validated(path: Path, meta: dict[str, Any], values: list[np.ndarray], row_label: Callable[[int], str]) -> Dataset:
    names = meta["columns"]
    for name, column in zip(names, values):
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            i = int(bad[0])
            raise UsageError(f"{path} {row_label(i)}, column {name!r}: {column[i]:g} is not a finite number")
    action = values[-1]
    num_actions = meta["num_actions"]
    bad = np.flatnonzero((action != np.round(action)) | (action < 0) | (action >= num_actions))
    if bad.size:
        i = int(bad[0])
        raise UsageError(
            f"{path} {row_label(i)}, column {ACTION_COLUMN!r}: {action[i]:g} is outside the action space of "
            f"{meta['env_id']} (integers 0 to {num_actions - 1})"
        )
    obs = np.stack(values[:-1], axis=1).astype(np.float32)
    return Dataset(path=path, obs=obs, actions=action.astype(np.int32), meta=meta)
