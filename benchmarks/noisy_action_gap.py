"""Why Noisy DQN never reaches MountainCar-v0's flag: the weight noise against the gaps
between the actions' values.

For a trained noisy run, on states drawn uniformly from the env's observation box:
the gap between the best and second-best Q of the mean network (what the greedy
evaluation maximises), the spread of Q under fresh noise samples (what the agent acts
on while training), and how often a noisy sample picks another action than the mean
network. If the spread is several times the gap, the exploring agent acts nearly at
random (three actions: a uniform policy disagrees 67% of the time).

    dqnx train MountainCar-v0 --set noisy=true --set n_step=1 --steps 60000 --seeds 2 --out runs/mc-noisy
    python benchmarks/noisy_action_gap.py runs/mc-noisy [--weights last] [--samples 64]
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--weights", default="last", choices=["best", "last"])
    parser.add_argument("--samples", type=int, default=64, help="noise samples per state")
    parser.add_argument("--states", type=int, default=256)
    args = parser.parse_args()

    import dqnx
    from dqnx.agents.dqn import make_dqn
    from dqnx.errors import UsageError

    try:
        agent = dqnx.load(args.run_dir, weights=args.weights)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = agent.config
    if agent.algorithm not in ("dqn", "rainbow") or not config.noisy or config.distributional:
        print("needs a DQN run with noisy = true and distributional = false (Q values, not C51 logits)", file=sys.stderr)
        return 2
    # The network the run trained (its apply takes noise=True), built as the agent builds it.
    network = make_dqn(config, agent.env.obs_shape, agent.env.num_actions).network
    low, high = np.asarray(agent.env.obs_low, np.float32), np.asarray(agent.env.obs_high, np.float32)
    rng = np.random.default_rng(0)
    obs = rng.uniform(low, high, (args.states, *low.shape)).astype(np.float32)
    for index, seed in enumerate(agent.seeds):
        params = jax.tree.map(lambda x, i=index: x[i], agent.params)
        mean_q = np.asarray(network.apply(params, obs))
        ordered = np.sort(mean_q, axis=1)
        gap = ordered[:, -1] - ordered[:, -2]
        noisy_q = np.stack([np.asarray(network.apply(params, obs, noise=True, rngs={"noise": jax.random.PRNGKey(k)}))
                            for k in range(args.samples)])
        spread = noisy_q.std(axis=0).mean(axis=1)
        disagree = (noisy_q.argmax(-1) != mean_q.argmax(-1)[None]).mean()
        print(f"seed {seed}: mean Q {mean_q.mean():.1f}; action gap (median over states) {np.median(gap):.3f}; "
              f"std of Q under noise (median) {np.median(spread):.3f}; a noisy sample picks another action than "
              f"the mean network in {disagree:.0%} of (state, sample) pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
