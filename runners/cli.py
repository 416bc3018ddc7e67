"""The ``trcnas`` command line. User mistakes print one ``error:`` line and exit with code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from trcnas.nas.errors import DivergedError, UserError

FAST_DEV = [  # --fast-dev-run: a handful of steps on tiny data, end to end
    "train.steps=3", "search.steps=3", "train.batch_size=2", "train.eval_batch_size=4", "train.log_every=1",
    "train.checkpoint_every=2", "data.train_samples=8", "data.val_samples=4", "data.image_size=[64,64]",
]


ARCH_HELP = "architecture YAML, `default` (the space's defaults) or `fixed:<context>` (every pair, e.g. fixed:global)"


def _common(p: argparse.ArgumentParser, config_default: str | None) -> None:
    p.add_argument("--config", default=config_default,
                   help="a YAML path or the name of a shipped config (`trcnas configs` lists them)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable), e.g. --set train.steps=100; a mapping "
                        "merges into the config's (--set 'loss_weights={semseg: 2}' keeps the other weights); "
                        "put _delete_: true in it to replace the whole mapping; {} empties it")
    p.add_argument("--out", default=None, help="run directory (default: results/<command>/<name>-<time>)")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fast-dev-run", action="store_true", help="a few steps on tiny data, every output written")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds a run (default: resume it if its config matches)")


class _Parser(argparse.ArgumentParser):
    """argparse's usage mistakes as one ``error:`` line (exit code 2) like every other bad input. Every command
    takes ``--plugin`` (repeatable): a module or .py file registering context types, tasks, ... (nas/plugins.py)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if kwargs.get("prog", "").startswith("trcnas "):
            self.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                              help="a module name or .py file that registers context types, tasks, ... "
                                   "(repeatable; a run's config records it)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trcnas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train and evaluate a network (baselines, or a fixed architecture)")
    _common(p, "synthetic-mt")
    p.add_argument("--architecture", default=None, help=ARCH_HELP)

    p = sub.add_parser("retrain", help="train a searched architecture from scratch")
    _common(p, None)
    p.add_argument("--architecture", required=True, help=ARCH_HELP)

    p = sub.add_parser("search", help="Gumbel-softmax supergraph search as Ray Tune trials (or --local)")
    _common(p, "synthetic-atrc")
    p.add_argument("--local", action="store_true", help="one search in this process, no Ray (writes into --out)")
    p.add_argument("--num-samples", type=int, default=None, help="seeds per point of ray.param_space")
    p.add_argument("--address", default=None, help="join a Ray cluster: auto or HOST:PORT (default: start one)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted experiment directory")
    p.add_argument("--name", default=None, help="experiment name under ray.storage_path")

    p = sub.add_parser("run", help="the pipeline: search (Ray Tune) -> export best -> retrain -> evaluate")
    _common(p, "synthetic-atrc")
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--address", default=None, help="join a Ray cluster: auto or HOST:PORT")

    p = sub.add_parser("hpo", help="Optuna study over hyperparameters declared in hpo.params")
    _common(p, "synthetic-atrc")
    p.add_argument("--storage", default=None, help="sqlite:///F.db, postgresql://..., or journal:FILE")
    p.add_argument("--study-name", default=None, help="resumes the study if it exists in the storage")
    p.add_argument("--n-trials", type=int, default=None)
    p.add_argument("--ray", action="store_true",
                   help="run the trials as Ray Tune trials proposed by OptunaSearch (same storage)")
    p.add_argument("--address", default=None, help="with --ray: join a Ray cluster (auto or HOST:PORT)")

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on a study storage (extra: dashboard)")
    p.add_argument("--storage", default="sqlite:///results/optuna.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)

    p = sub.add_parser("bench", help="benchmarks: search-step modes, local op, scaling, data (results/bench/)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.add_argument("--out", default="results/bench")
    p.add_argument("--quick", action="store_true", help="small sizes and one repetition (a smoke test)")
    p.add_argument("--ray-overhead", type=int, default=None, metavar="N",
                   help="instead: wall time of N short searches as Ray Tune trials vs in-process")
    p.add_argument("--steps", type=int, default=100, help="with --ray-overhead: steps per search")
    p.add_argument("--no-progress", action="store_true", help="no phase lines on stderr")

    p = sub.add_parser("importance", help="permutation importance of each context block of a trained ATRC network")
    p.add_argument("--run", required=True, help="a train/retrain run directory of an ATRC architecture")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="where importance.csv goes (default: the run directory)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("predict", help="task editing: a CompositeTasking run, a palette PNG, one val image")
    p.add_argument("--run", required=True, help="a train/retrain run directory of a CompositeTasking network")
    p.add_argument("--palette", required=True, help="one-channel PNG: pixel value = index of the task asked there")
    p.add_argument("--index", type=int, default=0, help="val image index")
    p.add_argument("--out", required=True, help="prediction .npz (a .png of the raw output goes beside it)")
    p.add_argument("--device", default=None)

    p = sub.add_parser("report", help="figures and tables from the result files under DIR (into DIR/figures)")
    p.add_argument("dir")
    p.add_argument("--out", default=None)
    p.add_argument("--importance", action="append", default=None, metavar="PATH",
                   help="an importance.csv, or a folder searched for them, to use instead of those under DIR "
                        "(repeatable; several fitted models are averaged per pair)")
    p.add_argument("--proof", default=None, metavar="DIR",
                   help="the output folder of the planting proof of the searched matrix (trcnas compare "
                        "relations-proof): the search's decisions beside each candidate's measured merit")

    p = sub.add_parser("summary", help="parameters (M) and multiply-adds (G), total and per module")
    _common(p, "synthetic-mt")
    p.add_argument("--architecture", default=None, help=ARCH_HELP)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("configs", help="list the shipped configs and architectures")
    p.add_argument("--reference", action="store_true",
                   help="print the configuration reference (every key; docs/configuration.md) instead")

    p = sub.add_parser("data", help="`data check`: read a dataset copy once and report what is wrong with it")
    p.add_argument("action", choices=["check"], help="check: every sample of the splits read once, per task what "
                   "was found and every problem; exit 2 when the copy cannot be used")
    p.add_argument("--config", default="nyud-hrnet18", help="a YAML path or shipped config naming the dataset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set data.root=/data/NYUDv2")
    p.add_argument("--split", dest="splits", action="append", choices=["train", "val"], default=None,
                   help="a split to read (repeatable; default: train and val)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("export", help="write an architecture file from a search run dir or a JSON genotype")
    p.add_argument("source", help="search run directory, architecture YAML, or reference JSON genotype")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", nargs="*", default=None, help="task order for a genotype (default: its own)")
    p.add_argument("--metric", default="delta_m", help="for an experiment: the metric picking the best trial")
    p.add_argument("--mode", default="max", choices=["max", "min"])

    p = sub.add_parser("table", help="Table-1-style comparison: search, retrain ATRC and fixed contexts, baselines")
    _common(p, "synthetic-atrc")
    p.add_argument("--architecture", default=None, help="use this searched architecture instead of searching")
    p.add_argument("--variants", nargs="*", default=None,
                   help="subset of: single_task multitask, one per context type (global local tlabel slabel and "
                        "those of --plugin), atrc")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds per variant (from --seed on); mean ± std; run again with the same --out to continue")
    p.add_argument("--ray", action="store_true", help="run the (variant, seed) runs as Ray Tune trials")
    p.add_argument("--address", default=None, help="with --ray: join a Ray cluster (auto or HOST:PORT)")

    p = sub.add_parser("compare", help="multi-seed comparison of variants under one budget (resumable: run it "
                                       "again to continue); mean ± std tables")
    p.add_argument("spec", help="comparison YAML (variants, seeds, shared overrides; see runners/compare.py)")
    p.add_argument("--out", required=True, help="comparison folder (finished runs in it are kept and skipped)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value of every variant (repeatable)")
    p.add_argument("--only", nargs="*", default=None, help="run only these variants (tables cover all)")
    p.add_argument("--seeds", nargs="*", type=int, default=None,
                   help="run only these of the file's seeds now (tables cover all), e.g. every variant's first seed")
    p.add_argument("--ray", action="store_true", help="run the (variant, seed) runs as Ray Tune trials")
    p.add_argument("--address", default=None, help="with --ray: join a Ray cluster (auto or HOST:PORT)")
    p.add_argument("--fast-dev-run", action="store_true", help="a few steps on tiny data, every output written")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _load_cfg(args, command: str):
    from trcnas.nas.config import load_config

    overrides = list(FAST_DEV if args.fast_dev_run else []) + list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.config, overrides, plugins=args.plugins)
    if args.fast_dev_run:
        cfg.name = f"{cfg.name}-fast-dev"
    out = Path(args.out) if args.out else Path("results") / command / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, out


def _print_metrics(summary: dict) -> None:
    for t, v in summary["primary"].items():
        print(f"  {t:10s} {v:.4f}")
    if summary.get("delta_m") is not None:
        print(f"  Delta_m    {summary['delta_m']:+.2f}%")


def cmd_train(args):
    from trcnas.nas.engine.train import train_run

    cfg, out = _load_cfg(args, args.command)
    summary = train_run(cfg, out, architecture=args.architecture, progress=not args.no_progress,
                        resume=not args.overwrite)
    print(f"trained {cfg.name} in {summary['wall_s']:.0f}s; val metrics:")
    _print_metrics(summary)
    print(f"outputs: {out}/ (config.yaml, metrics.json, checkpoint.pt, train_curve.csv)")


def cmd_search(args):
    cfg, out = _load_cfg(args, "search")
    if not args.local:
        return _search_ray(args, cfg)
    from trcnas.nas.engine.search import search_run

    summary = search_run(cfg, out, progress=not args.no_progress, resume=not args.overwrite)
    print(f"searched {summary['decisions']} decisions in {summary['wall_s']:.0f}s ({summary['frozen']} frozen); "
          "argmax subgraph val metrics:")
    _print_metrics(summary)
    print(f"architecture: {out / 'architecture.yaml'}")
    print(f"outputs: {out}/ (alpha_history.csv, freeze_events.csv, train_curve.csv, metrics.json, checkpoint.pt)")


def _search_ray(args, cfg):
    import pandas as pd

    from trcnas.runners.tune_search import run_tune_search

    if args.num_samples is not None and args.num_samples < 1:
        raise UserError("--num-samples must be at least 1")
    name = args.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = run_tune_search(cfg, name, address=args.address, num_samples=args.num_samples or cfg.ray.num_samples,
                          resume=args.resume, verbose=0 if args.no_progress else 1, out=args.out)
    df = pd.read_csv(exp / "summary.csv")
    finished = df[df["status"] == "done"] if "status" in df else df.iloc[:0]
    cols = [c for c in ("trial", "seed", "status", "step", "delta_m", "wall_s", "error") if c in df]
    cols += [c for c in df.columns if c.startswith("val/")]
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(df[cols].to_string(index=False))
    print(f"experiment: {exp}\nsummary: {exp / 'summary.csv'}")
    if finished.empty:
        why = "; ".join(sorted({str(e).splitlines()[0] for e in df.get("error", []) if isinstance(e, str)})) or "?"
        print(f"error: no trial of {exp} finished ({len(df)} errored or stopped): {why}", file=sys.stderr)
        return 1
    print(f"best architecture: trcnas export {exp} --metric {cfg.ray.metric} --out FILE")


def cmd_run(args):
    from trcnas.runners.pipeline import run_pipeline

    cfg, out = _load_cfg(args, "run")
    res = run_pipeline(cfg, out, address=args.address, num_samples=args.num_samples, progress=not args.no_progress)
    w = res["wall_s"]
    print(f"pipeline finished in {w['total']:.0f}s (search {w['search']:.0f}s, retrain {w['retrain']:.0f}s, "
          f"importance {w['importance']:.0f}s); "
          f"best trial by {res['selected_by']}; retrained val metrics:")
    _print_metrics(res["metrics"])
    for k, v in res["outputs"].items():
        print(f"  {k:13s} {v}")
    if res["recovery"]:
        print(_recovered_line(res["recovery"]))
    print(f"read first: {res['outputs']['report']}")
    if res["not_drawn"]:
        print(res["not_drawn"])


def cmd_hpo(args):
    from trcnas.runners.hpo import run_study

    cfg, out = _load_cfg(args, "hpo")
    pinned = {}
    if args.fast_dev_run:
        args.n_trials = args.n_trials or 2
        pinned = {"search.steps": cfg.search.steps, "train.steps": cfg.train.steps}
    if args.ray:
        from trcnas.runners.hpo import run_study_ray

        res = run_study_ray(cfg, out, storage=args.storage, study_name=args.study_name, n_trials=args.n_trials,
                            address=args.address, pinned=pinned)
    else:
        res = run_study(cfg, out, storage=args.storage, study_name=args.study_name, n_trials=args.n_trials,
                        progress=not args.no_progress, pinned=pinned)
    print(f"study {res['study']}: {res['complete']} of {res['trials']} trials complete")
    for k in ("best_value", "best_params", "best", "pareto", "trials_csv"):
        if k in res:
            print(f"  {k:12s} {res[k]}")
    print(f"watch it: trcnas dashboard --storage {args.storage or cfg.hpo.storage}")


def cmd_dashboard(args):
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install 'trcnas[dashboard]'") from None
    from trcnas.runners.hpo import make_storage

    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    run_server(make_storage(args.storage), host=args.host, port=args.port)


def cmd_bench(args):
    if args.ray_overhead:
        from trcnas.runners.bench_ray import ray_overhead

        r = ray_overhead(args.ray_overhead, args.steps, progress=not args.no_progress)
        print(json.dumps(r, indent=2) if args.json else
              f"{r['searches']} searches x {r['steps']} steps on {r['cpus']} CPUs: in-process "
              f"{r['in_process_s']:.1f}s, as Ray Tune trials {r['ray_trials_s']:.1f}s, ratio {r['ratio']:.2f}")
        return
    from trcnas.nas.engine.loop import resolve_device
    from trcnas.runners.bench import format_table, run_bench

    res = run_bench(str(resolve_device(args.device)), args.out, quick=args.quick, progress=not args.no_progress)
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    if not args.json:
        print(f"written: {', '.join(res['files'].values())}")


def cmd_importance(args):
    from trcnas.nas.engine.importance import permutation_importance

    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    out = Path(args.out or args.run)
    permutation_importance(args.run, args.repeats, args.seed, args.device, not args.no_progress, out)
    import pandas as pd

    df = pd.read_csv(out / "importance.csv")
    print(df[["target", "source", "context", "drop_delta_m_mean", "drop_delta_m_std"]].to_string(index=False))
    print(f"written: {out / 'importance.csv'}, {out / 'importance_repeats.csv'}")


def cmd_predict(args):
    from trcnas.nas.engine.predict import predict_with_palette

    r = predict_with_palette(args.run, args.palette, args.index, args.device, args.out)
    tasks = [k for k in r if k not in ("palette", "output", "index")]
    counts = {t: int((r["palette"] == k).sum()) for k, t in enumerate(tasks)}
    print(f"val image {args.index}: pixels per task {counts}")
    print(f"written: {args.out} (palette, output, {', '.join(tasks)}) and {Path(args.out).with_suffix('.png')}")


def cmd_report(args):
    from trcnas.analysis.report import make_report
    from trcnas.analysis.report_md import not_drawn_line

    if not Path(args.dir).is_dir():
        raise UserError(f"report: {args.dir} is not a directory")
    from trcnas.analysis.loaders import RESULT_FILES, importance_files, result_files

    if not result_files(Path(args.dir)) and not args.importance:
        raise UserError(f"report: {args.dir} holds no results (looked for {', '.join(RESULT_FILES)} at any "
                        "depth); give the --out of a `trcnas search`, `train`, `retrain`, `run`, `table`, `hpo`, "
                        "`compare` or `importance`")
    for p in args.importance or []:
        if not Path(p).exists() or not importance_files([p]):
            raise UserError(f"report: --importance {p} " + ("holds no importance.csv" if Path(p).is_dir() else
                            "does not exist") + ": give an importance.csv written by `trcnas importance`, or a "
                            "folder holding them")
    if args.proof and not (Path(args.proof) / "comparison.yaml").is_file():
        raise UserError(f"report: --proof {args.proof} holds no comparison.yaml; give the --out of `trcnas compare "
                        "relations-proof`")
    s = make_report(args.dir, args.out, args.importance, args.proof)
    print(f"figures and tables in {s['figures']}: {', '.join(s['files'])}")
    print(f"read first: {Path(s['figures']) / 'report.md'}")
    if "recovery" in s:
        print(_recovered_line(s["recovery"]))
    if not_drawn_line(s):
        print(not_drawn_line(s))


def _recovered_line(rec: dict) -> str:
    return (f"planted pairs recovered: {rec['recovered']} of {rec['pairs']} ({rec['exact']} exactly)"
            + (f"; wrong: {'; '.join(rec['wrong'])}" if rec["wrong"] else ""))


def cmd_summary(args):
    from trcnas.nas.data import label_spaces
    from trcnas.nas.engine.summary import model_summary
    from trcnas.nas.engine.train import load_run_architecture
    from trcnas.nas.families import build_model
    from trcnas.nas.tasks import build_tasks

    cfg, _ = _load_cfg(args, "summary")
    arch = load_run_architecture(cfg, args.architecture)
    info = label_spaces(cfg.data)
    tasks = build_tasks(cfg.data.tasks, info)
    model = build_model(cfg, tasks, architecture=arch)
    size = tuple(cfg.data.crop or cfg.data.image_size)
    s = model_summary(model, size)
    if args.json:
        print(json.dumps(s, indent=2))
        return
    print(f"{'module':28s} {'params (M)':>11s} {'MAdds (G)':>10s}")
    for m in s["modules"]:
        print(f"{m['module']:28s} {m['params_M']:11.3f} {m['madds_G']:10.3f}")
    print(f"{'total':28s} {s['params_M']:11.3f} {s['madds_G']:10.3f}   (input {size[0]}x{size[1]})")


def cmd_configs(args):
    from trcnas.nas.config import list_configs
    from trcnas.spaces.architecture import shipped_architectures

    if args.reference:
        from trcnas.nas.configdoc import reference_markdown

        print(reference_markdown(), end="")
        return
    print("configs (--config NAME):")
    for name, desc in list_configs().items():
        print(f"  {name:22s} {desc}")
    print("architectures (--architecture NAME):")
    for name, desc in shipped_architectures().items():
        print(f"  {name:22s} {desc}")


def cmd_data(args):
    from trcnas.nas.config import load_config
    from trcnas.nas.data.check import check_dataset

    cfg = load_config(args.config, args.overrides, plugins=args.plugins)
    report = check_dataset(cfg.data, tuple(args.splits or ("train", "val")), progress=not args.no_progress)
    print("\n".join(report.lines()))
    return 0 if report.usable else 2


def cmd_export(args):
    from trcnas.runners.export import export

    if Path(args.out).is_dir():
        raise UserError(f"export --out {args.out} is a directory; give the architecture file's path, "
                        f"e.g. {Path(args.out) / 'architecture.yaml'}")
    arch = export(args.source, args.out, args.tasks, args.metric, args.mode)
    print(f"wrote {args.out} ({arch.space}, tasks {', '.join(arch.tasks)})")


def cmd_table(args):
    from trcnas.runners.table import run_table

    cfg, out = _load_cfg(args, "table")
    paths = run_table(cfg, out, architecture=args.architecture, variants=args.variants,
                      progress=not args.no_progress, seeds=args.seeds, ray=args.ray, address=args.address)
    if paths["markdown"]:
        print(Path(paths["markdown"]).read_text())
        print(f"outputs: {paths['csv']}, {paths['markdown']}")
    return _report_errors(paths)


def cmd_compare(args):
    from trcnas.runners.compare import run_compare

    extra = [*(FAST_DEV if args.fast_dev_run else []), *args.overrides]
    res = run_compare(args.spec, args.out, extra, progress=not args.no_progress, only=args.only, ray=args.ray,
                      address=args.address, seeds=args.seeds)
    md = Path(args.out) / "summary.md"
    if md.is_file():
        print(md.read_text())
    print(f"{res['runs']} finished run(s); outputs: {', '.join(res['files']) or 'none yet'}")
    return _report_errors(res)


def _report_errors(res: dict) -> int:
    """Failed Ray trials: one line each on stderr and exit code 1 (the finished runs are kept; run the same
    command again to retry the failed ones)."""
    for e in res.get("errors", []):
        print(f"failed: {e}", file=sys.stderr)
    if res.get("errors"):
        print(f"{len(res['errors'])} run(s) failed; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "run": cmd_run, "train": cmd_train, "retrain": cmd_train, "search": cmd_search, "export": cmd_export,
    "table": cmd_table, "hpo": cmd_hpo, "dashboard": cmd_dashboard, "summary": cmd_summary, "configs": cmd_configs,
    "bench": cmd_bench, "importance": cmd_importance, "report": cmd_report,
    "predict": cmd_predict, "compare": cmd_compare, "data": cmd_data,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage mistake (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        from trcnas.nas.engine.live import console_logging
        from trcnas.nas.plugins import load_entry_points, load_plugin

        load_entry_points()
        for name in getattr(args, "plugins", []):
            load_plugin(name, "--plugin")
        if getattr(args, "command", None) == "retrain" and args.config is None:
            args.config = _config_for_architecture(args.architecture)
        console_logging()
        rc = COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergedError as e:
        print(f"error: the training diverged: {e}; try a lower train.lr or a tighter gradient clip "
              "(train.grad_clip, search.grad_clip), and rerun with a new --out", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept (rerun with the same --out to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`trcnas configs | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    return rc if isinstance(rc, int) else 0


def _config_for_architecture(path: str) -> str:
    """retrain without --config: the config saved next to the architecture by its search, else the shipped
    config of the architecture's space family (synthetic-atrc for a file that cannot be read: its error follows)."""
    from trcnas.nas.families import family, is_family
    from trcnas.spaces import load_architecture
    from trcnas.spaces.architecture import find_architecture
    try:
        path = find_architecture(path)
    except UserError:
        return "synthetic-atrc"
    cand = path.parent / "config.yaml"
    if cand.is_file():
        return str(cand)
    try:
        arch = load_architecture(path)
    except UserError:
        return "synthetic-atrc"
    if arch.search.get("config"):  # a shipped architecture names the config it was searched with
        return str(arch.search["config"])
    return family(arch.group).config if is_family(arch.group) else "synthetic-atrc"


if __name__ == "__main__":
    sys.exit(main())
