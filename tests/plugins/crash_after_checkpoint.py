"""Test fault (loaded as a plugin, ``--plugin tests/plugins/crash_after_checkpoint.py``): a Ray Tune trial raises
once, right after reporting its checkpoint of step 2; its retry restores that checkpoint."""

from pathlib import Path

from ray import tune

CRASH_AFTER = 2
_report = tune.report


def _report_then_crash(metrics, *args, **kwargs):
    _report(metrics, *args, **kwargs)
    marker = Path(tune.get_context().get_trial_dir()) / "crashed"
    if metrics.get("step") == CRASH_AFTER and not metrics.get("done") and not marker.exists():
        marker.write_text(str(CRASH_AFTER))
        raise RuntimeError(f"injected crash after checkpoint {CRASH_AFTER}")


tune.report = _report_then_crash
