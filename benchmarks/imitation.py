"""Imitation study on CartPole-v1: how network size and data size shape a classifier policy.

1. Trains an expert as `dqnx train CartPole-v1` does (the preset's full 50k steps) (or takes --expert RUN_DIR): the DQN
   preset, keeping the weights of the best periodic evaluation. (`--until-solved` stops at the first
   evaluation over the threshold, whose weights need not be the best; --expert-steps 0 uses it.)
2. Rolls its greedy policy out into datasets with `dqnx dataset`: a small training set
   (--small samples, seed 0), a held-out test set (--test-samples, seed 1) and a large
   training set (--large samples, seed 2); different seeds, so no episode is shared.
3. Trains linear, 1x256, 2x256 and 3x256 classifier policies (`dqnx imitate`, its
   defaults otherwise: 150 epochs, batch 64, Adam 1e-3) on each training set and
   reports train and test accuracy, and the greedy return over 100 fresh episodes
   of the last epoch's weights (the weights the accuracies describe) and of the
   best-evaluated weights (what `dqnx eval` uses).
4. Writes the table to docs/imitation.md.

    python benchmarks/imitation.py [--expert-steps 50000] [--small 1000] [--large 50000] [--test-samples 10000]
                                   [--out docs/imitation.md]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = [("linear", ()), ("1 hidden layer of 256", (256,)), ("2 hidden layers of 256", (256, 256)),
          ("3 hidden layers of 256", (256, 256, 256))]


def git_version() -> str:
    try:
        root = Path(__file__).resolve().parent
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000, help="rows of the small training set")
    parser.add_argument("--large", type=int, default=50_000, help="rows of the large training set")
    parser.add_argument("--test-samples", type=int, default=10_000, help="rows of the held-out test set")
    parser.add_argument("--one-layer-sizes", default="200000",
                        help="further training-set sizes (comma-separated) for the 1x256 policy alone; '' for none")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--expert", type=Path, default=None, help="an existing expert run directory (default: train one)")
    parser.add_argument("--expert-steps", type=int, default=50_000, help="env steps of the expert's training; 0 = until solved")
    parser.add_argument("--workdir", type=Path, default=None, help="where datasets and runs go (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "imitation.md")
    args = parser.parse_args()

    import dqnx
    from dqnx.imitation.dataset import make_dataset
    from dqnx.imitation.train import imitate

    started = time.perf_counter()
    version_start = git_version()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dqnx-imitation-"))
    workdir.mkdir(parents=True, exist_ok=True)

    if args.expert is None:
        expert_command = (f"dqnx train CartPole-v1 --steps {args.expert_steps}" if args.expert_steps > 0
                          else "dqnx train CartPole-v1 --until-solved")
        t = time.perf_counter()
        if args.expert_steps > 0:
            expert_run = dqnx.train("CartPole-v1", steps=args.expert_steps, out=workdir / "expert")
        else:
            expert_run = dqnx.train("CartPole-v1", stop_when_solved=True, out=workdir / "expert")
        expert_dir, expert_summary = expert_run.path, expert_run.summary
        expert_seconds = time.perf_counter() - t
    else:
        import json

        expert_dir, expert_seconds, expert_command = args.expert, None, f"the run in {args.expert}"
        expert_summary = json.loads((args.expert / "summary.json").read_text())
    print(f"expert {expert_dir}: final greedy return {expert_summary['eval_mean_return']:.1f} over "
          f"{expert_summary['eval_episodes']} episodes", file=sys.stderr)

    extra_sizes = [int(v) for v in args.one_layer_sizes.split(",") if v.strip()]
    sets = {"small": (args.small, 0), "test": (args.test_samples, 1), "large": (args.large, 2)}
    for i, size in enumerate(extra_sizes):
        sets[f"extra{i}"] = (size, 3 + i)
    files, metas = {}, {}
    for name, (samples, seed) in sets.items():
        files[name] = workdir / f"{name}-{samples}-seed{seed}.csv"
        metas[name] = make_dataset(expert_dir, samples, files[name], seed=seed)
        print(f"dataset {files[name].name}: {metas[name]['episodes']} episodes", file=sys.stderr)

    cases = [(set_name, label, hidden) for set_name in ("small", "large") for label, hidden in MODELS]
    cases += [(f"extra{i}", MODELS[1][0], MODELS[1][1]) for i in range(len(extra_sizes))]
    rows = []
    for set_name, label, hidden in cases:
        t = time.perf_counter()
        run = imitate(files[set_name], files["test"], config={"hidden_sizes": hidden, "epochs": args.epochs},
                      out=workdir / f"imitate-{sets[set_name][0]}-{'x'.join(map(str, hidden)) or 'linear'}")
        s = run.summary
        rows.append({"set": set_name, "samples": sets[set_name][0], "model": label, "seconds": time.perf_counter() - t, **s})
        print(f"{set_name} {label}: test acc {s['test_accuracy']:.4f}, last return {s['last_eval_mean_return']:.1f}, "
              f"best return {s['eval_mean_return']:.1f} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)

    total = time.perf_counter() - started
    lines = [
        "# Imitation learning on CartPole-v1: network size and data size",
        "",
        "A trained DQN expert's greedy (state, action) pairs, learned back by classifier policies",
        "(cross-entropy, Adam 1e-3, batch 64, "
        f"{args.epochs} epochs, seed 0). Accuracies are those of the last epoch's weights; \"return (last)\" is the",
        "greedy mean return ± std of the same weights over 100 fresh episodes; \"return (best)\" is that of the",
        "weights with the best periodic evaluation (every 10 epochs, 100 episodes), the ones `dqnx eval` uses,",
        "on 100 other fresh episodes. Test accuracy is measured on the held-out test set only "
        f"({args.test_samples:,} rows, dataset seed 1, episodes disjoint from the training sets').",
        "",
        "| training rows | policy | train accuracy | test accuracy | test loss | return (last) | return (best, epoch) | seconds |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['samples']:,} | {r['model']} | {r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['test_loss']:.3f} | "
            f"{r['last_eval_mean_return']:.1f} ± {r['last_eval_std_return']:.1f} | "
            f"{r['eval_mean_return']:.1f} ± {r['eval_std_return']:.1f} ({r['best_epoch']}) | {r['seconds']:.1f} |"
        )
    reached = [r for r in rows if r["test_accuracy"] >= 0.95]
    perfect = [r for r in rows if r["model"] == MODELS[1][0] and r["eval_mean_return"] >= 500.0]
    lines += [
        "",
        "Read from the table above (computed by the script):",
        "- test accuracy >= 95%: " + (", ".join(f"{r['model']} on {r['samples']:,} rows ({r['test_accuracy']:.3f})" for r in reached)
                                      or "not reached in this run") + ";",
        "- a one-hidden-layer policy whose `dqnx eval` weights (best) score a mean of 500 over 100 fresh episodes: "
        + (", ".join(f"{r['samples']:,} rows (epoch {r['best_epoch']}, test accuracy of the last epoch {r['test_accuracy']:.3f})"
                     for r in perfect) or "none in this run") + ";",
        "- overfitting, train minus test accuracy: "
        + ", ".join(f"{r['model']} on {r['samples']:,} rows {r['train_accuracy'] - r['test_accuracy']:+.3f}" for r in rows) + ".",
    ]
    lines += ["", "Datasets (one row per env step of the expert's greedy policy, whole episodes in order):"]
    for name in sets:
        samples, seed = sets[name]
        episodes = metas[name]["episodes"]
        role = "test set" if name == "test" else "training set"
        lines.append(f"- {role}: {samples:,} rows from {episodes} episode{'s' if episodes != 1 else ''} (`--seed {seed}`);")
    lines[-1] = lines[-1][:-1] + "."
    lines += [
        "",
        f"Expert: `{expert_command}` (DQN preset, seed 0): solved at env step "
        f"{expert_summary.get('steps_to_solve')}; its best weights (env step {expert_summary['per_seed'][0]['best_step']}) "
        f"score a greedy return over {expert_summary['eval_episodes']} "
        f"fresh episodes: {expert_summary['eval_mean_return']:.1f} ± {expert_summary['eval_std_return']:.1f}"
        + (f"; trained in {expert_seconds:.1f} s." if expert_seconds is not None else "."),
        "",
        "Reproduce:",
        "",
        "    python benchmarks/imitation.py"
        + (f" --expert-steps {args.expert_steps}" if args.expert_steps != 50_000 and args.expert is None else "")
        + (f" --small {args.small}" if args.small != 1000 else "")
        + (f" --large {args.large}" if args.large != 50_000 else "")
        + (f" --test-samples {args.test_samples}" if args.test_samples != 10_000 else "")
        + (f" --epochs {args.epochs}" if args.epochs != 150 else "")
        + (f" --one-layer-sizes '{args.one_layer_sizes}'" if args.one_layer_sizes != "200000" else ""),
        "",
        f"or by hand: `{expert_command if args.expert is None else 'dqnx train CartPole-v1'} --out expert`, then",
        f"`dqnx dataset expert --samples {args.small} --out train.csv --seed 0`,",
        f"`dqnx dataset expert --samples {args.test_samples} --out test.csv --seed 1`,",
        "`dqnx imitate train.csv --test test.csv --hidden 256` and `dqnx eval RUN_DIR`"
        + (f"; the larger sets likewise, e.g. `dqnx dataset expert --samples {extra_sizes[-1]} --out big.csv "
           f"--seed {sets[f'extra{len(extra_sizes) - 1}'][1]}`." if extra_sizes else "."),
        "",
        f"Measured on {platform.machine()} Linux, Python {platform.python_version()}, CPU only, code {version_start}"
        + (f" (at the end: {git_version()})" if git_version() != version_start else "")
        + f"; the whole study took {total:.0f} s. The machine (2 cores) was shared with other jobs while this ran, so the",
        "seconds are noisy and only indicative.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
