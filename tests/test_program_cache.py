"""Programs compiled for one run serve the next run of the same (agent, config, env) in this process
(drivers/jax_loop.PROGRAMS), with the bits a fresh compile gives, and never a run that differs."""

from __future__ import annotations

import csv
import gc
import weakref

import jax
import pytest

import dqnx
from dqnx.agents import make_learner
from dqnx.drivers import jax_loop, make_driver
from dqnx.drivers.jax_loop import PROGRAMS, ProgramCache
from dqnx.envs import make_env


def dungeon_config(tiny, **changes):
    # Two chunks of 150 iterations, each evaluated (8 episodes, as the final evaluation): three programs.
    return tiny(total_steps=300, eval_every=150, learning_starts=50, buffer_size=300, epsilon_decay_steps=150, **changes)


def train(tiny, out, *, env_params=None, seeds=1, **changes):
    return dqnx.train("Dungeon-v0", config=dungeon_config(tiny, **changes), env_params=env_params or {"slip": 0.1},
                      seeds=seeds, out=out, tensorboard=False)


def same_results(a, b, assert_same_weights) -> None:
    """Bit for bit: every metrics row (timings aside), the weights, the final evaluation."""
    def rows(run):
        with open(run.path / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k not in ("steps_per_second", "wall_seconds")} for r in csv.DictReader(f)]

    assert rows(a) == rows(b)
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(a.path / name, b.path / name)
    assert a.summary["per_seed"] == b.summary["per_seed"]


CHANGES = {
    "config field": {"hidden_sizes": (16,)},  # shapes the program
    "env parameter": {"env_params": {"slip": 0.4}},  # baked into it as a constant
    "seed count": {"seeds": 2},  # the seed batch
}


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """Runs of one process and what PROGRAMS counted: a cold run, the same again, runs that differ from it
    in one thing each (the first run's programs still kept), then those again from an empty cache."""
    root, out = tmp_path_factory.mktemp("programs"), {}
    PROGRAMS.clear()
    out["cold"] = train(tiny, root / "cold")
    before = PROGRAMS.compiled, PROGRAMS.reused
    out["warm"] = train(tiny, root / "warm")
    out["warm counts"] = PROGRAMS.compiled - before[0], PROGRAMS.reused - before[1]
    for name, change in CHANGES.items():
        compiled = PROGRAMS.compiled
        out[name] = train(tiny, root / name, **change)
        out[name + " compiled"] = PROGRAMS.compiled - compiled
    PROGRAMS.clear()
    for name, change in CHANGES.items():
        out[name + " cold"] = train(tiny, root / f"{name} cold", **change)
    return out


def test_an_identical_run_reuses_every_program_and_gets_the_bits_of_a_cold_one(runs, assert_same_weights):
    assert runs["warm counts"] == (0, 3)  # nothing traced or compiled again: initial states, chunk, evaluation
    assert runs["warm"].summary["compile_seconds"] < runs["cold"].summary["compile_seconds"]
    same_results(runs["cold"], runs["warm"], assert_same_weights)


@pytest.mark.parametrize("change", CHANGES)
def test_a_run_that_differs_gets_programs_of_its_own_with_the_bits_of_a_cold_one(runs, change, assert_same_weights):
    assert runs[change + " compiled"] == 3  # its own initial states, chunk and evaluation
    same_results(runs[change], runs[change + " cold"], assert_same_weights)


def test_a_learner_not_built_by_make_learner_or_changed_after_is_never_shared(tiny):
    env = make_env("Dungeon-v0")
    config = dungeon_config(tiny)
    learner = make_learner("dqn", config, env)
    assert jax_loop.program_key(jax_loop.make_program(config, env, learner)) is not None
    assert jax_loop.program_key(jax_loop.make_program(config, make_env("Dungeon-v0"), make_learner("dqn", config, env))) \
        == jax_loop.program_key(jax_loop.make_program(config, env, learner))  # equal by value, not identity
    for other in (learner._replace(built_from=None), learner._replace(act=lambda *a: learner.act(*a)),
                  learner._replace(act=jax.jit(learner.act))):
        key = jax_loop.program_key(jax_loop.make_program(config, env, other))
        assert key is None or key != jax_loop.program_key(jax_loop.make_program(config, env, learner))


def test_the_cache_keeps_no_env_or_learner_of_an_earlier_run_alive(tiny):
    env = make_env("Dungeon-v0")
    config = dungeon_config(tiny)
    driver = make_driver(config, env, make_learner("dqn", config, env), [0])
    state = driver.place(driver.init_states([0]))
    driver.evaluate(state.agent.params, jax_loop.eval_keys([0], jax_loop.FINAL_EVAL_STREAM, 0), 2)
    assert len(PROGRAMS) > 0
    gone = weakref.ref(env)
    del env, driver, state
    jax.clear_caches()  # JAX's own caches (traced functions) are not ours to test
    gc.collect()
    assert gone() is None


def test_the_cache_holds_at_most_its_size_and_drops_the_least_recently_used():
    cache, built = ProgramCache(size=2), []

    def build(name):
        built.append(name)
        return name

    for key in ("a", "b", "a", "c", "a", "b"):
        assert cache.get(key, lambda: build(key)) == key
    assert built == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    assert len(cache) == 2 and (cache.compiled, cache.reused) == (4, 2)
    assert cache.get(None, lambda: build("x")) == "x" and len(cache) == 2  # no key: built, not kept
