import pandas as pd
import pytest

from nas.config import load_config
from runners.cli import FAST_DEV
from runners.table import run_table


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
