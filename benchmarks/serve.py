#!/usr/bin/env python
"""Serving and exported-model speed on this CPU: `dqnx serve` under load, and ONNX
Runtime against dqnx's own jitted q_values per observation.

1. The service: `dqnx serve RUN` in a subprocess on 127.0.0.1 (warmed up before it
   listens), then `--clients` client threads (httpx, one connection each) send
   requests back to back for `--seconds` seconds:
   - single: POST /act with one observation;
   - batched: POST /act/batch with `--batch` observations.
   Reported: latency per request p50 and p99 (ms), requests/s, observations/s, errors.
   Clients and server share the machine's cores, so these are figures of the whole
   round trip on one box, not of the server alone.
2. Per observation, single-threaded calls in this process, median of `--repeats`:
   onnxruntime InferenceSession.run on the exported model vs dqnx.load(RUN).q_values
   (the Python API: it slices the seed's weights out of every array on each call, then
   the jitted Q-function) and the service's call (the same jitted function on weights
   sliced once, dqnx.deploy.policy.Policy.q_values); for one observation and a batch.

Without a RUN it trains a small CartPole-v1 run first (a few seconds). Needs the
export and serve extras:

    python benchmarks/serve.py [RUN] [--seconds 10] [--clients 20] [--batch 32] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load_phase(port: int, body: dict, path: str, clients: int, seconds: float, observations: int) -> dict:
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            start_barrier.wait()
            stop = time.perf_counter() + seconds
            while (now := time.perf_counter()) < stop:
                response = http.post(path, json=body)
                latencies[index].append(time.perf_counter() - now)
                errors[index] += response.status_code != 200

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    every = [x for per_client in latencies for x in per_client]
    return {"endpoint": path, "clients": clients, "seconds": round(elapsed, 2), "requests": len(every),
            "errors": sum(errors), "requests_per_s": round(len(every) / elapsed, 1),
            "observations_per_s": round(len(every) * observations / elapsed, 1),
            "latency_p50_ms": round(percentile(every, 50) * 1e3, 2), "latency_p99_ms": round(percentile(every, 99) * 1e3, 2)}


def serve_phases(run: Path, args: argparse.Namespace, obs: np.ndarray) -> list[dict]:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([sys.executable, "-m", "dqnx.cli", "serve", str(run), "--port", str(port),
                               "--max-batch", str(max(args.batch, 1))], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read() if server.poll() is not None else 'timeout'}")
            time.sleep(0.2)
        single = load_phase(port, {"observation": obs[0].tolist()}, "/act", args.clients, args.seconds, 1)
        batched = load_phase(port, {"observations": obs[: args.batch].tolist()}, "/act/batch", args.clients,
                             args.seconds, args.batch)
        return [single, batched]
    finally:
        server.terminate()
        server.wait(timeout=30)


def per_observation(run: Path, args: argparse.Namespace, obs: np.ndarray) -> dict:
    import dqnx
    from dqnx.deploy.export import onnx_session
    from dqnx.deploy.policy import policy_of

    agent = dqnx.load(run)
    policy = policy_of(agent)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "policy.onnx"
        dqnx.export(run, format="onnx", out=model)
        session = onnx_session(model)
    result = {}
    for label, batch in (("1 observation", obs[:1]), (f"batch of {args.batch}", obs[: args.batch])):
        calls = {
            "onnxruntime": lambda b=batch: session.run(None, {"observation": b}),
            "dqnx.load(RUN).q_values": lambda b=batch: agent.q_values(b),
            "the service's jitted call": lambda b=batch: policy.q_values(b),
        }
        row = {}
        for name, call in calls.items():
            for _ in range(20):
                call()  # compile, warm caches
            times = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                call()
                times.append(time.perf_counter() - began)
            row[name] = {"median_us_per_call": round(statistics.median(times) * 1e6, 1),
                         "median_us_per_observation": round(statistics.median(times) * 1e6 / len(batch), 2)}
        result[label] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="A run directory (default: train a small CartPole-v1 run)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    import dqnx

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = dqnx.train("CartPole-v1", steps=5000, out=Path(tmp) / "cartpole", tensorboard=False).path
        obs = np.random.default_rng(0).uniform(-0.2, 0.2, (max(args.batch, 1), *dqnx.load(run).env.obs_shape))
        obs = obs.astype(np.float32)
        report = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"load average {os.getloadavg()[0]:.1f} at start",
            "run": str(args.run) if args.run else "a 5k-step CartPole-v1 run (MLP 120-84)",
            "service": serve_phases(run, args, obs),
            "per_observation": per_observation(run, args, obs),
        }
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
