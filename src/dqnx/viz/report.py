"""One self-contained HTML page about a run: summary, evaluation, plots, recording, config.

Images are embedded as data: URIs and the style sheet is inline, so the file opens
offline in any browser and can be mailed or attached as it is.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from dqnx.errors import UsageError
from dqnx.runs.files import atomic_write_bytes, read_json
from dqnx.runs.run_dir import CONFIG
from dqnx.viz import check_count, check_seed

REPORT_FILE = "report.html"

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; } .plots figure { margin: 0; flex: 1 1 460px; max-width: 540px; }
figure { margin: 0; }
figcaption { color: #555; font-size: 0.85rem; max-width: 640px; }
img { max-width: 100%; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0c040; padding: 0.4rem 0.8rem; }
.cols { display: flex; flex-wrap: wrap; gap: 2rem; }
.top { display: grid; grid-template-columns: auto auto; justify-content: start; gap: 2.5rem; }
@media (max-width: 900px) { .top { grid-template-columns: auto; } }
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _grid(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html.escape(_fmt(v))}</td>' for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


CAPTIONS = {
    "returns.png": "Return vs env steps. Solid: greedy evaluation; dashed: training (exploring) episodes; "
                   "the band spans the seeds.",
    "loss.png": "Loss vs gradient updates. A loss that settles while the return climbs is the usual sign of learning; "
                "DQN's loss need not fall to zero, its targets move.",
    "q_vs_return.png": "Predicted Q(s, a) vs the discounted return observed afterwards, on fresh greedy episodes. "
                       "Points above the line are overestimates. Crosses: steps whose return a time limit cut short "
                       "(they sit below the line by construction).",
}


def build_report(run_dir: str | Path, episodes: int = 5, record_episodes: int = 1, seed: int = 0,
                 trust_env_code: bool = False) -> str:
    """The HTML text of the report of `run_dir`."""
    from dqnx.viz import plots

    run = plots.read_run(run_dir)
    raw_config = read_json(run.path / CONFIG, "run config")
    plots.add_episodes(run, episodes, seed, trust_env_code)
    images = {
        "returns.png": plots.returns_png([run]),
        "loss.png": plots.loss_png([run]),
        "q_vs_return.png": plots.q_vs_return_png([run]),
    }

    recording_html = _recording_html(run.path, record_episodes, seed, trust_env_code)

    summary = run.summary
    parts = [
        f"<h1>{html.escape(run.env_id)} &middot; {html.escape(run.agent)}</h1>",
        f'<p class="sub">run {html.escape(str(run.path.resolve()))} &middot; report written '
        f'{html.escape(time.strftime("%Y-%m-%d %H:%M:%S %Z"))}</p>',
        '<div class="top"><div>',
        "<h2>Summary</h2>",
    ]
    if summary is None:
        parts.append('<p class="note">This run has no summary.json: it has not finished (or was interrupted); '
                     "the plots show its progress so far.</p>")
    else:
        parts.append(_summary_table(summary, run.agent, raw_config))
    parts.append("</div><div><h2>The agent playing</h2>" + recording_html + "</div></div>")
    if summary is not None:
        parts.append("<h2>Evaluation per seed</h2>")
        parts.append(_grid(
            ["seed", "final eval mean", "final eval std", "steps to solve", "best periodic eval", "at env step", "solved"],
            [[s.get("seed"), s.get("eval_mean_return"), s.get("eval_std_return"), s.get("steps_to_solve"),
              s.get("best_periodic_eval_return"), s.get("best_step"), s.get("solved")]
             for s in summary.get("per_seed", [])],
        ))
    parts.append("<h2>Learning curves and Q-values</h2><div class=\"plots\">")
    for name, data in images.items():
        parts.append(f'<figure><img class="plot" alt="{name}" src="{_data_uri(data, "image/png")}">'
                     f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>")
    parts.append("</div>")
    config = raw_config.get("config", {})
    parts.append("<h2>Configuration</h2><div class=\"cols\">")
    parts.append("<div><h3>hyperparameters</h3>" + _table(sorted(config.items())) + "</div>")
    side = _table(sorted((raw_config.get("env_params") or {}).items())) if raw_config.get("env_params") else "<p>defaults</p>"
    parts.append("<div><h3>environment parameters</h3>" + side)
    parts.append("<h3>versions</h3>" + _table(sorted((raw_config.get("versions") or {}).items())) + "</div></div>")
    parts.append("<details><summary>config.json</summary><pre>" + html.escape(json.dumps(raw_config, indent=2))
                 + "</pre></details>")
    title = html.escape(f"dqnx report: {run.env_id} ({run.path.resolve().name})")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _recording_html(run_path: Path, record_episodes: int, seed: int, trust_env_code: bool) -> str:
    """A recorded greedy episode of the best weights as an inline GIF, or a note why there is none."""
    from dqnx import trained
    from dqnx.viz import record

    agent = trained.load(run_path, trust_env_code=trust_env_code)
    try:
        recorded = record.agent_episodes(agent, record_episodes, seed)
    except UsageError as e:  # an environment without a renderer: the report says so instead
        return f'<p class="note">No recording: {html.escape(str(e))}.</p>'
    frames = record.annotate(recorded, agent.env_id, scale=0.5)
    gif = record.encode(frames, ".gif", fps=50)
    returns = ", ".join(f"{e.total_return:g}" for e in recorded)
    return (
        f'<figure><img id="recording" alt="recording of the trained agent" src="{_data_uri(gif, "image/gif")}">'
        f"<figcaption>Greedy episode(s) of seed {agent.seeds[0]}'s best weights; return {html.escape(returns)}."
        "</figcaption></figure>"
    )


def _summary_table(summary: dict, agent: str, raw_config: dict) -> str:
    """summary.json's headline figures as a table."""
    mean, std = summary.get("eval_mean_return"), summary.get("eval_std_return")
    return _table([
        ("environment", summary.get("env_id")),
        ("agent", summary.get("agent", agent)),
        ("seeds", raw_config.get("seeds")),
        ("env steps", summary.get("total_steps")),
        ("wall seconds", summary.get("wall_seconds")),
        ("compile seconds", summary.get("compile_seconds")),
        ("solve threshold", summary.get("solve_threshold")),
        ("action masks", {True: "used (acting and bootstrap over legal actions only)", False: "not used",
                          None: None}.get(summary.get("action_masks"))),
        ("steps to solve (median over seeds)", summary.get("steps_to_solve")),
        ("seeds solved", None if summary.get("seeds_solved") is None
         else f"{summary['seeds_solved']} of {summary.get('num_seeds')}"),
        ("final evaluation", None if mean is None else
         f"{mean:.2f} ± {std:.2f} over {summary.get('eval_episodes')} episodes per seed ({summary.get('eval_weights')} weights)"),
    ])


def write_report(run_dir: str | Path, out: str | Path | None = None, episodes: int = 5, seed: int = 0,
                 trust_env_code: bool = False) -> Path:
    """Write the report of `run_dir` to `out` (default RUN_DIR/report.html); returns its path."""
    check_count("episodes", episodes)
    check_seed(seed)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    if out is not None:
        if path.suffix.lower() not in (".html", ".htm"):
            raise UsageError(f"--out {path} must end in .html")
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(f"--out {path}: name an .html file in an existing directory")
    text = build_report(run_dir, episodes=episodes, seed=seed, trust_env_code=trust_env_code)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
