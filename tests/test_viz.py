"""Seeing what the agent learned: TensorBoard files, plots, recordings and the HTML report.

Every artifact is read back the way a user's tool would read it: event files with
TensorBoard's own reader, PNG/GIF with Pillow and imageio, MP4 with ffmpeg, and the
report in headless Chromium (Debian's chromium + chromedriver, driven by selenium).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


TAGS = {
    "train/episode_return", "train/episode_return_last_100", "train/loss", "train/epsilon", "train/q_mean", "train/td_error",
    "perf/steps_per_second", "eval/mean_return", "eval/final_mean_return",
}


@pytest.fixture(scope="module")
def run2(cartpole_two_seeds):
    """A tiny two-seed CartPole run (2000 env steps, evaluated every 500; conftest's, shared: copied before
    anything is written into it)."""
    return cartpole_two_seeds.path


@pytest.fixture(scope="module")
def agent(run2):
    import dqnx

    return dqnx.load(run2)


def metrics_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- TensorBoard ------------------------------------------------------------------------------

def read_events(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    return accumulator


def test_tensorboard_events_per_seed_hold_every_metric(run2):
    rows = metrics_rows(run2)
    summary = json.loads((run2 / "summary.json").read_text())
    for seed in (0, 1):
        events = read_events(run2 / "tensorboard" / f"seed_{seed}")
        assert set(events.Tags()["scalars"]) == TAGS
        seed_rows = [r for r in rows if int(r["seed"]) == seed]
        evals = events.Scalars("eval/mean_return")
        assert [e.step for e in evals] == [int(r["env_steps"]) for r in seed_rows] == [500, 1000, 1500, 2000]
        np.testing.assert_allclose([e.value for e in evals], [float(r["eval_mean_return"]) for r in seed_rows], rtol=1e-5)
        epsilons = events.Scalars("train/epsilon")
        np.testing.assert_allclose([e.value for e in epsilons], [float(r["epsilon"]) for r in seed_rows], rtol=1e-5)
        # Chunks without an update (learning_starts 200 < 500, so every chunk has one) or without a finished
        # episode are left out rather than written as NaN.
        assert all(math.isfinite(e.value) for e in events.Scalars("train/loss"))
        final = events.Scalars("eval/final_mean_return")
        per_seed = next(s for s in summary["per_seed"] if s["seed"] == seed)
        assert [e.step for e in final] == [2000]
        assert final[0].value == pytest.approx(per_seed["eval_mean_return"], rel=1e-6)


def test_no_tensorboard_flag_writes_no_event_files(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dqnx.cli import app

    monkeypatch.chdir(tmp_path)
    sets = []
    for item in ("total_steps=1000", "eval_every=500", "eval_episodes=4", "final_eval_episodes=4",
                 "hidden_sizes=32", "buffer_size=1000", "learning_starts=200"):
        sets += ["--set", item]
    result = CliRunner().invoke(app, ["train", "CartPole-v1", *sets, "--quiet", "--no-tensorboard", "--out", "run"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "summary.json").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_tensorboard_after_a_crash_and_resume_has_no_duplicate_steps(tmp_path, tiny):
    """A run killed between checkpoints left events past its checkpoint; the resumed run's
    events replace them (purge_step), as metrics.csv drops its rows past the checkpoint."""
    import dqnx
    from dqnx.drivers.trainer import Reporter

    class CrashAt1500(Reporter):
        def update(self, progress):
            if progress.env_steps == 1500:
                raise KeyboardInterrupt  # like a second Ctrl-C: no checkpoint at 1500

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        dqnx.train("CartPole-v1", config=tiny(checkpoint_every=1000), out=run, progress=CrashAt1500())
    before = read_events(run / "tensorboard" / "seed_0")
    assert [e.step for e in before.Scalars("eval/mean_return")] == [500, 1000, 1500]
    dqnx.train(resume=run)
    events = read_events(run / "tensorboard" / "seed_0")
    rows = metrics_rows(run)
    evals = events.Scalars("eval/mean_return")
    assert [e.step for e in evals] == [int(r["env_steps"]) for r in rows] == [500, 1000, 1500, 2000]
    np.testing.assert_allclose([e.value for e in evals], [float(r["eval_mean_return"]) for r in rows], rtol=1e-5)


def test_tensorboard_log_skips_nan_and_closes(tmp_path):
    from dqnx.runs.tensorboard import TensorBoardLog

    log = TensorBoardLog(tmp_path, [3])
    log.write([{"env_steps": 10, "seed": 3, "train_return": math.nan, "loss": 0.5, "eval_mean_return": 9.0}])
    log.close()
    events = read_events(tmp_path / "tensorboard" / "seed_3")
    assert set(events.Tags()["scalars"]) == {"train/loss", "eval/mean_return"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 0.5)]


# --- greedy rollouts and the Q-vs-return data -------------------------------------------------

def test_returns_to_go_by_hand():
    from dqnx.viz.rollout import Episode

    episode = Episode(observations=np.zeros((4, 1)), actions=np.array([1, 0, 1]), rewards=np.array([1.0, 2.0, 4.0]),
                      q_values=np.array([[0.0, 5.0], [6.0, 0.0], [0.0, 7.0]]), terminated=True)
    # G_2 = 4, G_1 = 2 + 0.5 * 4 = 4, G_0 = 1 + 0.5 * 4 = 3
    np.testing.assert_allclose(episode.returns_to_go(0.5), [3.0, 4.0, 4.0])
    np.testing.assert_allclose(episode.q_taken, [5.0, 6.0, 7.0])
    assert episode.total_return == 7.0 and episode.length == 3


def test_greedy_episodes_are_whole_cartpole_episodes(agent):
    from dqnx.viz.rollout import greedy_episodes

    episodes = greedy_episodes(agent, 4, seed=0, seed_index=1)
    assert len(episodes) == 4
    for ep in episodes:
        # CartPole pays 1 per step; an episode ends by falling (terminated) or at the 500-step limit.
        assert ep.total_return == ep.length
        assert ep.terminated == (ep.length < 500)
        assert ep.observations.shape == (ep.length + 1, 4)
        assert ep.q_values.shape == (ep.length, 2)
        np.testing.assert_array_equal(ep.actions, ep.q_values.argmax(axis=1))  # greedy
        # The Q-values are the agent's own on these observations.
        np.testing.assert_allclose(ep.q_values, agent.q_values(ep.observations[:-1], seed_index=1), rtol=1e-5, atol=1e-5)
        if ep.terminated:  # CartPole terminates when the pole leans past 12 degrees or the cart leaves the track
            last = ep.observations[-1]
            assert abs(last[2]) > 0.2094 or abs(last[0]) > 2.4
    again = greedy_episodes(agent, 4, seed=0, seed_index=1)
    assert [e.length for e in again] == [e.length for e in episodes]  # same seed, same episodes


def test_gymnasium_rollout_matches_the_agent(agent):
    import gymnasium

    from dqnx.viz.rollout import gymnasium_greedy_episodes

    env = gymnasium.make("CartPole-v1")
    try:
        episodes = gymnasium_greedy_episodes(env, lambda obs: agent.q_values(obs), 2, seed=3)
    finally:
        env.close()
    for ep in episodes:
        assert ep.total_return == ep.length and ep.terminated == (ep.length < 500)
        assert ep.observations.shape == (ep.length + 1, 4)
        np.testing.assert_array_equal(ep.actions, ep.q_values.argmax(axis=1))
        np.testing.assert_allclose(ep.q_values, agent.q_values(ep.observations[:-1].astype(np.float32)), rtol=1e-5, atol=1e-5)


# --- plots ------------------------------------------------------------------------------------

def _metric_means(run: Path, x_column: str, y_column: str) -> tuple[list[float], list[float]]:
    """x and the mean over seeds of y at each x, straight from metrics.csv (empty cells left out)."""
    table: dict[float, list[float]] = {}
    for row in metrics_rows(run):
        if row[y_column] != "":
            table.setdefault(float(row[x_column]), []).append(float(row[y_column]))
    xs = sorted(table)
    return xs, [float(np.mean(table[x])) for x in xs]


def test_plot_writes_three_pngs_of_the_runs_data(run2, tmp_path, monkeypatch):
    """The PNGs are the figures drawn, and the figures hold the run's data: the curves are metrics.csv's
    means over seeds, the scatter is (G_t, Q(s_t, a_t)) of each seed's fresh greedy episodes."""
    from matplotlib.figure import Figure
    from PIL import Image

    import dqnx
    from dqnx.viz.plots import make_plots
    from dqnx.viz.rollout import greedy_episodes

    figures = []
    savefig = Figure.savefig

    def keep_and_save(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_and_save)
    run = tmp_path / "copy"
    shutil.copytree(run2, run)
    paths = make_plots([run], episodes=2)
    assert [p.name for p in paths] == ["returns.png", "loss.png", "q_vs_return.png"]
    sizes = {"returns.png": (700, 420), "loss.png": (700, 420), "q_vs_return.png": (560, 520)}
    for path in paths:
        assert path.parent == run / "plots"
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == sizes[path.name]
    assert not list((run / "plots").glob(".*.tmp"))
    assert len(figures) == 3
    returns, loss, scatter = (fig.axes[0] for fig in figures)

    def line(ax, label_part: str):
        matches = [ln for ln in ax.get_lines() if label_part in ln.get_label()]
        assert len(matches) == 1, [ln.get_label() for ln in ax.get_lines()]
        return np.asarray(matches[0].get_xdata(), float), np.asarray(matches[0].get_ydata(), float)

    x, y = line(returns, "greedy eval")
    expected_x, expected_y = _metric_means(run, "env_steps", "eval_mean_return")
    assert expected_x == [500, 1000, 1500, 2000]
    np.testing.assert_allclose(x, expected_x)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6)
    x, y = line(returns, "training episodes")
    expected_x, expected_y = _metric_means(run, "env_steps", "train_return")
    np.testing.assert_allclose(x, expected_x)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6)
    assert line(returns, "solved at")[1].tolist() == [475, 475]

    x, y = line(loss, "2 seeds")
    expected_x, expected_y = _metric_means(run, "updates", "loss")
    keep = np.asarray(expected_x) > 0  # no loss before the first update
    assert keep.sum() >= 3
    np.testing.assert_allclose(x, np.asarray(expected_x)[keep])
    np.testing.assert_allclose(y, np.asarray(expected_y)[keep], rtol=1e-6)

    agent = dqnx.load(run)
    for index, seed in enumerate(agent.seeds):
        episodes = greedy_episodes(agent, 2, seed=0, seed_index=index)
        expected = np.stack([np.concatenate([ep.returns_to_go(agent.config.gamma) for ep in episodes]),
                             np.concatenate([ep.q_taken for ep in episodes])], axis=1)
        drawn = np.concatenate([c.get_offsets() for c in scatter.collections if c.get_label().startswith(f"seed {seed}:")])
        assert drawn.shape == expected.shape == (sum(ep.length for ep in episodes), 2)
        order = lambda points: points[np.lexsort(points.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(order(np.asarray(drawn, float)), order(expected), rtol=1e-5, atol=1e-5)


def test_plot_compares_several_runs_on_one_chart(run2, tmp_path):
    from dqnx.errors import UsageError
    from dqnx.viz.plots import make_plots, read_run

    other = tmp_path / "other"
    shutil.copytree(run2, other)
    with pytest.raises(UsageError, match="--out"):
        make_plots([run2, other])
    paths = make_plots([run2, other], out=tmp_path / "cmp", episodes=1)
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["loss.png", "q_vs_return.png", "returns.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    data = read_run(run2)
    assert sorted(data.metrics) == [0, 1] and list(data.metrics[0]["env_steps"]) == [500, 1000, 1500, 2000]


# --- recordings -------------------------------------------------------------------------------

def test_record_gif_frames_and_size(run2, tmp_path):
    import imageio.v3 as iio

    from dqnx.viz.record import record

    result = record(run2, tmp_path / "play.gif", episodes=2)
    frames = iio.imread(tmp_path / "play.gif", index=None)
    # One frame per observation: the first one and one after every step, for each episode.
    assert frames.shape == (sum(result["lengths"]) + 2, 400, 600, 3) == (result["frames"], 400, 600, 3)
    assert result["returns"] == [float(n) for n in result["lengths"]]  # CartPole: 1 per step
    # The banner (top left) changes every frame: the step and the return are drawn on it.
    banner = frames[:, :30, :300].reshape(len(frames), -1)
    assert (np.abs(np.diff(banner.astype(int), axis=0)).sum(axis=1) > 0).all()


# imageio's ffmpeg reader starts ffmpeg in a subprocess, and JAX warns on every fork.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_record_mp4_frames_and_size(run2, tmp_path):
    import imageio.v2 as iio2

    from dqnx.viz.record import record

    result = record(run2, tmp_path / "play.mp4", episodes=1, fps=25)
    reader = iio2.get_reader(tmp_path / "play.mp4", "ffmpeg")
    try:
        assert reader.count_frames() == result["frames"] == result["lengths"][0] + 1
        meta = reader.get_meta_data()
        assert tuple(meta["size"]) == (600, 400)
        assert meta["fps"] == pytest.approx(25)
        assert reader.get_data(0).shape == (400, 600, 3)
    finally:
        reader.close()


def test_gymnasium_frame_source_plays_the_trained_agent(agent):
    import gymnasium

    from dqnx.viz.record import _quiet_pygame, annotate, gymnasium_episodes

    _quiet_pygame()
    env = gymnasium.make("CartPole-v1", render_mode="rgb_array")
    try:
        episodes = gymnasium_episodes(env, lambda obs: agent.act(obs), episodes=2, seed=5)
    finally:
        env.close()
    for ep in episodes:
        assert len(ep.frames) == len(ep.rewards) + 1
        assert ep.frames[0].shape == (400, 600, 3)
    frames = annotate(episodes, "CartPole-v1", scale=0.5)
    assert len(frames) == sum(len(ep.frames) for ep in episodes)
    assert frames[0].shape == (200, 300, 3)


def test_record_bad_input(run2, tmp_path):
    from dqnx.errors import UsageError
    from dqnx.viz.record import jax_env_episodes, record

    with pytest.raises(UsageError, match=r"must end in \.gif or \.mp4"):
        record(run2, tmp_path / "play.avi")
    with pytest.raises(UsageError, match="does not exist"):
        record(run2, tmp_path / "missing" / "play.gif")
    with pytest.raises(UsageError, match="--episodes must be a positive integer"):
        record(run2, tmp_path / "play.gif", episodes=0)
    with pytest.raises(UsageError, match="--seed"):
        record(run2, tmp_path / "play.gif", seed=-1)
    with pytest.raises(UsageError, match="Dungeon-v0 has no renderer"):
        jax_env_episodes(SimpleNamespace(env=SimpleNamespace(env_id="Dungeon-v0")), 1)
    assert list(tmp_path.iterdir()) == []


# --- the HTML report --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_file(run2, tmp_path_factory):
    from dqnx.viz.report import write_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    assert write_report(run2, out=out, episodes=2) == out
    return out


def test_report_is_self_contained(report_file, run2):
    text = report_file.read_text()
    summary = json.loads((run2 / "summary.json").read_text())
    assert text.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "<script", "<link"):
        assert needle not in text, needle  # nothing to fetch: it opens offline
    assert text.count('src="data:image/png;base64,') == 3
    assert text.count('src="data:image/gif;base64,') == 1
    assert f"{summary['eval_mean_return']:.2f}" in text
    assert "learning_rate" in text  # the configuration


def _chromium_driver(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1200,1500"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_report_in_headless_chromium(report_file, tmp_path):
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must have /usr/bin/chromium and /usr/bin/chromedriver (.ci/run installs them)")
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="dqnx-chromium-")
    driver = _chromium_driver(profile)
    try:
        driver.get(report_file.resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
            " width: i.naturalWidth, height: i.naturalHeight}))"
        )
        assert len(images) == 4
        broken = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
        assert broken == []
        sizes = {i["alt"]: (i["width"], i["height"]) for i in images}
        assert sizes["returns.png"] == (700, 420) and sizes["q_vs_return.png"] == (560, 520)
        assert sizes["recording of the trained agent"] == (300, 200)
        # Nothing was fetched from anywhere: data: URIs only.
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(name.startswith("data:") for name in fetched), fetched
        assert "CartPole-v1" in driver.title
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size[0] >= 1000 and image.size[1] >= 1000
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a rendered page, not a blank one


# --- the commands -----------------------------------------------------------------------------

def test_cli_plot_record_report(run2, tmp_path, dqnx_cli_here):
    dqnx_cli = dqnx_cli_here  # the command's entry point in this process (test_cli.py runs it in a real one)
    run = tmp_path / "run"
    shutil.copytree(run2, run)
    result = dqnx_cli(["plot", "run", "--episodes", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["run/plots/returns.png", "run/plots/loss.png", "run/plots/q_vs_return.png"]
    result = dqnx_cli(["record", "run", "--out", "play.gif"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "play.gif" and (tmp_path / "play.gif").stat().st_size > 0
    assert "recorded 1 episode(s), return" in result.stderr
    result = dqnx_cli(["report", "run", "--episodes", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "run/report.html" and (run / "report.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["plot", "run", "run"], "error: several runs go on one chart: say where to write it with --out DIR"),
    (["plot", "nowhere"], "error: run directory nowhere does not exist; pass the directory a `dqnx train` run wrote"),
    (["record", "run", "--out", "play.avi"], "error: --out play.avi must end in .gif or .mp4 (the recording's format)"),
    (["record", "run"], "error: Missing option '--out'. (see dqnx record --help)"),
    (["report", "run", "--out", "report.txt"], "error: --out report.txt must end in .html"),
])
def test_cli_bad_input(run2, tmp_path, args, message, dqnx_cli_here):
    shutil.copytree(run2, tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    result = dqnx_cli_here(args, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
