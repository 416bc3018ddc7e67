"""The one-command pipeline end to end (a local Ray instance), on tiny data."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_run_pipeline_writes_every_output(tmp_path, cache_dir):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "trcnas.runners.cli", "run", "--fast-dev-run", "--no-progress", "--out",
                        str(out), "--set", f"data.cache_dir={cache_dir}", "--set", "report.importance_repeats=2"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "pipeline finished" in p.stdout and str(out / "architecture.yaml") in p.stdout
    summary = pd.read_csv(out / "search" / "summary.csv")
    assert list(summary["status"]) == ["done"]
    m = json.loads((out / "retrain" / "metrics.json").read_text())
    assert m["model"] == "atrc" and m["delta_m"] is not None  # synthetic-atrc ships single-task baselines
    imp = pd.read_csv(out / "retrain" / "importance.csv")
    assert len(imp) == sum(c != "none" for row in m["architecture"]["choices"]["atrc"].values() for c in row.values())
    for f in ("importance_heatmap.png", "chosen_context.pdf", "alpha_trajectories.png", "report.json"):
        assert (out / "figures" / f).stat().st_size > 0
    # report.md opens with the retrained Delta_m beside the config's reference figures, and lists every output
    md = (out / "figures" / "report.md").read_text()
    assert f"| {m['delta_m']:+.2f} | 1 | `retrain/metrics.json` |" in md
    assert "| Multi-task baseline | +3.46 ± 0.20 | 3 |" in md
    assert "| Best fixed context (S-label) | +6.97 ± 0.85 | 3 |" in md
    assert f"| architecture | `{out / 'architecture.yaml'}` |" in md
    assert f"read first: {out / 'figures' / 'report.md'}" in p.stdout
