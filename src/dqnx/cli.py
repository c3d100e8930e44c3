"""The `dqnx` command: train, sweep, tune, eval, show, plot, record, report, envs, dataset, imitate, export, serve.

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback),
1 on a failure while running, 3 when training diverged, 130 when interrupted (a checkpoint is saved first).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Deep Q-learning on JAX: train, evaluate and inspect DQN agents.",
)


def _err(message: str) -> None:
    # Plain write, not rich: an error stays on one line whatever the terminal width.
    sys.stderr.write(message.replace("\n", " ") + "\n")


def _check_steps_and_seeds(steps: Optional[int], seeds: int) -> None:
    from dqnx.errors import UsageError

    if steps is not None and steps <= 0:
        raise UsageError(f"--steps must be a positive number of env steps, got {steps}")
    if seeds <= 0:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")


TRUST_HELP = ("Import and run the code the run directory names for its environment (module:Class, package:EnvId, "
              "wrappers) even though it was not created here by you. Only for runs you trust.")
WRAPPER_HELP = ("Gymnasium wrapper applied to the env, in order: --wrapper module:callable, keyword arguments as a JSON "
                "object after '=': --wrapper 'gymnasium.wrappers:TimeLimit={\"max_episode_steps\": 100}' (repeatable).")


@app.command()
def train(
    env_id: Optional[str] = typer.Argument(None, help="Environment: a gymnax id (see `dqnx envs`), a Gymnasium id (LunarLander-v3, ALE/Pong-v5), module.path:EnvClass or package:EnvId (minigrid:MiniGrid-Empty-5x5-v0). Omit with --resume."),
    agent: str = typer.Option("dqn", "--agent", help="dqn, rainbow (DQN with all its improvements), pqn (parallel Q-learning: Q(lambda) rollouts, no replay), tabular-q, sarsa or linear-q (imitation policies come from `dqnx imitate`)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="jax (gymnax, compiled loop) or gymnasium (host loop); default: jax for gymnax's ids, else gymnasium."),
    num_envs: Optional[int] = typer.Option(None, "--num-envs", help="Environments stepped in parallel per seed (same as --set num_envs=N)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Env steps to train (default: the preset's total_steps)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the (first) run."),
    seeds: int = typer.Option(1, "--seeds", help="Train this many seeds (seed, seed+1, ...) side by side in one program."),
    set_: List[str] = typer.Option([], "--set", help="Override a hyperparameter: --set learning_rate=3e-4 (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of hyperparameters, applied over the preset."),
    env_param: List[str] = typer.Option([], "--env-param", help="Override an environment parameter: --env-param slip=0.2 (repeatable)."),
    wrapper: List[str] = typer.Option([], "--wrapper", help=WRAPPER_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create (default: runs/ENV-TIME)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory exactly where it stopped."),
    until_solved: bool = typer.Option(False, "--until-solved", help="Stop once every seed's greedy evaluation reaches the solve threshold."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table; the run directory is still printed."),
    no_tensorboard: bool = typer.Option(False, "--no-tensorboard", help="Do not write TensorBoard event files (RUN_DIR/tensorboard/)."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Train an agent (DQN by default) and write a run directory (config, weights, metrics, summary).

    Exit status 3 when training diverged (non-finite loss, Q-values or weights): the run
    directory keeps the last finite weights and checkpoint; the message says how to resume."""
    from dqnx.config import parse_set
    from dqnx.errors import UsageError

    _check_steps_and_seeds(steps, seeds)
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed}")
    if resume is not None and (config is not None or out is not None or seeds != 1 or seed != 0 or env_param
                               or agent != "dqn" or backend is not None or num_envs is not None or wrapper):
        raise UsageError("--resume continues a run with its saved settings; drop --agent, --backend, --num-envs, --config, --env-param, --wrapper, --out, --seed and --seeds (only --steps may extend it, and --set may change a hyperparameter, e.g. a lower learning_rate after a divergence)")
    if num_envs is not None and num_envs <= 0:
        raise UsageError(f"--num-envs must be at least 1, got {num_envs}")
    overrides = parse_set(set_)
    if num_envs is not None:
        overrides["num_envs"] = num_envs
    env_params = parse_set(env_param, option="--env-param")

    from dqnx import api

    run = api.train(
        env_id,
        agent=agent,
        backend=backend,
        env_params=env_params or None,
        wrappers=list(wrapper) or None,
        steps=steps,
        seed=seed,
        seeds=seeds,
        config=overrides or None,
        config_file=config,
        out=out,
        resume=resume,
        progress=not quiet,
        stop_when_solved=until_solved,
        tensorboard=not no_tensorboard,
        trust_env_code=trust_env_code,
    )
    if not quiet:
        from dqnx.ui import print_summary

        print_summary(run.summary, str(run.path))
    typer.echo(str(run.path))


RAY_HELP = ("Run on Ray: alone, a Ray instance started on this machine; 'auto' or an address (HOST:PORT, "
            "ray://HOST:PORT) joins that cluster. Needs pip install 'dqnx\\[ray]'.")  # \\[: not rich markup


@app.command()
def sweep(
    env_id: str = typer.Argument(..., help="Environment, as for `dqnx train`."),
    grid: List[str] = typer.Option(..., "--grid", help="Hyperparameter and its values: --grid lr=1e-4,3e-4,1e-3 (repeatable; lists in brackets: --grid hidden_sizes=[64,64],[256,256])."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per configuration (seed, seed+1, ...)."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    agent: str = typer.Option("dqn", "--agent", help="dqn, rainbow, pqn, tabular-q, sarsa or linear-q."),
    backend: Optional[str] = typer.Option(None, "--backend", help="jax or gymnasium (default: as for `dqnx train`)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Env steps per run (default: the preset's total_steps)."),
    set_: List[str] = typer.Option([], "--set", help="Override a hyperparameter of every configuration: --set batch_size=128."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of hyperparameters, applied over the preset."),
    env_param: List[str] = typer.Option([], "--env-param", help="Override an environment parameter (repeatable)."),
    wrapper: List[str] = typer.Option([], "--wrapper", help=WRAPPER_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory to create (default: sweeps/ENV-TIME)."),
    ray: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table; the sweep directory is still printed."),
) -> None:
    """Train a grid of hyperparameters x seeds: vmappable ones (lr, gamma, epsilon schedule, tau,
    target period, ...) in one compiled program, others in one program per shape. Writes
    results.csv, curves.csv and curves.png (a grid of learning curves)."""
    from dqnx.config import parse_set

    _check_steps_and_seeds(steps, seeds)
    from dqnx import api
    from dqnx.search.sweep import parse_grid

    parsed = parse_grid(grid, agent)
    result = api.sweep(env_id, parsed, agent=agent, backend=backend, steps=steps, seed=seed, seeds=seeds,
                       config=parse_set(set_) or None, config_file=config,
                       env_params=parse_set(env_param, option="--env-param") or None, wrappers=list(wrapper) or None,
                       out=out, ray=ray, progress=not quiet)
    if not quiet:
        from dqnx.ui import print_sweep

        print_sweep(result)
    typer.echo(str(result.path))


@app.command()
def tune(
    env_id: str = typer.Argument(..., help="Environment, as for `dqnx train`."),
    trials: int = typer.Option(32, "--trials", help="Finished trials the study should hold; a resumed study runs only the rest."),
    param: List[str] = typer.Option([], "--param", help="Search space entry: --param lr=1e-4:1e-2:log, --param gamma=0.9:0.999, --param batch_size=32|64|128 (repeatable; default: lr, gamma, tau, epsilon floor and decay)."),
    batch: int = typer.Option(8, "--batch", help="Trials asked and trained together (one compiled program when their hyperparameters are vmappable)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per trial; the objective is their mean."),
    seed: int = typer.Option(0, "--seed", help="First seed of each trial, and the sampler's seed."),
    objective: str = typer.Option("auc", "--objective", help="auc: mean of the periodic greedy evaluations (rewards learning early); final: final greedy return of the best weights."),
    agent: str = typer.Option("dqn", "--agent", help="dqn, rainbow, pqn, tabular-q, sarsa or linear-q."),
    backend: Optional[str] = typer.Option(None, "--backend", help="jax or gymnasium (default: as for `dqnx train`)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Env steps per trial (default: the preset's total_steps)."),
    set_: List[str] = typer.Option([], "--set", help="Fix a hyperparameter of every trial: --set batch_size=128."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of hyperparameters, applied over the preset."),
    env_param: List[str] = typer.Option([], "--env-param", help="Override an environment parameter (repeatable)."),
    wrapper: List[str] = typer.Option([], "--wrapper", help=WRAPPER_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Study directory (default: tune/ENV): study.db, best.toml, trials.csv."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name in the storage (default: ENV-AGENT)."),
    ray: Optional[str] = typer.Option(None, "--ray", help=RAY_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; the best config's path is still printed."),
) -> None:
    """Tune hyperparameters with Optuna (TPE, pruning on the periodic evaluation), stored in SQLite and
    resumable by running the same command again; writes the best trial as a preset (best.toml)."""
    from dqnx.config import parse_set

    _check_steps_and_seeds(steps, seeds)
    from dqnx import api

    result = api.tune(env_id, trials=trials, params=param or None, batch=batch, objective=objective, agent=agent,
                      backend=backend, steps=steps, seed=seed, seeds=seeds, config=parse_set(set_) or None,
                      config_file=config, env_params=parse_set(env_param, option="--env-param") or None,
                      wrappers=list(wrapper) or None, out=out,
                      storage=storage, study_name=study_name, ray=ray, progress=not quiet)
    if not quiet:
        from dqnx.ui import print_tune

        print_tune(result)
    typer.echo(str(result.best_config_path if result.best_config_path is not None else result.path))


@app.command("eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`."),
    episodes: int = typer.Option(100, "--episodes", help="Greedy episodes per trained seed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation episodes."),
    weights: str = typer.Option("best", "--weights", help="'best' (highest periodic evaluation) or 'last'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: mean_return, std_return, episodes, ..."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Evaluate a trained agent greedily on fresh episodes."""
    from dqnx.errors import UsageError

    if episodes <= 0:
        raise UsageError(f"--episodes must be a positive integer, got {episodes}")
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed}")
    from dqnx import api

    result = api.evaluate(run_dir, episodes=episodes, seed=seed, weights=weights, trust_env_code=trust_env_code)
    if as_json:
        typer.echo(json.dumps(result))
        return
    steps = result["weights_env_steps"]
    steps_text = ", ".join(map(str, steps)) if isinstance(steps, list) else str(steps)
    origin = f" (from env step {steps_text})" if steps is not None else ""  # imitation weights come from epochs, not env steps
    _err(f"evaluated the {weights} weights of {run_dir}{origin}")
    typer.echo(
        f"{result['env_id']}: mean return {result['mean_return']:.2f} ± {result['std_return']:.2f} "
        f"over {result['episodes']} episodes" + (f" for each of {result['seeds']} seeds" if result["seeds"] > 1 else "")
    )


@app.command()
def show(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`."),
    weights: str = typer.Option("best", "--weights", help="'best' or 'last'."),
    seed_index: int = typer.Option(0, "--seed-index", help="Which seed of a multi-seed run."),
    max_rows: int = typer.Option(40, "--max-rows", help="Print the whole Q-table up to this many states; summarize beyond."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP + " (Only runs that record no spaces need it.)"),
) -> None:
    """Show what an agent learned: its Q-table (tabular agents) or its parameters."""
    from dqnx import api
    from dqnx.inspect import show_agent

    # Showing weights plays nothing: the recorded spaces suffice, so no code the run names is imported
    # (runs written before spaces were recorded build their environment, under the usual trust check).
    show_agent(api.load_weights(run_dir, weights=weights, trust_env_code=trust_env_code), seed_index=seed_index,
               max_rows=max_rows)


@app.command()
def plot(
    run_dirs: List[Path] = typer.Argument(..., help="One or more run directories; several go on one chart to compare them."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the PNGs (default: RUN_DIR/plots; required for several runs)."),
    episodes: int = typer.Option(5, "--episodes", help="Fresh greedy episodes per trained seed for the Q-vs-return plot."),
    seed: int = typer.Option(0, "--seed", help="Seed of those episodes."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Plot return vs env steps, loss vs updates, and predicted Q vs observed return (PNG files)."""
    from dqnx.viz.plots import make_plots

    for path in make_plots(run_dirs, out=out, episodes=episodes, seed=seed, trust_env_code=trust_env_code):
        typer.echo(str(path))


@app.command()
def record(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`."),
    out: Path = typer.Option(..., "--out", help="The recording to write: FILE.gif or FILE.mp4."),
    episodes: int = typer.Option(1, "--episodes", help="Greedy episodes to record, one after the other."),
    seed: int = typer.Option(0, "--seed", help="Seed of the recorded episodes."),
    weights: str = typer.Option("best", "--weights", help="'best' or 'last'."),
    fps: int = typer.Option(50, "--fps", help="Frames per second (one frame per env step)."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Record the trained agent playing (first seed's weights), the episode return drawn on the frames."""
    from dqnx.viz.record import record as record_run

    result = record_run(run_dir, out, episodes=episodes, seed=seed, weights=weights, fps=fps, trust_env_code=trust_env_code)
    returns = ", ".join(f"{r:g}" for r in result["returns"])
    _err(f"recorded {len(result['returns'])} episode(s), return {returns}, {result['frames']} frames")
    typer.echo(str(result["path"]))


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`."),
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML file to write (default: RUN_DIR/report.html)."),
    episodes: int = typer.Option(5, "--episodes", help="Fresh greedy episodes per trained seed for the Q-vs-return plot."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fresh episodes (plot and recording)."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Write one self-contained HTML page: config, summary, evaluation, plots and a recording."""
    from dqnx.viz.report import write_report

    typer.echo(str(write_report(run_dir, out=out, episodes=episodes, seed=seed, trust_env_code=trust_env_code)))


@app.command()
def dataset(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`: the expert."),
    samples: int = typer.Option(..., "--samples", help="Rows to write: one per env step of the expert's greedy policy."),
    out: Path = typer.Option(..., "--out", help="FILE.csv (with a FILE.csv.json sidecar naming the env) or FILE.parquet."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes; different seeds give disjoint episodes (train vs test)."),
    weights: str = typer.Option("best", "--weights", help="The expert's 'best' or 'last' weights."),
    seed_index: int = typer.Option(0, "--seed-index", help="Which seed of a multi-seed expert run."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Write an expert's greedy (state, action) pairs to a CSV or Parquet file, for `dqnx imitate`."""
    from dqnx.imitation.dataset import make_dataset

    meta = make_dataset(run_dir, samples, out, seed=seed, weights=weights, seed_index=seed_index, trust_env_code=trust_env_code)
    expert = meta["expert"]
    mean = expert["mean_return_complete_episodes"]
    _err(f"{meta['samples']} rows from {meta['episodes']} episode{'s' if meta['episodes'] != 1 else ''} of {meta['env_id']}"
         + (f"; expert mean return {mean:.1f} over its {expert['complete_episodes']} complete episodes" if mean is not None else ""))
    typer.echo(str(out))


@app.command()
def imitate(
    train_file: Path = typer.Argument(..., help="Training data written by `dqnx dataset` (.csv or .parquet)."),
    test: Path = typer.Option(..., "--test", help="Held-out data from another --seed; only measured, never trained on."),
    hidden: Optional[str] = typer.Option(None, "--hidden", help="Hidden layer widths, e.g. 256,256; '' or none = a linear policy (default 256,256)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training set (default 150)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per Adam step (default 64)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 1e-3)."),
    set_: List[str] = typer.Option([], "--set", help="Any other ImitationConfig field: --set eval_every_epochs=5 (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the minibatch order."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create (default: runs/ENV-imitation-TIME)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-epoch lines; the run directory is still printed."),
    trust_env_code: bool = typer.Option(False, "--trust-env-code", help=TRUST_HELP),
) -> None:
    """Train a classifier policy on an expert's dataset (cross-entropy); `dqnx eval` then runs it in the env."""
    from dqnx.config import coerce_scalar, parse_set

    overrides: dict = parse_set(set_)
    if hidden is not None:
        widths = "" if hidden.strip().lower() in ("none", "linear") else hidden
        overrides["hidden_sizes"] = coerce_scalar("hidden_sizes", widths, tuple[int, ...], "--hidden")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("learning_rate", lr)):
        if value is not None:
            overrides[name] = value
    from dqnx.imitation.train import imitate as run_imitation

    def report(row: dict) -> None:
        line = (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
                f"test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.3f}")
        if row["eval_mean_return"] is not None:
            line += f" | env return {row['eval_mean_return']:.1f}"
        _err(line)

    run = run_imitation(train_file, test, config=overrides, seed=seed, out=out, on_epoch=None if quiet else report,
                        trust_env_code=trust_env_code)
    s = run.summary
    if not quiet:
        _err(f"last epoch: test accuracy {s['test_accuracy']:.3f}; greedy return of the best weights (epoch "
             f"{s['best_epoch']}) over {s['eval_episodes']} fresh episodes: {s['eval_mean_return']:.1f} ± {s['eval_std_return']:.1f}")
    typer.echo(str(run.path))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`."),
    format: str = typer.Option(..., "--format", help="onnx (for onnxruntime and other ONNX runtimes) or stablehlo (jax.export; metadata in FILE.json)."),
    out: Path = typer.Option(..., "--out", help="The model file to write, e.g. policy.onnx."),
    weights: str = typer.Option("best", "--weights", help="'best' (highest periodic evaluation) or 'last'."),
    seed_index: int = typer.Option(0, "--seed-index", help="Which trained seed of a multi-seed run to export (0 = the first)."),
) -> None:
    """Export the greedy Q-function (observation [, action_mask] -> q_values, action), checked against dqnx before it is kept."""
    from dqnx.deploy.export import ExportCheckFailed, describe_check
    from dqnx.deploy.export import export as export_run

    try:
        result = export_run(run_dir, format=format, out=out, weights=weights, seed_index=seed_index)
    except ExportCheckFailed as e:
        _err(f"error: {e}")
        sys.exit(1)
    _err(describe_check(result))
    sidecar = f" (metadata: {result['sidecar']})" if result["sidecar"] else ""
    typer.echo(f"wrote {result['path']}{sidecar}: {result['env_id']} {result['algorithm']}, seed {result['seed']}, "
               f"{weights} weights, observation {result['observation_shape']} {result['observation_dtype']}, "
               f"{result['num_actions']} actions")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory written by `dqnx train`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (this machine only by default; 0.0.0.0 opens it to the network)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    weights: str = typer.Option("best", "--weights", help="'best' (highest periodic evaluation) or 'last'."),
    seed_index: int = typer.Option(0, "--seed-index", help="Which trained seed of a multi-seed run to serve."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="Larger request bodies get 413."),
    max_batch: int = typer.Option(256, "--max-batch", help="Most observations per POST /act/batch request."),
) -> None:
    """Serve the greedy policy over HTTP: POST /act, POST /act/batch, GET / (the model), GET /health."""
    from dqnx.deploy.serve import serve as serve_run

    if host not in ("127.0.0.1", "localhost", "::1"):
        _err(f"dqnx: warning: --host {host} lets other machines reach the service; it has no authentication")
    _err(f"dqnx: serving {run_dir} ({weights} weights, seed index {seed_index}) on http://{host}:{port} "
         "- POST /act, POST /act/batch, GET /, GET /health; Ctrl+C stops")
    serve_run(run_dir, host=host, port=port, weights=weights, seed_index=seed_index, max_body_bytes=max_body_bytes,
              max_batch=max_batch)


@app.command()
def envs() -> None:
    """List the environments dqnx can train on, with their solve thresholds and presets."""
    from rich.console import Console
    from rich.table import Table

    from dqnx.config import CONFIGS, preset_path
    from dqnx.envs import DISCRETE_ENVS, SOLVE_THRESHOLDS
    from dqnx.envs.gymnax_env import MASKED_ENVS

    table = Table(title="JAX-native environments (gymnax), discrete actions")
    for column in ("id", "family", "solved at (greedy mean, 100 episodes)", "presets for"):
        table.add_column(column)
    for family, ids in DISCRETE_ENVS.items():
        for env_id in ids:
            threshold = SOLVE_THRESHOLDS.get(env_id)
            shown = f"{env_id} (action masks)" if env_id in MASKED_ENVS else env_id
            table.add_row(shown, family, "-" if threshold is None else f"{threshold:g}",
                          ", ".join(a for a in CONFIGS if preset_path(env_id, a)) or "-")
    console = Console()
    console.print(table)
    _minatar_table(console)

    from rich.markup import escape

    from dqnx.envs.gymnasium_env import GYMNASIUM_EXAMPLES, MASKED_EXAMPLES, reward_threshold

    table = Table(title="Gymnasium environments (host loop): any registered id with discrete actions, e.g.")
    for column in ("id", "family", "solved at (env's reward_threshold)", "presets for"):
        table.add_column(column)
    for family, ids in GYMNASIUM_EXAMPLES.items():
        for env_id in ids:
            threshold = reward_threshold(env_id)
            preset_id = "atari" if env_id.startswith("ALE/") else env_id.split(":", 1)[-1]
            shown = f"{env_id} (action masks)" if env_id in MASKED_EXAMPLES else env_id
            table.add_row(shown, escape(family), "-" if threshold is None else f"{threshold:g}",
                          ", ".join(a for a in CONFIGS if preset_path(preset_id, a)) or "-")
    console.print(table)
    console.print("Ids gymnax also has train on JAX unless --backend gymnasium; your own env: module.path:EnvClass; "
                  "another package's: package:EnvId (e.g. minigrid:MiniGrid-Empty-5x5-v0 --wrapper "
                  "minigrid.wrappers:ImgObsWrapper --wrapper gymnasium.wrappers:FlattenObservation).")
    console.print("Action masks: a Gymnasium env's info['action_mask'] or a Dict observation's 'action_mask' key is "
                  "used when present (--set action_mask=off ignores it).")


def _minatar_table(console) -> None:
    """Each MinAtar game's presets and published references, with the settings of each."""
    from rich.table import Table

    from dqnx.config import CONFIGS, preset_path
    from dqnx.envs.minatar import GAMES, REFERENCES, SETTINGS, reference_text

    table = Table(title="MinAtar: presets and published final returns (docs/minatar.md, benchmarks/minatar.py)")
    for column in ("id", "presets for", "published references"):
        table.add_column(column)
    for game in GAMES:
        table.add_row(game, ", ".join(a for a in CONFIGS if preset_path(game, a)) or "-", reference_text(game))
    console.print(table)
    for ref in REFERENCES:
        console.print(f"  {ref.agent.split(' ')[0]}: {ref.source}; {ref.measure}.")
    for settings in SETTINGS.values():
        params = " ".join(f"--env-param {k}={v}" for k, v in settings.params("Breakout-MinAtar").items())
        console.print(f"  {settings.name} settings: {settings.description} ({params}).")


def _optional_ray_value(args: list[str]) -> list[str]:
    """`--ray` takes an optional address: alone (last, or before another option or the env id)
    it means a Ray instance started here. Click options cannot have optional values, so a
    bare --ray becomes --ray=local unless an address follows: auto, local, ray://... or
    HOST:PORT with a numeric port (so an env id module.path:EnvClass is not taken for one)."""
    out = []
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else ""
        host, colon, port = following.rpartition(":")
        address = following in ("auto", "local") or following.startswith("ray://") or (colon and host and port.isdigit())
        out.append("--ray=local" if arg == "--ray" and not address else arg)
    return out


def _user_traceback(error: BaseException) -> str:
    """The traceback of `error` cut to the frames of the user's own code: not dqnx's, not an
    installed package's, not the standard library's."""
    import sysconfig
    import traceback

    import dqnx

    ours = [str(Path(dqnx.__file__).parent)] + [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]

    def users(frame) -> bool:
        # By module name as well as by path: a second copy of dqnx's modules (pytest's doctest
        # collection imports src/dqnx beside the installed package) lies outside `ours`.
        module = frame.f_globals.get("__name__") or ""
        return "dqnx" not in module.split(".") and not any(frame.f_code.co_filename.startswith(p) for p in ours)

    frames = traceback.StackSummary.extract(
        (frame, line) for frame, line in traceback.walk_tb(error.__traceback__) if users(frame))
    if not frames:
        return ""
    text = "".join(traceback.format_list(frames))
    return "Traceback of your environment's code (most recent call last):\n" + text + \
        "".join(traceback.format_exception_only(type(error), error))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from dqnx.errors import DqnxWarning

    if issubclass(category, DqnxWarning):
        _err(f"warning: {message}")  # the user's settings: one line, no source location
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main() -> None:
    from dqnx.errors import Diverged, EnvFailed, EnvironmentFailure, Interrupted, RunFailed, UsageError

    warnings.showwarning = _show_warning
    try:
        # prog_name: click would otherwise name the program after how Python was started ("python -m
        # dqnx.cli", or "python -m pytest.dqnx" when a test calls main()); the installed command is dqnx.
        app(args=_optional_ray_value(sys.argv[1:]), standalone_mode=False, prog_name="dqnx")
    except UsageError as e:
        _err(f"error: {e}")
        sys.exit(2)
    except EnvironmentFailure as e:
        _err(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except Interrupted as e:
        _err(str(e))
        sys.exit(130)
    except Diverged as e:
        _err(f"error: {e}")
        sys.exit(3)
    except RunFailed as e:
        if e.__cause__ is not None and isinstance(e, EnvFailed):
            sys.stderr.write(_user_traceback(e.__cause__))  # their environment's bug: their frames to read
        _err(f"error: {e}")
        sys.exit(1)
    except Exception as e:
        # Command-line usage errors (click's, vendored inside newer typer releases as a
        # private module, so matched by shape): exit code 2 and a formatted message.
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `dqnx`: the help was printed
            sys.exit(0)
        if getattr(e, "exit_code", None) == 2 and hasattr(e, "format_message"):
            ctx = getattr(e, "ctx", None)
            command = ctx.command_path if ctx is not None else "dqnx"
            _err(f"error: {e.format_message()} (see {command} --help)")
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
