"""The run directory: what a finished (or interrupted) run leaves for the user.

    config.json              env id, seeds, every hyperparameter, the env's resolved parameters, package versions
    checkpoint.safetensors   full training state of every seed (resume), progress in its metadata
    best.safetensors         online weights with the best periodic greedy evaluation, per seed
    last.safetensors         online weights at the last checkpoint (and at the end), per seed
    metrics.csv              one row per seed and chunk (train return: of the chunk's episodes and of the
                             last 100 episodes; loss, epsilon, eval, speed)
    summary.json             final evaluation and the headline figures (written at the end)
    tensorboard/seed_<S>/    TensorBoard event files of the same metrics (unless --no-tensorboard)

Weight files hold one array per parameter with a leading seed axis; their metadata
says the env step (and evaluation) each seed's weights come from.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import platform
import time
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from dqnx.config import RunConfig, config_class, from_dict
from dqnx.envs.source import EnvSource, SpacesEnv, Wrapper, env_source
from dqnx.errors import UsageError
from dqnx.runs import trust
from dqnx.runs.files import atomic_write_bytes, atomic_write_json, load_tree, read_json, read_metadata, save_tree

# The run directory's format, recorded in config.json. Bump FORMAT_VERSION when the tensor
# names of the weights or checkpoint (they follow the state pytree) or config.json's layout
# change. Older formats must keep loading for `dqnx eval` / `dqnx.load` (weights); resume
# needs the exact checkpoint layout, so it takes RESUMABLE_VERSIONS only and refuses others
# with a message naming the version. tests/fixtures/ holds a run of each format.
#   1  the first format.
#   2  a LayerNorm after each convolution when layer_norm is on (config conv_layer_norm): a
#      format-1 run with a CNN and layer_norm has none, and reads back with conv_layer_norm
#      false (FORMAT_SETTINGS), with its tensors, checkpoint included, laid out as before.
FORMAT_NAME = "dqnx-run"
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
RESUMABLE_VERSIONS = (1, 2)
# Hyperparameters a run of an older format was trained with that config.json does not
# record (they came later; their defaults describe newer runs): format -> {field: value},
# applied to the agents whose config has the field.
FORMAT_SETTINGS: dict[int, dict[str, Any]] = {1: {"conv_layer_norm": False}}
CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.csv"
SUMMARY = "summary.json"

METRIC_COLUMNS = [
    "env_steps", "seed", "updates", "episodes", "train_return", "train_return_100", "loss", "q_mean", "td_abs",
    "epsilon", "eval_mean_return", "eval_std_return", "steps_per_second", "wall_seconds",
]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("dqnx", "jax", "jaxlib", "flax", "optax", "gymnax", "gymnasium", "ale-py", "numpy", "safetensors"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def default_run_dir(env_id: str, root: str = "runs") -> Path:
    name = env_id.replace("/", "-").replace(":", "-")  # ALE/Pong-v5, module.path:EnvClass
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


@dataclass(frozen=True)
class RunSpec:
    """What a run is: environment (and its parameter overrides), agent, seeds, hyperparameters."""

    env_id: str
    agent: str
    env_params: dict[str, Any]
    seeds: list[int]
    config: RunConfig
    backend: str = "jax"  # 'jax' (gymnax, compiled loop) or 'gymnasium' (host loop)
    # Every env parameter as the run resolved it (defaults included; JaxEnv.settings), so a
    # figure can state its settings; env_params holds only the overrides given.
    env_settings: dict[str, Any] | None = None
    wrappers: tuple[Wrapper, ...] = ()  # Gymnasium wrappers applied in order (environment data, not hyperparameters)
    spaces: dict[str, Any] | None = None  # dqnx.envs.source.describe_spaces of the env: weights load without it
    format_version: int = FORMAT_VERSION  # of the run directory it was read from

    @property
    def source(self) -> EnvSource:
        """What builds the environment: what trust is checked and keyed on."""
        return EnvSource(env_id=self.env_id, backend=self.backend, env_params=dict(self.env_params),
                         wrappers=tuple(self.wrappers))


def format_version(value: Any) -> int | None:
    """'dqnx-run/3' -> 3; None for anything else."""
    name, _, version = str(value).partition("/")
    return int(version) if name == FORMAT_NAME and version.isdigit() else None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Hyperparameters changed on resume ({name: new}, {name: previous}): checked, but written to
        # config.json only by `record_resume`, once the checkpoint has loaded into the changed state.
        self.resume_changes: tuple[dict[str, Any], dict[str, Any]] | None = None

    # --- creation ---------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, spec: "RunSpec", extra: dict[str, Any] | None = None) -> "RunDir":
        """A new run directory with its config.json; `extra` adds entries to config.json
        (the memory budget and the settings warnings of dqnx.drivers.preflight)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"{path} already exists and is not empty; pick another --out or continue it with --resume {path}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create run directory {path} ({e.strerror}); pick another --out") from None
        run = cls(path)
        atomic_write_json(
            path / CONFIG,
            {
                "format": FORMAT,
                "env_id": spec.env_id,
                "backend": spec.backend,
                "agent": spec.agent,
                "env_params": spec.env_params,
                **({"env_settings": spec.env_settings} if spec.env_settings is not None else {}),
                "wrappers": [w.to_dict() for w in spec.wrappers],
                "spaces": spec.spaces,
                "seeds": spec.seeds,
                "config": spec.config.to_dict(),
                "versions": package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {}),
            },
        )
        atomic_write_bytes(path / METRICS, (",".join(METRIC_COLUMNS) + "\n").encode())
        trust.remember(spec.source)  # this user ran this code: reading the run back here needs no flag
        return run

    # --- reading ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if path.is_file():
            raise UsageError(f"{path} is a file, not a run directory; pass the directory a `dqnx train` run wrote")
        if not path.is_dir():
            raise UsageError(f"run directory {path} does not exist; pass the directory a `dqnx train` run wrote")
        if not (path / CONFIG).is_file():
            raise UsageError(f"{path} is not a dqnx run directory (no {CONFIG}); pass the directory a `dqnx train` run wrote")
        return cls(path)

    def read_config(self) -> "RunSpec":
        """config.json read as data: every field that reaches code is checked here (the env id's
        grammar, env_params and wrapper arguments as JSON values, agent and backend names from
        their registries); nothing it names is imported (dqnx.runs.trust decides that)."""
        where = str(self.path / CONFIG)
        data = read_json(self.path / CONFIG, "run config")
        version = format_version(data.get("format")) if isinstance(data, dict) else None
        if version is None:
            raise UsageError(f"{where} is not a dqnx run config (format {FORMAT}); was it written by dqnx?")
        if version > FORMAT_VERSION:
            raise UsageError(f"{self.path} was written by a newer dqnx (run format {data['format']}); this dqnx reads "
                             f"formats up to {FORMAT}: upgrade dqnx")
        try:
            env_id, seeds, values = data["env_id"], data["seeds"], data["config"]
            agent = data.get("agent", "dqn")
            if not (isinstance(seeds, list) and seeds and isinstance(values, dict) and isinstance(agent, str)
                    and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in seeds)):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{where} is corrupted (env_id, seeds or config missing); restore it") from None
        from dqnx.envs import BACKENDS

        source = env_source(env_id, data.get("backend", "jax"), data.get("env_params"), data.get("wrappers"), where, BACKENDS)
        fields = {f.name for f in dataclasses.fields(config_class(agent))}  # an unknown agent: a one-line error
        older = {k: v for k, v in FORMAT_SETTINGS.get(version, {}).items() if k in fields and k not in values}
        config = from_dict({**values, **older}, where, agent)
        settings = data.get("env_settings") if isinstance(data.get("env_settings"), dict) else None  # shown, never run
        return RunSpec(env_id=source.env_id, agent=agent, env_params=source.env_params, seeds=list(seeds), config=config,
                       backend=source.backend, env_settings=settings, wrappers=source.wrappers, spaces=data.get("spaces"),
                       format_version=version)

    def check_resumable(self, spec: "RunSpec") -> None:
        """Resume restores the checkpoint tensor by tensor: only formats whose layout this dqnx writes."""
        if spec.format_version not in RESUMABLE_VERSIONS:
            raise UsageError(f"{self.path} is a run of format {FORMAT_NAME}/{spec.format_version}, which this dqnx cannot "
                             f"resume (it resumes {FORMAT}); evaluate or load it, or train a new run")

    def record_resume(self, from_env_step: int, total_steps: int, lr_schedule_steps: int = 0) -> None:
        """A resumed run's config.json, written once its checkpoint has loaded: its total (extended
        by --steps), the span a learning-rate schedule keeps (the original total, when it has one),
        and the `resume_changes` given: their new values, listed under "resume_changes" with the
        checkpoint they apply from and what the values were."""
        data = read_json(self.path / CONFIG, "run config")
        values = {"total_steps": total_steps, **({"lr_schedule_steps": lr_schedule_steps} if lr_schedule_steps else {})}
        changed = any(data["config"].get(key) != value for key, value in values.items())
        data["config"].update(values)
        if self.resume_changes is not None:
            new, previous = self.resume_changes
            data["config"].update(new)
            data.setdefault("resume_changes", []).append({"from_env_step": from_env_step, "set": new, "previous": previous,
                                                          "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            changed = True
        if changed:
            atomic_write_json(self.path / CONFIG, data)

    def remove_summary(self) -> None:
        (self.path / SUMMARY).unlink(missing_ok=True)

    # --- weights and checkpoints ----------------------------------------------------
    def save_weights(self, which: str, params: Any, info: dict[str, Any]) -> None:
        save_tree(self.path / (BEST if which == "best" else LAST), params, info)

    def load_weights(self, which: str, template: Any) -> tuple[Any, dict[str, Any]]:
        return load_tree(self.path / (BEST if which == "best" else LAST), template)

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def save_checkpoint(self, state: Any, progress: dict[str, Any]) -> None:
        save_tree(self.path / CHECKPOINT, state, progress)

    def load_checkpoint(self, template: Any) -> tuple[Any, dict[str, Any]]:
        if not self.has_checkpoint():
            raise UsageError(f"{self.path} has no {CHECKPOINT} to resume from; it stopped before its first checkpoint")
        return load_tree(self.path / CHECKPOINT, template)

    # --- metrics and summary ----------------------------------------------------------
    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path / METRICS, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writerows({k: _fmt(row.get(k)) for k in METRIC_COLUMNS} for row in rows)

    def truncate_metrics(self, env_steps: int) -> None:
        """Keep complete rows up to `env_steps` (a resumed run rewrites what came after)."""
        path = self.path / METRICS
        text = path.read_text() if path.is_file() else ""
        keep = []
        for row in csv.DictReader(io.StringIO(text)):
            try:
                if None not in row.values() and int(row["env_steps"]) <= env_steps:
                    keep.append(row)
            except (TypeError, ValueError):
                continue
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_bytes(path, out.getvalue().encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY, summary)


def read_spaces(run_dir: str | Path) -> dict[str, Any]:
    """The observation and action spaces a run recorded (config.json's "spaces": shape, dtype,
    layout, bounds, action count), checked; reading them imports nothing the run names."""
    run = RunDir.open(run_dir)
    spec = run.read_config()
    SpacesEnv.from_record(spec.spaces, spec.env_id, spec.backend, str(run.path / CONFIG))  # validates
    return spec.spaces


def spaces_env(run_dir: str | Path) -> SpacesEnv:
    """A stand-in environment built from the recorded spaces: enough to load weights and compute
    Q-values (dqnx.api.load_weights, export, serve) without the environment's package or trust."""
    run = RunDir.open(run_dir)
    spec = run.read_config()
    return SpacesEnv.from_record(spec.spaces, spec.env_id, spec.backend, str(run.path / CONFIG))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return str(value)
