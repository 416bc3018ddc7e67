from pathlib import Path

import pandas as pd
import pytest

from trcnas.nas.config import load_config
from trcnas.runners.cli import FAST_DEV
from trcnas.runners.table import run_table


def test_table_rows_params_and_delta_m(tmp_path, cache_dir):
    cfg = load_config("synthetic-atrc", [*FAST_DEV, f"data.cache_dir={cache_dir}"])
    res = run_table(cfg, tmp_path, variants=["multitask", "tlabel", "atrc"], progress=False)
    df = pd.read_csv(res["csv"])
    assert list(df["variant"]) == ["single_task", "multitask", "tlabel", "atrc"]
    st = df.set_index("variant")
    hib = {"semseg": 1, "depth": -1, "normals": -1, "edge": 1}
    zero_base = (st.loc["single_task", list(hib)] == 0).any()
    assert st.loc["single_task", "delta_m"] == pytest.approx(float("nan") if zero_base else 0.0, nan_ok=True)
    # one backbone per task vs one shared: the single-task baseline is the largest
    assert st.loc["single_task", "params_M"] > st.loc["tlabel", "params_M"] > st.loc["multitask", "params_M"]
    assert st.loc["tlabel", "madds_G"] > st.loc["multitask", "madds_G"]
    # Delta_m recomputed from the table's own numbers (NaN where a baseline is 0: a few-step edge network may
    # match no boundary pixel under the BSDS protocol)
    for v in ("multitask", "tlabel", "atrc"):
        base = st.loc["single_task"]
        d = sum(s * (st.loc[v, t] - base[t]) / base[t] if base[t] != 0 else float("nan") for t, s in hib.items())
        assert st.loc[v, "delta_m"] == pytest.approx(d / 4 * 100, nan_ok=True)
    md = (tmp_path / "table.md").read_text()
    assert "T-label context" in md and "Δm" in md
    assert (tmp_path / "table_delta_m.png").stat().st_size > 0 and (tmp_path / "table.tex").is_file()
    assert (tmp_path / "tlabel" / "seed0" / "metrics.json").is_file()


def test_table_with_seeds_is_mean_and_std_of_the_runs_and_continues(tmp_path, cache_dir, capsys):
    import json

    from trcnas.runners.cli import main

    argv = ["table", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}", "--out",
            str(tmp_path), "--variants", "tlabel", "--seeds", "2", "--seed", "3"]
    assert main(argv) == 0
    df = pd.read_csv(tmp_path / "table.csv").set_index("variant")
    runs = {s: json.loads((tmp_path / "tlabel" / f"seed{s}" / "metrics.json").read_text())["primary"]
            for s in (3, 4)}
    assert df.loc["tlabel", "n"] == 2 and df.loc["tlabel", "seeds"] == "3 4"
    vals = [runs[s]["depth"] for s in (3, 4)]
    assert df.loc["tlabel", "depth"] == pytest.approx(sum(vals) / 2)
    assert df.loc["tlabel", "depth_std"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    assert " ± " in (tmp_path / "table.md").read_text()
    kept = (tmp_path / "tlabel" / "seed3" / "metrics.json").stat().st_mtime_ns
    (tmp_path / "tlabel" / "seed4" / "metrics.json").unlink()  # as if stopped before the last run finished
    assert main(argv) == 0
    assert (tmp_path / "tlabel" / "seed3" / "metrics.json").stat().st_mtime_ns == kept
    assert (tmp_path / "tlabel" / "seed4" / "metrics.json").is_file()


def test_table_rows_come_from_the_config_family():
    """Table 1's fixed rows are the family's fixed variants: one per context type for ATRC, the plain decoder for
    mTEB; the searched row is named after the family."""
    from trcnas.nas.config import load_config
    from trcnas.runners.table import table_spec, variant_labels

    atrc = variant_labels(load_config("synthetic-atrc"))
    assert list(atrc) == ["single_task", "multitask", "global", "local", "tlabel", "slabel", "atrc"]
    assert atrc["tlabel"] == "T-label context"
    mteb = variant_labels(load_config("synthetic-mteb"))
    assert list(mteb) == ["single_task", "multitask", "off", "mteb"]
    spec = table_spec(Path("c.yaml"), [0, 1], list(mteb), None, mteb, "mteb")
    arch = {v["name"]: v.get("architecture") for v in spec["variants"]}
    assert arch == {"single_task": None, "multitask": None, "off": "fixed:off", "mteb": "search"}
