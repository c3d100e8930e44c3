"""Deploying a trained agent: its greedy Q-function exported to ONNX or StableHLO
(export.py), or served over HTTP (serve.py).

Both sit above runs/ and the Python API: they read a run directory through the same
`load` as `dqnx.load`, and nothing on the training path imports them. policy.py holds
what they share: one seed's Q-function, the shape and dtype of its input and the
written-down input contract (`Policy`).

    import dqnx
    dqnx.export("runs/CartPole-v1-...", format="onnx", out="cartpole.onnx")
    dqnx.serve("runs/CartPole-v1-...", port=8000)     # POST /act, GET /, GET /health

They need the optional extras: `pip install "dqnx[export]"` (jax2onnx, onnx,
onnxruntime) and `pip install "dqnx[serve]"` (starlette, uvicorn).
"""
