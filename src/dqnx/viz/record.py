"""Recordings of a trained agent playing: GIF or MP4, the episode return drawn on every frame.

Frames come from one small function per environment backend, each returning
`RecordedEpisode`s (RGB frames and the reward after each frame); drawing the text
and encoding are shared:

    jax_env_episodes(agent, episodes, seed)        gymnax classic control (below)
    gymnasium_episodes(env, act, episodes, seed)   any Gymnasium env made with render_mode="rgb_array"

How JAX envs are drawn: gymnax has no fast RGB renderer, so the greedy episodes are
run in JAX (rollout.py) and each observation is handed to Gymnasium's own
classic-control renderer for the same environment, by setting `env.unwrapped.state`
and calling `render()`. The picture is then exactly the one Gymnasium users know,
drawn by code its maintainers keep, instead of a drawing of our own per environment.
For these three environments the observation holds the full state (Acrobot's angles
are recovered from their cosine and sine).

Encoding: GIF with Pillow, MP4 (H.264) with imageio and the ffmpeg binary that
imageio-ffmpeg ships.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dqnx.errors import UsageError
from dqnx.runs.files import atomic_write_bytes
from dqnx.viz import check_count, check_seed

FORMATS = (".gif", ".mp4")


@dataclass(frozen=True)
class RecordedEpisode:
    """frames[0] is the first observation; frames[t + 1] follows the t-th action, which paid rewards[t]."""

    frames: list[np.ndarray]  # (H, W, 3) uint8 each; len(rewards) + 1 of them
    rewards: list[float]

    @property
    def total_return(self) -> float:
        return float(sum(self.rewards))


# --- JAX environments (gymnax classic control) --------------------------------------------

def _acrobot_state(obs: np.ndarray) -> np.ndarray:
    cos1, sin1, cos2, sin2, velocity1, velocity2 = obs
    return np.array([np.arctan2(sin1, cos1), np.arctan2(sin2, cos2), velocity1, velocity2], np.float64)


# env id -> how Gymnasium's renderer state is read from a dqnx observation of that env.
GYMNASIUM_RENDERED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "CartPole-v1": lambda obs: np.asarray(obs, np.float64),  # x, x_dot, theta, theta_dot
    "MountainCar-v0": lambda obs: np.asarray(obs, np.float64),  # position, velocity
    "Acrobot-v1": _acrobot_state,
}


def _quiet_pygame() -> None:
    # No window and no sound card here: pygame's dummy drivers keep SDL from looking for them.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def _gymnasium_renderer(env_id: str) -> Any:
    _quiet_pygame()
    try:
        import gymnasium
    except ImportError:
        raise UsageError("recording needs gymnasium and pygame; pip install gymnasium pygame") from None
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array")
    except gymnasium.error.DependencyNotInstalled as e:
        raise UsageError(f"recording {env_id} needs pygame ({e}); pip install pygame") from None
    env.reset(seed=0)
    return env


def jax_env_episodes(agent: Any, episodes: int, seed: int = 0, seed_index: int = 0) -> list[RecordedEpisode]:
    """Fresh greedy episodes of a trained agent on its JAX env, drawn by Gymnasium's renderer."""
    env_id = agent.env.env_id
    to_state = GYMNASIUM_RENDERED.get(env_id)
    if to_state is None:
        raise UsageError(
            f"dqnx record draws {', '.join(GYMNASIUM_RENDERED)} among the JAX environments; "
            f"{env_id} has no renderer yet"
        )
    from dqnx.viz.rollout import greedy_episodes

    renderer = _gymnasium_renderer(env_id)
    try:
        out = []
        for episode in greedy_episodes(agent, episodes, seed=seed, seed_index=seed_index):
            frames = []
            for obs in episode.observations:
                renderer.unwrapped.state = to_state(obs)
                frames.append(np.asarray(renderer.render(), np.uint8))
            out.append(RecordedEpisode(frames=frames, rewards=[float(r) for r in episode.rewards]))
        return out
    finally:
        renderer.close()


# --- Gymnasium environments ------------------------------------------------------------------

def gymnasium_episodes(env: Any, act: Callable[..., int], episodes: int, seed: int = 0,
                       masked: bool = False) -> list[RecordedEpisode]:
    """Episodes of `act` (observation -> action) on a Gymnasium env made with render_mode="rgb_array";
    episode i resets with seed + i (played by dqnx.drivers.episodes.play_host). masked: act(obs,
    mask) also gets each observation's legal actions (info["action_mask"])."""
    from dqnx.drivers.episodes import play_host

    frames: list[np.ndarray] = []  # every episode's frames, one after another: a reset's, then each step's
    played = play_host(env, lambda *observed: (int(act(*observed)), None), [seed + index for index in range(episodes)],
                       on_step=lambda env: frames.append(np.asarray(env.render(), np.uint8)), masked=masked)
    out, start = [], 0
    for episode in played:
        count = len(episode.actions) + 1
        out.append(RecordedEpisode(frames=frames[start:start + count], rewards=list(episode.rewards)))
        start += count
    return out


# --- drawing and encoding ----------------------------------------------------------------------

def annotate(episodes: list[RecordedEpisode], title: str, scale: float = 1.0) -> list[np.ndarray]:
    """Every frame, scaled, with a banner: title, episode k/n, step, return so far."""
    from PIL import Image, ImageDraw, ImageFont

    frames = []
    for k, episode in enumerate(episodes, start=1):
        running = 0.0
        for t, frame in enumerate(episode.frames):
            if t > 0:
                running += episode.rewards[t - 1]
            image = Image.fromarray(frame)
            if scale != 1.0:
                size = (max(2, round(image.width * scale)), max(2, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.LANCZOS)
            # H.264 in yuv420p needs even sides.
            image = image.crop((0, 0, image.width - image.width % 2, image.height - image.height % 2))
            draw = ImageDraw.Draw(image)
            font = ImageFont.load_default(size=max(10, round(image.height / 22)))
            text = f"{title}  episode {k}/{len(episodes)}  step {t}  return {running:g}"
            box = draw.textbbox((6, 4), text, font=font)
            draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(255, 255, 255), outline=(90, 90, 90))
            draw.text((6, 4), text, fill=(0, 0, 0), font=font)
            frames.append(np.asarray(image))
    return frames


def encode(frames: list[np.ndarray], suffix: str, fps: int) -> bytes:
    """The frames as a GIF or MP4 file's bytes."""
    if suffix == ".gif":
        # Pillow directly rather than through imageio: imageio hands Pillow RGB frames and
        # Pillow then builds an adaptive palette per frame, about 3x slower than quantizing
        # each frame with the fast octree method first (these scenes have few colours).
        from PIL import Image

        images = [Image.fromarray(f).quantize(colors=128, method=Image.Quantize.FASTOCTREE) for f in frames]
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return buffer.getvalue()
    import imageio.v3 as iio

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # JAX warns on any fork; imageio-ffmpeg's subprocess execs ffmpeg at once, which is safe.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        # The ffmpeg plugin writes to a path; the bytes then go into place atomically.
        path = Path(tmp) / "recording.mp4"
        iio.imwrite(path, np.stack(frames), plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1,
                    ffmpeg_log_level="error")
        return path.read_bytes()


def check_out(out: str | Path) -> tuple[Path, str]:
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out {out} must end in .gif or .mp4 (the recording's format)")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name a .gif or .mp4 file")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist; create it or pick another path")
    return out, suffix


def record(run_dir: str | Path, out: str | Path, episodes: int = 1, seed: int = 0, weights: str = "best",
           fps: int = 50, scale: float = 1.0, trust_env_code: bool = False) -> dict[str, Any]:
    """Record `episodes` greedy episodes of a run's agent (its first seed's weights) into `out` (.gif or .mp4).

    Returns {'path', 'frames', 'width', 'height', 'returns', 'lengths'}.
    """
    check_count("episodes", episodes)
    check_seed(seed)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 100:
        raise UsageError(f"--fps must be an integer from 1 to 100, got {fps!r}")
    out, suffix = check_out(out)
    from dqnx import trained

    agent = trained.load(run_dir, weights=weights, trust_env_code=trust_env_code)
    recorded = agent_episodes(agent, episodes, seed)
    frames = annotate(recorded, agent.env_id, scale)
    atomic_write_bytes(out, encode(frames, suffix, fps))
    return {
        "path": out,
        "frames": len(frames),
        "height": int(frames[0].shape[0]),
        "width": int(frames[0].shape[1]),
        "returns": [e.total_return for e in recorded],
        "lengths": [len(e.rewards) for e in recorded],
    }


def agent_episodes(agent: Any, episodes: int, seed: int) -> list[RecordedEpisode]:
    """The frame source for the agent's environment backend."""
    from dqnx.envs import backend_of

    if backend_of(agent.env).loop == "host":
        env = agent.env.make(train=False, render_mode="rgb_array")
        epsilon = agent.config.eval_epsilon
        rng = np.random.default_rng(seed)

        def act(obs: Any, mask: np.ndarray | None = None) -> int:
            # The run's evaluation policy: with eval_epsilon > 0 (Atari), an agent that never
            # presses FIRE cannot stall the recording for a whole 27k-step game. With masks
            # (a run trained with them), random and greedy actions are legal ones.
            if epsilon > 0 and rng.random() < epsilon:
                if mask is None:
                    return int(rng.integers(agent.env.num_actions))
                legal = np.flatnonzero(mask)
                return int(legal[rng.integers(len(legal))])
            return int(agent.act(obs, mask))

        try:
            return gymnasium_episodes(env, act, episodes, seed, masked=agent.action_masks)
        finally:
            env.close()
    return jax_env_episodes(agent, episodes, seed)
