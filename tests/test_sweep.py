"""`dqnx sweep` (issue 7): a sweep gives the same metrics as the same configurations trained
one by one with the same seeds.

A sweep trains a group's members (configuration x seed) as one vmapped program whose
hyperparameters are arrays; `dqnx train` runs one seed unbatched with the same arrays.

Tabular Q-learning has no matrix products, yet the two are not bit-identical on a CPU with
FMA instructions: XLA compiles the vmapped and the unbatched update into different kernels,
and LLVM contracts a different set of its multiply-adds into fused ones, so table entries
drift apart by a few ulps. Those never flip a greedy action in these runs, so every
evaluation return, final return and steps_to_solve is equal (==) and the tables agree to
1e-5; with FMA switched off (XLA_FLAGS=--xla_cpu_max_isa=AVX) the tables are equal bit for
bit (test_tabular_sweep_is_bit_exact_without_fma).

A DQN's vmapped matmuls may also sum in another order than the unbatched ones, and over a
long run a flipped argmax sends a member down another trajectory. For DQN we therefore
compare the first chunk, to a tolerance far below the differences between configurations.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dqnx import api  # noqa: F401  first: jax_setup gives JAX one host device per core before it starts

import dqnx  # noqa: E402

# Tabular Q-learning on the Dungeon corridor (envs/toy.py): 4 chunks of 500 steps, and
# exploration that ends inside the run so that greedy play shapes the later chunks.
TABULAR_BASE = {"total_steps": 2000, "eval_every": 500, "eval_episodes": 8, "final_eval_episodes": 8,
                "epsilon_decay_steps": 1000}
TABULAR_GRID = {"learning_rate": [0.05, 0.3], "gamma": [0.5, 0.9]}
SEEDS = [0, 1]
# metrics.csv columns fixed by the trajectory (equal when the same actions were taken) and
# those computed from the table's values (a few ulps apart, see above); wall-clock ones left out.
TRAJECTORY_COLUMNS = ["env_steps", "seed", "updates", "episodes", "train_return", "epsilon", "eval_mean_return",
                      "eval_std_return"]
VALUE_COLUMNS = ["loss", "q_mean", "td_abs"]
ULPS = 1e-5  # relative tolerance for FMA-contraction differences; seen: at most 5e-7
RESULT_COLUMNS = ["config", "seed", "eval_mean_return", "eval_std_return", "best_periodic_eval_return",
                  "steps_to_solve", "solved", "group", "diverged_at"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def group_members(group: Path) -> list[tuple[int, int]]:
    """(config index, seed) of each member of a group run directory, in its seed-axis order."""
    members = json.loads((group / "members.json").read_text())["members"]
    return [(m["config_index"], m["seed"]) for m in members]


def member_rows(group: Path) -> dict[int, list[dict[str, str]]]:
    """A group's metrics.csv rows per member index: each env_steps block lists every member in order."""
    by_step: dict[str, list[dict[str, str]]] = {}
    for row in read_csv(group / "metrics.csv"):
        by_step.setdefault(row["env_steps"], []).append(row)
    rows: dict[int, list[dict[str, str]]] = {}
    for block in by_step.values():
        for member, row in enumerate(block):
            rows.setdefault(member, []).append(row)
    return rows


def group_dirs(result) -> list[Path]:
    meta = json.loads((result.path / "sweep.json").read_text())
    return [result.path / g["path"] for g in meta["groups"]]


# --- a. tabular Q-learning: bit for bit --------------------------------------------------------


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """A 2 x 2 grid x 2 seeds sweep, and the same 8 runs trained one by one."""
    root = tmp_path_factory.mktemp("tabular")
    result = dqnx.sweep("Dungeon-v0", TABULAR_GRID, agent="tabular-q", seeds=len(SEEDS), config=TABULAR_BASE,
                        out=root / "sweep")
    singles = {
        (index, seed): dqnx.train("Dungeon-v0", agent="tabular-q", seed=seed, config={**TABULAR_BASE, **override},
                                  out=root / f"c{index}-s{seed}", tensorboard=False)
        for index, override in enumerate(result.configs) for seed in SEEDS
    }
    return result, singles


def test_tabular_sweep_rows_equal_the_runs_one_by_one(tabular):
    result, singles = tabular
    assert result.configs == [{"learning_rate": lr, "gamma": g} for lr in (0.05, 0.3) for g in (0.5, 0.9)]
    assert [(r["config"], r["seed"]) for r in result.rows] == sorted(singles)
    for row in result.rows:
        single = singles[(row["config"], row["seed"])].summary["per_seed"][0]
        for key in ("eval_mean_return", "eval_std_return", "best_periodic_eval_return", "steps_to_solve"):
            assert row[key] == single[key], (row, key, single)
    on_disk = read_csv(result.path / "results.csv")
    assert [float(r["eval_mean_return"]) for r in on_disk] == [r["eval_mean_return"] for r in result.rows]


def test_tabular_sweep_curves_equal_the_runs_one_by_one(tabular):
    result, singles = tabular
    curves: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for row in read_csv(result.path / "curves.csv"):
        curves.setdefault((int(row["config"]), int(row["seed"])), []).append((int(row["env_steps"]), float(row["eval_mean_return"])))
    assert sorted(curves) == sorted(singles)
    for key, run in singles.items():
        # Returns are sums of 2s and 10s over at most 100 steps, so a mean of 8 is a multiple of
        # 0.25 below 1000: metrics.csv's 6 significant digits hold it exactly.
        expected = [(int(r["env_steps"]), float(r["eval_mean_return"])) for r in read_csv(run.path / "metrics.csv")]
        assert [step for step, _ in expected] == [500, 1000, 1500, 2000]
        assert curves[key] == expected, key


def test_tabular_group_metrics_and_weights_equal_the_runs_one_by_one(tabular):
    result, singles = tabular
    [group] = group_dirs(result)  # learning rate and gamma are both vmappable: one program
    members = group_members(group)
    assert members == [(c, s) for c in range(4) for s in SEEDS]
    rows = member_rows(group)
    swept = {which: dqnx.load(group, weights=which).params["q"] for which in ("best", "last")}
    for member, key in enumerate(members):
        single_rows = read_csv(singles[key].path / "metrics.csv")
        assert [{c: r[c] for c in TRAJECTORY_COLUMNS} for r in rows[member]] == [{c: r[c] for c in TRAJECTORY_COLUMNS} for r in single_rows], key
        values = lambda rows: np.array([[float(r[c]) for c in VALUE_COLUMNS] for r in rows])  # noqa: E731
        np.testing.assert_allclose(values(rows[member]), values(single_rows), rtol=ULPS, err_msg=str(key))
        for which, tables in swept.items():
            single = dqnx.load(singles[key].path, weights=which).params["q"][0]
            np.testing.assert_allclose(np.asarray(tables[member]), np.asarray(single), rtol=ULPS, err_msg=f"{which} {key}")
    # The comparison can fail: every configuration learned its own table from the same seed.
    last = np.asarray(swept["last"])
    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            if members[a][1] == members[b][1]:
                assert not np.array_equal(last[a], last[b]), (members[a], members[b])


BIT_EXACT_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
import dqnx

root, base = Path(sys.argv[1]), json.loads(sys.argv[2])
grid = {"learning_rate": [0.05, 0.3]}
result = dqnx.sweep("Dungeon-v0", grid, agent="tabular-q", seeds=2, config=base, out=root / "sweep")
swept = {w: np.asarray(dqnx.load(root / "sweep" / "groups" / "g0", weights=w).params["q"]) for w in ("best", "last")}
members = json.loads((root / "sweep" / "groups" / "g0" / "members.json").read_text())["members"]
report = []
for m, member in enumerate(members):
    lr, seed = grid["learning_rate"][member["config_index"]], member["seed"]
    run = dqnx.train("Dungeon-v0", agent="tabular-q", seed=seed, config={**base, "learning_rate": lr},
                     out=root / f"lr{lr}-s{seed}", tensorboard=False)
    for w, tables in swept.items():
        single = np.asarray(dqnx.load(run.path, weights=w).params["q"][0])
        report.append({"member": m, "weights": w, "equal": bool(np.array_equal(tables[m], single)),
                       "max_abs_diff": float(np.abs(tables[m] - single).max())})
print(json.dumps(report))
"""


def test_tabular_sweep_is_bit_exact_without_fma(tmp_path, guarded_run):
    """Without fused multiply-adds the vmapped and unbatched kernels round alike: equal tables."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX").strip()  # AVX has no FMA
    result = guarded_run([sys.executable, "-c", BIT_EXACT_SCRIPT, str(tmp_path), json.dumps(TABULAR_BASE)], 300,
                         env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report) == 2 * 2 * 2  # members x (best, last)
    assert all(r["equal"] for r in report), report


# --- b, c. DQN on CartPole: first chunk to a tolerance; grouping by static fields -------------


DQN_GRID = {"hidden_sizes": [[32], [64]], "learning_rate": [1e-4, 3e-3]}


@pytest.fixture(scope="module")
def dqn(tmp_path_factory, tiny):
    """Two widths x two learning rates x 2 seeds (two programs), and the 8 runs one by one."""
    root = tmp_path_factory.mktemp("dqn")
    base = tiny(total_steps=1000, eval_every=500)
    result = dqnx.sweep("CartPole-v1", DQN_GRID, seeds=len(SEEDS), config=base, out=root / "sweep")
    singles = {
        (index, seed): dqnx.train("CartPole-v1", seed=seed, config=base.replace(**override),
                                  out=root / f"c{index}-s{seed}", tensorboard=False)
        for index, override in enumerate(result.configs) for seed in SEEDS
    }
    return result, singles


FIRST_CHUNK = ["loss", "q_mean", "td_abs", "train_return", "eval_mean_return"]


def test_dqn_sweep_first_chunk_matches_the_runs_one_by_one(dqn):
    result, singles = dqn
    first: dict[tuple[int, int], np.ndarray] = {}
    for group in group_dirs(result):
        rows = member_rows(group)
        for member, key in enumerate(group_members(group)):
            assert rows[member][0]["env_steps"] == "500" and int(rows[member][0]["seed"]) == key[1]
            first[key] = np.array([float(rows[member][0][c]) for c in FIRST_CHUNK])
    assert sorted(first) == sorted(singles)
    for key, run in singles.items():
        single = read_csv(run.path / "metrics.csv")[0]
        assert single["env_steps"] == "500"
        expected = np.array([float(single[c]) for c in FIRST_CHUNK])
        assert np.isfinite(expected).all(), (key, single)  # updates ran in the first chunk
        np.testing.assert_allclose(first[key], expected, rtol=1e-4, err_msg=f"{key}: {FIRST_CHUNK}")
    # Hyperparameters are not ignored: lr 1e-4 and 3e-3 give far apart first-chunk losses.
    loss = FIRST_CHUNK.index("loss")
    for index, override in enumerate(result.configs):
        if override["learning_rate"] == 1e-4:
            other = result.configs.index({**override, "learning_rate": 3e-3})
            for seed in SEEDS:
                slow, fast = first[(index, seed)][loss], first[(other, seed)][loss]
                assert not np.isclose(slow, fast, rtol=0.1), (override, seed, slow, fast)


def test_static_fields_split_the_grid_into_groups(dqn):
    result, singles = dqn
    single_spec = json.loads((next(iter(singles.values())).path / "config.json").read_text())
    meta = json.loads((result.path / "sweep.json").read_text())
    assert meta["status"] == "finished"
    assert len(meta["groups"]) == 2
    for group in meta["groups"]:
        assert len(group["config_indices"]) == 2 and group["members"] == 2 * len(SEEDS)
        widths = {tuple(result.configs[i]["hidden_sizes"]) for i in group["config_indices"]}
        rates = {result.configs[i]["learning_rate"] for i in group["config_indices"]}
        assert len(widths) == 1 and rates == {1e-4, 3e-3}, group  # one width per program, both rates inside
        spec = json.loads((result.path / group["path"] / "config.json").read_text())
        assert list(spec["config"]["hidden_sizes"]) == list(widths.pop())
        # The env parameters as resolved, recorded as `dqnx train` records them (MinAtar's settings live there).
        assert spec["env_settings"] == single_spec["env_settings"] and "max_steps_in_episode" in spec["env_settings"]


def test_results_csv_has_a_row_per_config_and_seed(dqn):
    result, _ = dqn
    rows = read_csv(result.path / "results.csv")
    columns = ["config", "hidden_sizes", "learning_rate", "seed", *RESULT_COLUMNS[2:]]
    assert list(rows[0]) == columns
    assert [(int(r["config"]), int(r["seed"])) for r in rows] == [(c, s) for c in range(4) for s in SEEDS]
    assert {(r["hidden_sizes"], float(r["learning_rate"])) for r in rows} == {
        (w, lr) for w in ("[32]", "[64]") for lr in (1e-4, 3e-3)}
    for row in rows:
        assert np.isfinite(float(row["eval_mean_return"])) and row["solved"] in ("True", "False")
    curves = read_csv(result.path / "curves.csv")
    assert len(curves) == 4 * len(SEEDS) * 2  # two periodic evaluations per member


def test_curves_png_is_an_image(dqn):
    from PIL import Image

    result, _ = dqn
    with Image.open(result.path / "curves.png") as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(result.path / "curves.png") as image:
        width, height = image.size
        assert width > 100 and height > 100
        assert np.asarray(image.convert("L")).std() > 0  # something is drawn


# --- d. an odd member count on several devices ------------------------------------------------


def test_an_odd_group_on_two_devices_trains_each_member_with_its_own_hyperparameters(tmp_path, jax_devices):
    """3 members on 2 devices run padded to 4 (jax_loop.Compiled); each member's table still
    equals its configuration run alone, and only the 3 members reach the files."""
    import jax

    jax_devices(2)
    rates = [0.05, 0.2, 0.6]
    result = dqnx.sweep("Dungeon-v0", {"learning_rate": rates}, agent="tabular-q", seeds=1, config=TABULAR_BASE,
                        out=tmp_path / "sweep")
    group = tmp_path / "sweep" / "groups" / "g0"
    assert len(jax.devices()) == 2 and json.loads((group / "config.json").read_text())["seeds"] == [0, 0, 0]
    assert [(r["config"], r["seed"]) for r in result.rows] == [(0, 0), (1, 0), (2, 0)]
    members = json.loads((group / "members.json").read_text())["members"]
    assert [m["config_index"] for m in members] == [0, 1, 2]
    tables = np.asarray(dqnx.load(group, weights="last").params["q"])
    assert tables.shape[0] == 3
    for m, member in enumerate(members):
        run = dqnx.train("Dungeon-v0", agent="tabular-q", seed=0,
                         config={**TABULAR_BASE, "learning_rate": rates[member["config_index"]]},
                         out=tmp_path / f"single{m}", tensorboard=False)
        single = np.asarray(dqnx.load(run.path, weights="last").params["q"][0])
        assert result.rows[m]["eval_mean_return"] == run.summary["per_seed"][0]["eval_mean_return"], m
        assert np.abs(tables[m] - single).max() / np.abs(single).max() <= ULPS, m
        # The learning rates matter: a swap of two members' tables would show.
        assert not np.array_equal(tables[m], tables[(m + 1) % len(members)]), m


# --- e, f. the command line ------------------------------------------------------------------


SMALL = ["--steps", "1000", "--seeds", "1", "-q"]
# name -> (arguments after `dqnx sweep CartPole-v1`, substrings of the error message)
BAD_SWEEPS = {
    "no_values": (["--grid", "lr"], ["--grid expects key=v1,v2", "'lr'"]),
    "unknown_field": (["--grid", "nosuchfield=1,2"], ["unknown hyperparameter 'nosuchfield'"]),
    "repeated_value": (["--grid", "lr=1e-3,1e-3"], ["learning_rate repeats a value"]),
    "shared_field": (["--grid", "total_steps=1000,2000"], ["total_steps is shared", "--set total_steps"]),
    "invalid_first_point": (["--grid", "gamma=1.5,0.9"], ["grid point {'gamma': 1.5}", "gamma must lie in [0, 1]"]),
    "invalid_later_point": (["--grid", "gamma=0.9,1.5"], ["grid point {'gamma': 1.5}"]),
    "swept_and_set": (["--grid", "lr=1e-3", "--set", "learning_rate=1e-3"], ["learning_rate is both swept"]),
    "unbalanced": (["--grid", "hidden_sizes=[64,64"], ["unbalanced brackets"]),
    # A later group's learner refuses its settings: caught before the first group trains.
    "later_group_learner": (["--agent", "tabular-q", "--grid", "bins=[1,1,6,12],[2,3]"],
                            ["grid point {'bins': (2, 3)}", "bins has 2 values"]),
}


@pytest.fixture(scope="module")
def bad_sweeps(tmp_path_factory, dqnx_cli_here):
    """Every bad sweep, through the command's entry point in this process."""
    root = tmp_path_factory.mktemp("bad")
    for name in BAD_SWEEPS:
        (root / name).mkdir()
    return {name: (root / name, dqnx_cli_here(["sweep", "CartPole-v1", *args, *SMALL], root / name))
            for name, (args, _) in BAD_SWEEPS.items()}


@pytest.mark.parametrize("name", list(BAD_SWEEPS))
def test_bad_sweep_exits_2_with_one_line_and_writes_nothing(name, bad_sweeps):
    cwd, result = bad_sweeps[name]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for text in BAD_SWEEPS[name][1]:
        assert text in lines[0], (text, lines[0])
    assert list(cwd.iterdir()) == [], "bad input must leave no sweep directory behind"


def test_cli_sweep_writes_results_and_prints_its_directory(tmp_path, dqnx_cli_here):
    dqnx_cli = dqnx_cli_here  # the command's entry point in this process (test_cli.py runs one in a real process)
    args = ["sweep", "CartPole-v1", "--grid", "lr=1e-3,3e-3", "--seeds", "2", "--steps", "1000",
            "--set", "learning_starts=200", "--set", "eval_every=500", "--set", "eval_episodes=4", "--set", "final_eval_episodes=4", "--out", "sw", "-q"]
    result = dqnx_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines() == ["sw"]
    rows = read_csv(tmp_path / "sw" / "results.csv")
    assert [(r["learning_rate"], r["seed"]) for r in rows] == [(lr, s) for lr in ("0.001", "0.003") for s in ("0", "1")]
    meta = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert meta["status"] == "finished" and meta["seeds"] == [0, 1] and meta["grid"] == {"learning_rate": [1e-3, 3e-3]}
