"""Live metrics of a run in progress: every ``train.log_every`` steps the losses, learning rate, search state
(τ, entropy weight, frozen decisions, each candidate's probability) and at each validation every task metric
and Δm, sent to the sinks the ``logging`` config section asks for:

- TensorBoard event files in ``<run>/tensorboard`` (``torch.utils.tensorboard``), on by default in-process;
- an MLflow run (the ``mlflow`` client; a SQLite store ``<run>/mlflow.db`` unless ``logging.mlflow_uri``);
- a Weights & Biases run (``WANDB_MODE=offline`` works without a network);
- a Ray Tune trial's ``tune.report`` (then Ray's TensorBoard logger and any Ray logger callback receive it);
- the console, through the standard ``logging`` module (logger ``trcnas``): off a terminal, where no live bar
  is drawn, one line per ``log_every`` steps, at most one per ``logging.console_interval_s`` seconds (Ray
  trials: the driver prints the same line from the reported results, ``runners/tune_search.py``).

No sink changes what a run computes: they only read the scalars the loop already has."""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from trcnas.nas.errors import UserError
from trcnas.nas.schema import ConfigBase, as_dict

log = logging.getLogger("trcnas")

EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # sink -> the pip extra that installs it


def require(module: str, key: str):
    """Import an optional logger library, or one ``UserError`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"logging.{key} is on but {module} is not installed: pip install 'trcnas[{EXTRAS[key]}]' "
                        f"(or set logging.{key}=false)") from None


def mlflow_uri(cfg: ConfigBase, folder: Path) -> str:
    """``logging.mlflow_uri``, else a SQLite store in ``folder`` (MLflow's file store is deprecated)."""
    return cfg.logging.mlflow_uri or f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"


def flat_params(cfg: dict | ConfigBase, prefix: str = "") -> dict[str, str]:
    """A nested config as ``a.b.c -> value`` strings (an MLflow run's params)."""
    out = {}
    for k, v in (cfg.model_dump() if isinstance(cfg, ConfigBase) else cfg).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_params(v, f"{key}."))
        else:
            out[key] = str(v)[:500]
    return out


class TensorBoardSink:
    def __init__(self, out_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowSink:
    def __init__(self, cfg: ConfigBase, out_dir: Path):
        mlflow = require("mlflow", "mlflow")
        self.client = mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg, out_dir))
        name = cfg.logging.experiment or cfg.name
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(exp_id, run_name=out_dir.name).info.run_id
        params = flat_params(cfg)
        items = [mlflow.entities.Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # the client's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self._metric = mlflow.entities.Metric

    def log(self, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k.replace(":", "_"), float(v), now, step)
                                                    for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbSink:
    def __init__(self, cfg: ConfigBase, out_dir: Path):
        wandb = require("wandb", "wandb")
        self.run = wandb.init(project=cfg.logging.experiment or cfg.name, name=out_dir.name,
                              dir=str(out_dir), config=as_dict(cfg), reinit="create_new")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


class CallbackSink:
    """Any ``fn(step, scalars)``: a Ray Tune trial's ``tune.report`` (with the run's length, ``total_steps``, for
    the driver's console line)."""

    def __init__(self, fn: Callable[[int, dict], None], total: int):
        self.fn, self.total = fn, total

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.fn(step, {**scalars, "total_steps": self.total})

    def close(self) -> None:
        pass


class Live:
    """The sinks of one run and its console line. ``report``: a Ray trial's reporter; then TensorBoard,
    MLflow and W&B are left to Ray's logger callbacks (``runners/tune_search.py``)."""
    def __init__(self, cfg: ConfigBase, out_dir: Path, total: int, kind: str, start: int = 0,
                 report: Callable[[int, dict], None] | None = None, enabled: bool = True, console: bool = True):
        lg = cfg.logging
        self.total, self.kind, self.name = total, kind, cfg.name
        self.batch = cfg.train.batch_size
        self.interval = lg.console_interval_s if console and enabled else float("inf")
        self.sinks: list = []
        if enabled:
            if report is not None:
                self.sinks.append(CallbackSink(report, total))
            else:
                if lg.tensorboard:
                    self.sinks.append(TensorBoardSink(out_dir))
                if lg.mlflow:
                    self.sinks.append(MlflowSink(cfg, out_dir))
                if lg.wandb:
                    self.sinks.append(WandbSink(cfg, out_dir))
        self._t0, self._s0 = time.perf_counter(), start
        self._last_line = float("-inf")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """The scalars of one logging step, to every sink; the console line if its interval has passed."""
        now = time.perf_counter()
        done = step + 1 - self._s0
        rate = done / max(now - self._t0, 1e-9)
        scalars = {**scalars, "img_per_s": rate * self.batch}
        for s in self.sinks:
            s.log(step, scalars)
        if self.interval < float("inf") and (now - self._last_line >= self.interval or step + 1 >= self.total):
            self._last_line = now
            log.info(self.line(step, scalars, rate))

    def line(self, step: int, scalars: dict[str, float], rate: float) -> str:
        return console_line(self.kind, self.name, step, self.total, scalars, self.batch)

    def evaluation(self, step: int, primary: dict[str, float], delta_m: float | None) -> None:
        scalars = {f"val/{t}": float(v) for t, v in primary.items()}
        if delta_m is not None:
            scalars["val/delta_m"] = float(delta_m)
        for s in self.sinks:
            s.log(step, scalars)
        if self.interval < float("inf"):
            log.info(f"{self.kind} {self.name} step {step}: validation "
                     + ", ".join(f"{k[4:]} {v:.4g}" for k, v in scalars.items()))

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []


def console_line(kind: str, name: str, step: int, total: int, scalars: dict[str, float], batch: int) -> str:
    """``search NAME step 120/600, loss 1.23, frozen 3/16, 25.1 img/s, ETA 4m10s`` (in-process, and for each
    Ray trial in the driver's console)."""
    rate = scalars.get("img_per_s", 0.0) / max(batch, 1)
    eta = (total - step - 1) / rate if rate > 0 else float("nan")
    parts = [f"{kind} {name} step {step + 1}/{total}", f"loss {scalars.get('loss', float('nan')):.4g}"]
    if "frozen" in scalars:
        parts.append(f"frozen {int(scalars['frozen'])}/{int(scalars.get('decisions', 0))}")
    parts += [f"{scalars.get('img_per_s', 0.0):.1f} img/s", f"ETA {_duration(eta)}"]
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "?"
    seconds = int(round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a line is written (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


class _ConsoleFormat(logging.Formatter):
    """Progress as ``HH:MM:SS message``; a warning or an error as ``warning: message`` / ``error: message``, the
    form the command line's own error lines have."""

    def format(self, record):
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {record.getMessage()}"
        return super().format(record)


def console_logging(verbose: bool = True) -> None:
    """The package's log lines to stderr (``trcnas`` logger, INFO), unless the user configured logging."""
    logger = logging.getLogger("trcnas")
    if not logger.handlers and not logging.getLogger().handlers:
        h = _Stderr()
        h.setFormatter(_ConsoleFormat("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
