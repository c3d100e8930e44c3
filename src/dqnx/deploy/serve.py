"""Serve a trained agent's greedy policy over HTTP (Starlette on uvicorn).

    POST /act        {"observation": OBS, "action_mask": [true, false, ...]?}
                  -> {"action": 1, "q_values": [..]}
    POST /act/batch  {"observations": [OBS, ...], "action_masks": [[...], ...]?}
                  -> {"actions": [..], "q_values": [[..], ..]}
    GET  /           the model: env id, observation shape and dtype, actions, input contract, limits
    GET  /health     {"status": "ok"}

Answers are dqnx.load(RUN).q_values / act of the chosen seed: the learner's same jitted
q_values on the same weights (sliced out of the seed axis once, not per request). A Discrete observation may be sent as its state index or
one-hot. Bad requests (malformed JSON, wrong shapes, non-finite numbers, pixels outside
0-255, an all-illegal mask, bodies over the size limit) get a 4xx with a one-line
{"error": ...}; the service keeps serving. Requests are answered on a thread pool; the
jitted Q-function is safe to call from several threads, and batch sizes are padded to
powers of two so that at most log2(max batch) programs are ever compiled.

Recurrent agents do not exist yet; when they land, /act will need a session id to keep
their hidden state between requests (GET / says whether the model needs one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dqnx.deploy.policy import Policy, policy_of
from dqnx.errors import UsageError

MAX_BODY_BYTES = 1_000_000  # default request size limit; an 84x84x4 Atari observation is ~100 kB of JSON
MAX_BATCH = 256  # observations per /act/batch request


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _require_server_tools() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UsageError(f"dqnx serve needs {e.name}: pip install 'dqnx[serve]'") from None


class PolicyService:
    """Validates requests and answers them with the policy's Agent (no HTTP here)."""

    def __init__(self, policy: Policy, max_batch: int = MAX_BATCH):
        self.policy = policy
        self.max_batch = max_batch
        self.description = {
            **policy.metadata,
            "endpoints": {
                "POST /act": '{"observation": OBS, "action_mask"?: [bool x num_actions]} -> {"action", "q_values"}',
                "POST /act/batch": '{"observations": [OBS, ...], "action_masks"?: [[bool, ...], ...]} -> {"actions", "q_values"}',
                "GET /health": '{"status": "ok"}',
            },
            "observation_as_state_index": policy.num_states is not None,
            "max_batch": max_batch,
            "session": "not needed: the agent is feed-forward (a recurrent agent would need a session id per episode)",
        }

    def act(self, body: Any) -> dict[str, Any]:
        obs = self._observations(_field(body, "observation"), batch=False)
        mask = self._masks(body.get("action_mask"), 1, batch=False)
        q, action = self._answer(obs, mask)
        return {"action": int(action[0]), "q_values": q[0].tolist()}

    def act_batch(self, body: Any) -> dict[str, Any]:
        obs = self._observations(_field(body, "observations"), batch=True)
        mask = self._masks(body.get("action_masks"), obs.shape[0], batch=True)
        q, action = self._answer(obs, mask)
        return {"actions": action.tolist(), "q_values": q.tolist()}

    def _answer(self, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = obs.shape[0]
        padded = 1 << math.ceil(math.log2(count))  # a few batch shapes, so a few compilations
        if padded > count:
            obs = np.concatenate([obs, np.repeat(obs[:1], padded - count, axis=0)])
        q = self.policy.q_values(obs)[:count]
        action = np.where(mask, q, -np.inf).argmax(axis=-1)
        return q, action

    def _observations(self, value: Any, batch: bool) -> np.ndarray:
        policy = self.policy
        array = _numeric_array(value, "observations" if batch else "observation")
        shape = tuple(policy.obs_shape)
        if batch:
            if array.ndim == 0 or array.shape[0] == 0:
                raise BadRequest("observations must be a non-empty list of observations")
            if array.shape[0] > self.max_batch:
                raise BadRequest(f"at most {self.max_batch} observations per request, got {array.shape[0]}", 413)
        else:
            array = array[None]
        if policy.num_states is not None and array.shape[1:] == ():  # state indices
            if np.any(array != np.round(array)) or np.any(array < 0) or np.any(array >= policy.num_states):
                raise BadRequest(f"a state index must be an integer 0..{policy.num_states - 1}")
            return np.eye(policy.num_states, dtype=np.float32)[array.astype(np.int64)]
        if array.shape[1:] != shape:
            what = "each observation" if batch else "observation"
            hint = f" or a state index 0..{policy.num_states - 1}" if policy.num_states is not None else ""
            raise BadRequest(f"{what} must have shape {list(shape)}{hint}, got {list(array.shape[1:])}")
        if policy.obs_dtype == "uint8":
            if np.any(array != np.round(array)) or np.any(array < 0) or np.any(array > 255):
                raise BadRequest("pixels must be integers 0..255")
            return array.astype(np.uint8)
        return array.astype(np.float32)

    def _masks(self, value: Any, count: int, batch: bool) -> np.ndarray:
        actions = self.policy.num_actions
        name = "action_masks" if batch else "action_mask"
        if value is None:
            return np.ones((count, actions), bool)
        if not _is_bool_nest(value):
            raise BadRequest(f"{name} must hold true/false values, one per action ({actions})")
        mask = np.asarray(value, dtype=bool)
        expected = (count, actions) if batch else (actions,)
        if mask.shape != expected:
            raise BadRequest(f"{name} must have shape {list(expected)}, got {list(mask.shape)}")
        mask = mask.reshape(count, actions)
        if not mask.any(axis=-1).all():
            raise BadRequest(f"{name} allows no action; at least one must be true")
        return mask


def _field(body: Any, name: str) -> Any:
    if not isinstance(body, dict):
        raise BadRequest(f'the body must be a JSON object with "{name}"', 400)
    if name not in body:
        raise BadRequest(f'missing "{name}"')
    return body[name]


def _numeric_array(value: Any, name: str) -> np.ndarray:
    """A nested list of finite numbers as float64, or BadRequest (ragged, strings, booleans, null, NaN, inf)."""
    if isinstance(value, bool) or not _is_number_nest(value):
        raise BadRequest(f"{name} must be numbers (nested lists of them), not strings, booleans or null")
    try:
        array = np.asarray(value, dtype=np.float64)
    except ValueError:
        raise BadRequest(f"{name} is ragged: every list at one depth must have the same length") from None
    if not np.all(np.isfinite(array)):
        raise BadRequest(f"{name} contains a non-finite number (NaN or infinity)")
    return array


def _is_number_nest(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_number_nest(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_bool_nest(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_bool_nest(v) for v in value)
    return isinstance(value, bool) or value in (0, 1)


def _reject_constant(token: str) -> float:
    raise BadRequest(f"malformed JSON: {token} is not a JSON number (send finite numbers)", 400)


def make_app(policy: Policy, max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH):
    """The Starlette application serving `policy`."""
    _require_server_tools()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    service = PolicyService(policy, max_batch=max_batch)

    async def read_json(request: Request) -> Any:
        # Starlette has no request-size limit of its own: count the bytes as they arrive and
        # stop at the limit, so an oversized body is never held in memory whole.
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise BadRequest(f"the body is {declared} bytes; the limit is {max_body_bytes}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise BadRequest(f"the body is over the limit of {max_body_bytes} bytes", 413)
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and bad UTF-8 are ValueErrors
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BadRequest(f"malformed JSON: {message}", 400) from None

    def endpoint(method):
        async def handle(request: Request) -> JSONResponse:
            try:
                body = await read_json(request)
                answer = await run_in_threadpool(method, body)
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            return JSONResponse(answer)
        return handle

    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(service.description)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [Route("/", describe, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/act", endpoint(service.act), methods=["POST"]),
              Route("/act/batch", endpoint(service.act_batch), methods=["POST"])]
    app = Starlette(routes=routes)
    app.state.service = service
    return app


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, weights: str = "best", seed_index: int = 0,
          max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH, env: Any = None) -> None:
    """Serve `run_dir`'s greedy policy on http://host:port until interrupted (see the module docstring)."""
    _require_server_tools()
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {port!r}")
    for name, value in (("--max-body-bytes", max_body_bytes), ("--max-batch", max_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    import uvicorn

    from dqnx.trained import load, load_weights  # the same load as dqnx.load

    # The recorded spaces suffice for the weights: nothing the run names is imported (dqnx.runs.trust).
    agent = load(run_dir, weights=weights, env=env) if env is not None else load_weights(run_dir, weights=weights)
    policy = policy_of(agent, seed_index)
    app = make_app(policy, max_body_bytes=max_body_bytes, max_batch=max_batch)
    warm_up(app.state.service, max_batch)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def warm_up(service: PolicyService, max_batch: int) -> None:
    """Compile the Q-function for every padded batch size before the first request waits for it."""
    from dqnx.deploy.policy import sample_observations

    size = 1
    while True:
        service.policy.q_values(sample_observations(service.policy, size))
        if size >= max_batch:
            break
        size *= 2
