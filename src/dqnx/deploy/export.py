"""Export a trained agent's greedy Q-function to ONNX (through jax2onnx) or StableHLO
(through jax.export), checked against dqnx before the file is kept.

The exported model, in both formats:

    inputs   observation  [batch, *obs_shape] float32 (uint8 for images)
             action_mask  [batch, num_actions] bool, True where legal
                          (ONNX: optional, all legal when left out; StableHLO: required)
    outputs  q_values     [batch, num_actions] float32
             action       [batch] int32, argmax of Q over the legal actions

`batch` is symbolic: any batch size runs. The observation shape and dtype, the action
count, env id, weights and the input contract (one-hot Discrete states, preprocessed
Atari frames) travel with the model: as ONNX metadata_props, and for StableHLO (which
has no metadata) in a JSON sidecar FILE.json.

After writing to a temporary file, the exported model runs (onnxruntime;
jax.export.deserialize) on a batch of observations with and without masks; if any Q
differs from dqnx's own by more than 1e-5 x max(1, max|Q|) or any greedy action
differs, nothing is kept at the destination and ExportCheckFailed is raised.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dqnx.deploy.policy import Policy, policy_of, sample_masks, sample_observations
from dqnx.errors import UsageError
from dqnx.runs.files import _atomic_target  # write to a temporary file, rename only when the block succeeds

FORMATS = ("onnx", "stablehlo")
RELATIVE_TOLERANCE = 1e-5  # of max(1, max|Q|)
CHECK_BATCH = 64


class ExportCheckFailed(RuntimeError):
    """The exported model disagrees with dqnx (exit status 1; nothing was written)."""


def export(run_dir: str | Path, *, format: str, out: str | Path, weights: str = "best", seed_index: int = 0,
           env: Any = None) -> dict[str, Any]:
    """Export the greedy Q-function of `run_dir`'s seed `seed_index` to `out`.

    format: 'onnx' or 'stablehlo' (then `out` + '.json' holds the metadata).
    weights: 'best' or 'last'. Returns the metadata written and the check's figures:
    {'max_abs_error', 'tolerance', 'max_abs_q', 'observations', 'path', 'sidecar', ...}.
    Raises UsageError on bad arguments, ExportCheckFailed when the model disagrees.
    """
    if format not in FORMATS:
        raise UsageError(f"--format must be onnx or stablehlo, got {format!r}")
    out = _check_destination(out)
    if format == "onnx":
        _require_onnx_tools()
    from dqnx.trained import load, load_weights  # the same load as dqnx.load

    # The recorded spaces suffice for the weights: nothing the run names is imported (dqnx.runs.trust).
    agent = load(run_dir, weights=weights, env=env) if env is not None else load_weights(run_dir, weights=weights)
    return export_policy(policy_of(agent, seed_index), format=format, out=out)


def export_policy(policy: Policy, *, format: str, out: str | Path) -> dict[str, Any]:
    """Export `policy` (see policy_of) to `out` and check it; the work of export()."""
    out = _check_destination(out)
    if format == "onnx":
        return _export_onnx(policy, out)
    if format == "stablehlo":
        return _export_stablehlo(policy, out)
    raise UsageError(f"--format must be onnx or stablehlo, got {format!r}")


def _check_destination(out: str | Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the file to write, e.g. {out / 'policy.onnx'}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {out.parent} does not exist; create it first")
    return out


def _input_specs(policy: Policy) -> list[jax.ShapeDtypeStruct]:
    (batch,) = jax.export.symbolic_shape("batch")
    return [jax.ShapeDtypeStruct((batch, *policy.obs_shape), jnp.dtype(policy.obs_dtype)),
            jax.ShapeDtypeStruct((batch, policy.num_actions), jnp.bool_)]


# ONNX ------------------------------------------------------------------------------------


def _require_onnx_tools() -> None:
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise UsageError(f"ONNX export needs {e.name}: pip install 'dqnx[export]'") from None


def _load_converter():
    """jax2onnx's to_onnx, with only the plugins a dqnx network needs registered.

    jax2onnx registers its converters by importing every plugin module it ships (Equinox,
    Flax NNX, examples of whole GPTs), which costs tens of seconds on a small CPU; JAX's
    primitives and Flax Linen's layers cover every dqnx network. If a jax2onnx release
    changes that machinery, the full import runs instead (slower, same result).
    """
    _require_onnx_tools()
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # harmless notes about untyped constant shapes
    from jax2onnx import to_onnx

    try:
        from jax2onnx.plugins import plugin_system

        if not plugin_system._already_imported_plugins:
            root = Path(plugin_system.__file__).parent
            for sub in ("jax", "flax/linen"):
                plugin_system._import_tree(root / sub, "jax2onnx.plugins." + sub.replace("/", "."))
            plugin_system._already_imported_plugins = True
    except (AttributeError, ImportError):
        pass
    return to_onnx


def onnx_model(policy: Policy):
    """The onnx.ModelProto of `policy`'s greedy function, metadata included.

    jax2onnx converts the Q-function (observation -> q_values); the greedy action under
    the optional mask is three ONNX nodes added here (Where, ArgMax, Cast). Written by
    hand because an optional input needs a default value, and a default [1, actions] mask
    traced through the converter would lend its batch of 1 to the shape computations
    that read `batch` from whichever input carries it.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    to_onnx = _load_converter()
    (batch,) = jax.export.symbolic_shape("batch")
    model = to_onnx(policy.q_function, [jax.ShapeDtypeStruct((batch, *policy.obs_shape), jnp.dtype(policy.obs_dtype))],
                    model_name="dqnx_greedy_q", input_names=["observation"], output_names=["q_values"])
    graph = model.graph
    actions = policy.num_actions
    # An input with an initializer of the same name takes that value when it is not fed
    # (ONNX IR >= 4): all actions legal, one row broadcast over the batch.
    graph.input.append(helper.make_tensor_value_info("action_mask", TensorProto.BOOL, ["mask_batch", actions]))
    graph.initializer.append(numpy_helper.from_array(np.ones((1, actions), bool), "action_mask"))
    graph.initializer.append(numpy_helper.from_array(np.array(-np.inf, np.float32), "dqnx_illegal_q"))
    graph.node.extend([
        helper.make_node("Where", ["action_mask", "q_values", "dqnx_illegal_q"], ["dqnx_legal_q"]),
        helper.make_node("ArgMax", ["dqnx_legal_q"], ["dqnx_action_int64"], axis=-1, keepdims=0, select_last_index=0),
        helper.make_node("Cast", ["dqnx_action_int64"], ["action"], to=TensorProto.INT32),
    ])
    graph.output.append(helper.make_tensor_value_info("action", TensorProto.INT32, ["batch"]))
    onnx.helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v) for k, v in policy.metadata.items()})
    model.doc_string = "dqnx greedy Q-function: " + policy.metadata["input_contract"]
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_session(path: str | Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # not the note that the optional mask's default is not folded into constants
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_onnx(policy: Policy, out: Path) -> dict[str, Any]:
    model = onnx_model(policy)
    with _atomic_target(out) as tmp:
        Path(tmp).write_bytes(model.SerializeToString())
        session = onnx_session(tmp)

        def run(obs, mask):
            feeds = {"observation": obs} if mask is None else {"observation": obs, "action_mask": mask}
            return session.run(["q_values", "action"], feeds)

        report = check_exported(policy, run, "onnxruntime")
    return {**policy.metadata, **report, "format": "onnx", "path": str(out), "sidecar": None,
            "bytes": out.stat().st_size}


# StableHLO -------------------------------------------------------------------------------


def _export_stablehlo(policy: Policy, out: Path) -> dict[str, Any]:
    exported = jax.export.export(jax.jit(policy.greedy))(*_input_specs(policy))
    blob = exported.serialize()
    sidecar = out.with_name(out.name + ".json")
    metadata = {**policy.metadata, "format": "stablehlo", "platforms": list(exported.platforms),
                "how_to_run": "jax.export.deserialize(open(FILE, 'rb').read()).call(observation, action_mask); "
                              "action_mask is required here (all True when the environment has no mask)"}
    with _atomic_target(out) as tmp, _atomic_target(sidecar) as tmp_sidecar:
        Path(tmp).write_bytes(blob)
        restored = jax.export.deserialize(bytearray(Path(tmp).read_bytes()))

        def run(obs, mask):
            mask = np.ones((obs.shape[0], policy.num_actions), bool) if mask is None else mask
            return restored.call(obs, mask)

        report = check_exported(policy, run, "jax.export")
        Path(tmp_sidecar).write_text(json.dumps({**metadata, "check": report}, indent=2) + "\n")
    return {**metadata, **report, "path": str(out), "sidecar": str(sidecar), "bytes": out.stat().st_size}


# The check -------------------------------------------------------------------------------


def check_exported(policy: Policy, run, runtime: str, count: int = CHECK_BATCH) -> dict[str, Any]:
    """Compare `run(obs, mask or None) -> (q, action)` with dqnx's Agent.q_values on `count`
    observations (and on one, to exercise the symbolic batch), without and with masks."""
    obs = sample_observations(policy, count)
    masks = sample_masks(count, policy.num_actions)
    reference_q = np.asarray(policy.agent.q_values(obs), np.float64)
    worst, action_mismatches = 0.0, 0
    for batch_obs, batch_mask, ref in ((obs, None, reference_q), (obs, masks, reference_q), (obs[:1], None, reference_q[:1])):
        q, action = (np.asarray(x) for x in run(batch_obs, batch_mask))
        if q.shape != ref.shape:
            raise ExportCheckFailed(f"the exported model ({runtime}) returned Q of shape {q.shape}, dqnx {ref.shape}")
        worst = max(worst, float(np.abs(q.astype(np.float64) - ref).max()))
        legal = np.ones_like(ref, bool) if batch_mask is None else batch_mask
        expected = np.where(legal, ref, -np.inf).argmax(axis=-1)  # greedy_action's rule, in numpy
        action_mismatches += int((action != expected).sum())
    max_abs_q = float(np.abs(reference_q).max())
    tolerance = RELATIVE_TOLERANCE * max(1.0, max_abs_q)
    report = {"runtime": runtime, "observations": count, "max_abs_error": worst, "tolerance": tolerance,
              "max_abs_q": max_abs_q, "action_mismatches": action_mismatches}
    if not worst <= tolerance or action_mismatches:  # `not <=`: a NaN error fails too
        raise ExportCheckFailed(
            f"the exported model disagrees with dqnx ({runtime}, {count} observations): max |dQ| {worst:.3g} "
            f"(tolerance {tolerance:.3g} = {RELATIVE_TOLERANCE:g} x max(1, max|Q| {max_abs_q:.3g})), "
            f"{action_mismatches} greedy action(s) differ; nothing written")
    return report


def describe_check(report: dict[str, Any]) -> str:
    """One line with the check's figure, for the command line."""
    return (f"checked with {report['runtime']} on {report['observations']} observations (with and without masks, "
            f"and a batch of 1): max |Q - Q_dqnx| = {report['max_abs_error']:.3g} <= tolerance {report['tolerance']:.3g} "
            f"(1e-5 x max(1, max|Q| {report['max_abs_q']:.3g})); greedy actions identical")


__all__ = ["FORMATS", "ExportCheckFailed", "export", "export_policy", "onnx_model", "onnx_session", "check_exported",
           "describe_check"]
