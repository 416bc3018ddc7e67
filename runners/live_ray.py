"""The live metrics of Ray Tune trials in the driver: a console line per trial from the results each trial
reports every ``train.log_every`` steps (at most one per ``logging.console_interval_s``), and Ray's own MLflow
and W&B logger callbacks when the ``logging`` section asks for them (Ray's TensorBoard logger is on by
default). Imported only when a Ray experiment starts."""

from __future__ import annotations

import time
from pathlib import Path

from ray import tune

from trcnas.nas.engine.live import console_line, log, mlflow_uri, require
from trcnas.nas.schema import ConfigBase


class LiveConsole(tune.Callback):
    def __init__(self, name: str, batch: int, interval_s: float):
        self.name, self.batch, self.interval = name, batch, interval_s
        self._last: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "loss" not in result or "total_steps" not in result:
            return
        now = time.monotonic()
        last_step = int(result["step"]) + 1 >= int(result["total_steps"])
        if now - self._last.get(trial.trial_id, float("-inf")) < self.interval and not last_step:
            return
        self._last[trial.trial_id] = now
        log.info(console_line("search", f"{self.name} ({trial.trial_id})", int(result["step"]),
                              int(result["total_steps"]), result, self.batch))


def callbacks(cfg: ConfigBase, exp_dir: Path, console: bool = True) -> list[tune.Callback]:
    lg = cfg.logging
    out: list[tune.Callback] = []
    if console:
        out.append(LiveConsole(cfg.name, cfg.train.batch_size, lg.console_interval_s))
    if lg.mlflow:
        require("mlflow", "mlflow")
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        out.append(MLflowLoggerCallback(tracking_uri=mlflow_uri(cfg, exp_dir),
                                        experiment_name=lg.experiment or cfg.name))
    if lg.wandb:
        require("wandb", "wandb")
        from ray.air.integrations.wandb import WandbLoggerCallback

        out.append(WandbLoggerCallback(project=lg.experiment or cfg.name, dir=str(exp_dir)))
    return out
