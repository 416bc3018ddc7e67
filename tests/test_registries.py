"""Every registry entry, as timm tests every model: each context type builds, runs forward and backward and
round-trips through the reference genotype; each palette rule draws valid palettes; each space family builds
its supergraph and fixed network and round-trips its architecture file. And the extension route: a context
type from a module outside the package (tests/plugins/dilated_context.py) searched end to end."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from trcnas.nas.errors import UserError
from trcnas.nas.models.context import CONTEXTS, build_context, context_types
from trcnas.nas.registry import Registry
from trcnas.nas.schema import updated
from trcnas.runners.cli import main

PLUGINS = Path(__file__).parent / "plugins"


@pytest.mark.parametrize("name", [n for n in CONTEXTS.names() if n != "none"])
def test_every_context_type_builds_runs_and_gets_gradients(name):
    torch.manual_seed(0)
    block = build_context(name, 16, 8)
    f_t, f_s = torch.randn(2, 16, 12, 10, requires_grad=True), torch.randn(2, 16, 12, 10, requires_grad=True)
    aux = torch.randn(2, 5, 12, 10)
    out = block(f_t, f_s, aux, aux)
    assert out.shape == (2, 8, 12, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters() if p.requires_grad)
    # a block never reads an aux map its type does not declare
    reads = set(CONTEXTS.info(name).aux)
    out2 = block.eval()(f_t, f_s, aux if "target" in reads else None, aux if "source" in reads else None)
    assert out2.shape == out.shape


def test_context_metadata_is_complete_and_consistent():
    types = context_types()
    assert [t.name for t in types][:5] == ["none", "global", "local", "tlabel", "slabel"]
    codes = [t.code for t in types if t.code is not None]
    assert codes == sorted(set(codes)) == [0, 1, 2, 3, 4]  # the reference's genotype codes, each once
    for t in types:
        assert re.fullmatch(r"#[0-9A-Fa-f]{6}", t.colour) and t.label and CONTEXTS.info(t.name) is t
    assert build_context("none", 16) is None
    with pytest.raises(ValueError, match="aux"):
        type(types[0])("x", "x", "#000000", aux=("other",))


def test_genotype_round_trips_every_coded_context():
    from trcnas.nas.genotype import from_genotype, to_genotype

    tasks = ["semseg", "depth", "normals", "edge"]
    g = {"data": {t: {s: (3 if t == s else (i + j) % 5) for j, s in enumerate(tasks)} for i, t in
                  enumerate(tasks)}, "step": 7}
    arch = from_genotype(g)
    assert {c for row in arch.choices["atrc"].values() for c in row.values()} == {"none", "global", "local",
                                                                                 "tlabel", "slabel"}
    assert to_genotype(arch) == g


def test_registry_reports_unknown_names_and_duplicates():
    from trcnas.nas.errors import UserError

    r = Registry("widget")
    r.register("a", info={"x": 1})(object)
    assert r.info("a") == {"x": 1} and "a" in r
    with pytest.raises(KeyError, match="twice"):
        r.register("a")(object)
    with pytest.raises(UserError, match="unknown widget 'b'; known: a"):
        r.info("b")


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


@pytest.mark.parametrize("family", __import__("trcnas.nas.families", fromlist=["x"]).family_names())
def test_every_space_family_builds_supergraph_and_fixed_network(family, tmp_path):
    """Supergraph (one MixedOp per decision of the space) and the fixed network of the space's defaults:
    forward and backward, and the architecture file round-trips."""
    import numpy as np

    from trcnas.nas.config import load_config
    from trcnas.nas.families import build_model, build_supergraph
    from trcnas.nas.search.mixed import mixed_ops
    from trcnas.nas.tasks import DatasetInfo, build_tasks
    from trcnas.spaces import default_architecture, fixed_architecture, load_architecture, load_space

    cfg = load_config("synthetic-mt", ["data.image_size=[64,64]"])
    names = cfg.data.tasks
    tasks = build_tasks(names, DatasetInfo("synthetic", num_classes=9, normal_centroids=np.eye(3, dtype=np.float32)))
    space = load_space(family)
    pairs = space.per == "task_pair"
    arch = fixed_architecture(space, names, "slabel") if pairs else default_architecture(space, names)
    if family == "atrc":  # S-label everywhere but on self pairs, which take the space's substitute (T-label)
        assert {(t == s, c) for t, row in arch.choices["atrc"].items() for s, c in row.items()} == {
            (True, "tlabel"), (False, "slabel")}
    arch.save(tmp_path / "a.yaml")
    again = load_architecture(tmp_path / "a.yaml")
    assert again.choices == arch.choices and again.space == family
    torch.manual_seed(0)
    sup = build_supergraph(cfg, tasks, space)
    assert {m.name for m in mixed_ops(sup)} == {d.name for d in space.decisions(names)}
    fixed = build_model(updated(cfg, {"model.type": family}), tasks, architecture=again)
    assert not mixed_ops(fixed)
    x = torch.randn(2, 3, 64, 64)
    for net in (sup.train(), fixed.train()):
        out = list(_tensors(getattr(net, "forward_image", net)(x)))
        assert out and all(torch.isfinite(t).all() for t in out)
        sum(t.float().mean() for t in out if t.is_floating_point()).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_a_context_type_from_outside_the_package_is_searched_end_to_end(tmp_path, fast_args, capsys):
    plugin, space = PLUGINS / "dilated_context.py", PLUGINS / "atrc_dilated.yaml"
    out = tmp_path / "search"
    assert main(["search", "--local", *fast_args, "--plugin", str(plugin), "--set", f"search.space={space}",
                 "--out", str(out)]) == 0
    hist = pd.read_csv(out / "alpha_history.csv")
    assert "atrc.semseg.depth:dilated" in hist.columns and "atrc.semseg.depth:local" not in hist.columns
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["plugins"] == [str(plugin.resolve())]  # the run remembers what it needs
    arch = yaml.safe_load((out / "architecture.yaml").read_text())
    assert arch["space_spec"]["candidates"] == ["none", "global", "dilated"]
    # a fixed all-dilated network retrains from the search's config (which loads the plugin itself)
    rt = tmp_path / "retrain"
    fixed = tmp_path / "dilated.yaml"
    arch["choices"] = {"atrc": {t: dict.fromkeys(arch["tasks"], "dilated") for t in arch["tasks"]}}
    fixed.write_text(yaml.safe_dump(arch))
    assert main(["retrain", "--no-progress", "--config", str(out / "config.yaml"), "--architecture", str(fixed),
                 "--out", str(rt)]) == 0
    m = json.loads((rt / "metrics.json").read_text())
    assert set(m["primary"]) == {"semseg", "depth", "normals", "edge"}
    # the report knows the plugin's label and colour; Table 1 gets a row for it
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--plugin", str(plugin)]) == 0
    assert (tmp_path / "figures" / "context_proportions.png").is_file()
    from trcnas.analysis.context import proportions
    from trcnas.analysis.style import context_colour, context_label, context_order
    from trcnas.nas.config import validate
    from trcnas.runners.table import variant_labels

    assert (context_colour("dilated"), context_label("dilated")) == ("#DD8452", "dilated")
    assert context_order(["zzz"])[-2:] == ["dilated", "zzz"]  # registered first, unknown names after
    assert list(proportions([arch]).columns) == ["dilated"]

    labels = variant_labels(validate(yaml.safe_load((out / "config.yaml").read_text()), "config.yaml"))
    assert list(labels) == ["single_task", "multitask", "global", "dilated", "atrc"]
    assert labels["dilated"] == "Dilated context"
    # without the plugin the context type is unknown: one error line naming it
    p = subprocess.run([sys.executable, "-m", "trcnas.runners.cli", "train", *fast_args, "--architecture",
                        str(fixed), "--out", str(tmp_path / "noplugin")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "dilated" in p.stderr, p.stderr


def test_a_plugin_that_cannot_load_is_one_error_line(tmp_path, fast_args, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert main(["train", *fast_args, "--plugin", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "boom" in err[0] and "bad.py" in err[0]
    assert main(["train", *fast_args, "--plugin", "no_such_module_xyz", "--out", str(tmp_path / "r")]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sets, want", [
    (["model.type=multitask", "search.space=atrc"], "set model.type: atrc"),  # a config of the old format
    (["model.type=composite", "search.space=atrc"], "family 'atrc' but model.type is 'composite'"),
    (["model.type=mteb", "search.space=composite"], "family 'composite' but model.type is 'mteb'"),
])
def test_one_key_selects_the_family_and_old_inconsistent_configs_are_one_error(sets, want, fast_args, tmp_path,
                                                                              capsys):
    argv = ["search", "--local", *fast_args, "--out", str(tmp_path / "s")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and want in err[0], err
    assert not (tmp_path / "s").exists()


def test_a_search_records_its_family_and_retrains_only_within_it(fast_args, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["search", "--local", *fast_args, "--config", "synthetic-mteb", "--out", str(out)]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["type"] == "mteb" and cfg["search"]["space"] is None
    arch = yaml.safe_load((out / "architecture.yaml").read_text())
    assert arch["space"] == "mteb" and set(arch["choices"]) == {"mteb"}
    capsys.readouterr()
    assert main(["retrain", *fast_args, "--config", "synthetic-atrc", "--architecture", str(out / "architecture.yaml"),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "space family 'mteb' but model.type is 'atrc'" in err and not (tmp_path / "r").exists()
    # without --config: the search's own config beside the architecture
    assert main(["retrain", *fast_args, "--architecture", str(out / "architecture.yaml"),
                 "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["architecture"]["space"] == "mteb"


def test_atrc_without_an_architecture_is_its_multitask_baseline():
    import numpy as np

    from trcnas.nas.config import load_config
    from trcnas.nas.families import build_model
    from trcnas.nas.tasks import DatasetInfo, build_tasks

    tasks = build_tasks(["semseg", "depth"], DatasetInfo("s", num_classes=9, normal_centroids=np.eye(3)))
    torch.manual_seed(0)
    a = build_model(load_config("synthetic-atrc", ["data.tasks=[semseg, depth]"]), tasks)
    torch.manual_seed(0)
    b = build_model(load_config("synthetic-atrc", ["data.tasks=[semseg, depth]", "model.type=multitask"]), tasks)
    assert type(a) is type(b) and a.distill is None
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_plugin_section_is_part_of_the_schema(tmp_path):
    """``register_section``: a plugin's own config keys are validated like every other (type, range, unknown
    keys), with defaults, after every merge."""
    from pydantic import Field

    from trcnas.nas import schema
    from trcnas.nas.config import defaults, load_config
    from trcnas.nas.errors import UserError

    class Toy(schema.Section):
        width: int = Field(4, gt=0)

    schema.register_section("model.toy", Toy)
    try:
        assert defaults()["model"]["toy"] == {"width": 4}
        assert load_config("synthetic-mt", ["model.toy.width=8"]).model.toy.width == 8
        with pytest.raises(UserError, match=r"--set model.toy.width=0: model.toy.width must be greater than 0"):
            load_config("synthetic-mt", ["model.toy.width=0"])
        with pytest.raises(UserError, match="unknown config key 'model.toy.height'"):
            load_config("synthetic-mt", ["model.toy.height=1"])
        with pytest.raises(ValueError, match="model.<name> or <name>"):
            schema.register_section("train.toy.deep", Toy)
    finally:
        schema._SECTIONS.pop("model.toy")
        schema.schema.cache_clear()
    with pytest.raises(UserError, match="unknown config key 'model.toy.width'"):
        load_config("synthetic-mt", ["model.toy.width=8"])


@pytest.mark.parametrize("name", ["synthetic-mt", "synthetic-st", "synthetic-atrc", "synthetic-atrc-reliability",
                                  "synthetic-composite", "synthetic-mt-mosaic", "synthetic-st-mosaic",
                                  "synthetic-taskswitching", "synthetic-mteb", "nyud-hrnet18", "nyud-hrnet48",
                                  "pascal-hrnet18"])
def test_every_shipped_config_validates_and_its_dump_loads_again(name, tmp_path):
    from trcnas.nas.config import dump, list_configs, load_config

    assert name in list_configs()
    cfg = load_config(name)
    p = tmp_path / "c.yaml"
    p.write_text(dump(cfg))
    assert load_config(str(p)) == cfg


@pytest.mark.parametrize("name", __import__("trcnas.nas.tasks", fromlist=["TASKS"]).TASKS.names())
def test_every_task_carries_its_metadata(name):
    """A task's title, default loss weight and CompositeTasking output live on the task class: the config's
    default loss_weights, the figures' labels and the CompositeTasking outputs read them there."""
    import numpy as np

    from trcnas.analysis.style import task_label
    from trcnas.nas.composite.outputs import OUTPUTS, build_outputs
    from trcnas.nas.config import defaults
    from trcnas.nas.tasks import TASKS, DatasetInfo

    cls = TASKS.get(name)
    assert task_label(name) == (cls.title or name)
    assert defaults()["loss_weights"].get(name) == cls.loss_weight
    task = TASKS.build(name, DatasetInfo("s", num_classes=5, num_parts=3, normal_centroids=np.eye(3)))
    if cls.composite_output is None:
        with pytest.raises(UserError, match=f"task {name} has no CompositeTasking output"):
            build_outputs({name: task})
    else:
        assert cls.composite_output in OUTPUTS.names()
        out = build_outputs({name: task})[name]
        assert out.task is task and type(out).__name__ == {"anchor": "AnchorOutput", "normals": "NormalsOutput",
                                                           "scalar": "ScalarOutput",
                                                           "probability": "ScalarOutput"}[cls.composite_output]


def test_the_papers_loss_weights_and_outputs_of_the_built_in_tasks():
    from trcnas.nas.config import defaults
    from trcnas.nas.tasks import TASKS

    assert {k: v for k, v in defaults()["loss_weights"].items() if k in BUILT_IN_TASKS} == \
        {"semseg": 1.0, "parts": 2.0, "saliency": 5.0, "normals": 10.0, "depth": 1.0, "edge": 50.0}
    assert {t: TASKS.get(t).composite_output for t in BUILT_IN_TASKS} == \
        {"semseg": "anchor", "parts": "anchor", "normals": "normals", "depth": "scalar", "edge": "probability",
         "saliency": "probability"}


BUILT_IN_TASKS = ("semseg", "parts", "depth", "normals", "edge", "saliency")


@pytest.mark.parametrize("name", __import__("trcnas.nas.tasks", fromlist=["TASKS"]).TASKS.names())
def test_every_task_has_one_label_layout_that_pads_flips_and_trains(name):
    """Each task's LabelLayout is the one place for its label's dtype, channels, pad (= ignore) value and flip
    rule: a padded crop and a flip follow it, and the task's loss and aux loss run on such a label."""
    import numpy as np

    from trcnas.nas.data.transforms import RandomCrop, RandomHorizontalFlip, pad_collate
    from trcnas.nas.tasks import TASKS, DatasetInfo

    info = DatasetInfo("s", num_classes=5, num_parts=3, normal_centroids=np.eye(3, dtype=np.float32))
    task = TASKS.build(name, info)
    lay = task.label
    rng = np.random.default_rng(0)
    if lay.channels is None:
        arr = rng.integers(0, 3, (6, 8))
    elif lay.channels == 3:
        v = rng.normal(size=(6, 8, 3))
        arr = v / np.linalg.norm(v, axis=-1, keepdims=True)
    else:
        arr = rng.uniform(0.5, 1.0, (6, 8)) if name == "depth" else (rng.uniform(size=(6, 8)) > 0.5) * 1.0
    y = lay.to_tensor(arr)
    assert y.dtype == lay.dtype and y.shape == ((6, 8) if lay.channels is None else (lay.channels, 6, 8))
    assert task.ignore_value == lay.pad
    sample = {"image": torch.rand(3, 6, 8), name: y}
    crop = RandomCrop((10, 12))(sample, torch.Generator().manual_seed(0))
    assert crop[name].shape[-2:] == (10, 12) and (crop[name][..., 6:, :] == lay.pad).all()
    assert crop["valid"][..., :6, :8].all() and not crop["valid"][..., 6:, :].any()
    flipped = RandomHorizontalFlip(p=1.0)(sample, torch.Generator())[name]
    want = y.flip(-1)
    if lay.flip == "negate_x":
        want = want.clone()
        want[0] = -want[0]
    assert torch.equal(flipped, want)
    batch = pad_collate([crop, {k: v[..., :8, :10] for k, v in crop.items()}])
    assert batch[name].shape[-2:] == (10, 12)
    pred = torch.randn(2, task.out_channels, 10, 12, requires_grad=True)
    loss = task.loss(pred, batch[name]) + task.aux_loss(torch.randn(2, task.aux_regions, 10, 12), batch[name])
    assert torch.isfinite(loss)
    loss.backward()
    assert pred.grad.abs().sum() > 0


@pytest.mark.parametrize("rule", __import__("trcnas.nas.composite.palette", fromlist=["P"]).PALETTE_RULES.names())
def test_every_palette_rule_draws_valid_palettes(rule, tmp_path):
    """Every palette rule gives each pixel one task index of the network's tasks."""
    import numpy as np
    from PIL import Image

    from trcnas.nas.composite.palette import build_palette_rule

    tasks = ["semseg", "depth", "normals", "edge"]
    spec = {"rule": rule}
    if rule == "single":
        spec["task"] = "depth"
    if rule == "semantic":
        spec.update(classes={"floor": "depth"}, default="semseg")
    if rule == "file":
        Image.fromarray(np.indices((16, 16))[1].astype(np.uint8) % 4).save(tmp_path / "p.png")
        spec["path"] = str(tmp_path / "p.png")
    r = build_palette_rule(spec, tasks, class_names=["wall", "floor"])
    torch.manual_seed(0)
    pal = r({"image": torch.rand(2, 3, 16, 16), "semseg": torch.randint(0, 2, (2, 16, 16))})
    assert pal.shape == (2, 16, 16) and pal.dtype == torch.long
    assert pal.min() >= 0 and pal.max() < len(tasks)
    if rule == "single":
        assert (pal == 1).all()


@pytest.mark.parametrize("mtype", __import__("trcnas.nas.families", fromlist=["x"]).model_types())
def test_every_network_keeps_the_contract(mtype):
    """Every network a model type builds (plain networks and space families, fixed and supergraph) is a
    DenseNetwork whose outputs are a NetOutput and whose permutable units are PermutableUnits; the multi-scale /
    ATRC networks are SplitNetworks (importance reuses their encoder)."""
    import numpy as np

    from trcnas.nas.config import load_config
    from trcnas.nas.families import build_model, build_supergraph, is_family
    from trcnas.nas.models.contract import DenseNetwork, PermutableUnit, SplitNetwork
    from trcnas.nas.tasks import DatasetInfo, build_tasks
    from trcnas.spaces import default_architecture, fixed_architecture, load_space

    cfg = load_config("synthetic-mt", ["data.image_size=[64,64]", f"model.type={mtype}"])
    names = cfg.data.tasks
    tasks = build_tasks(names, DatasetInfo("synthetic", num_classes=9, normal_centroids=np.eye(3, dtype=np.float32)))
    batch = {"image": torch.randn(2, 3, 64, 64), **{t: None for t in names}}
    if is_family(mtype):
        space = load_space(mtype)
        arch = fixed_architecture(space, names, "global") if mtype == "atrc" else default_architecture(space, names)
        nets = (build_model(cfg, tasks, architecture=arch), build_supergraph(cfg, tasks, space))
    else:
        nets = (build_model(cfg, tasks),)
        with pytest.raises(UserError, match=f"model.type '{mtype}' is a plain network and takes no architecture"):
            build_model(cfg, tasks, architecture=fixed_architecture(load_space("atrc"), names, "global"))
    for net in nets:
        assert isinstance(net, DenseNetwork)
        out = net.eval().predict(batch)
        assert set(out) <= {"pred", "aux", "inter"} and set(out["pred"]) == set(names)
        units = net.permutable()
        assert all(isinstance(u, PermutableUnit) and u.target in names and u.source in names for u in units)
    fixed = nets[0]
    assert isinstance(fixed, SplitNetwork) == (mtype not in ("composite", "single_task"))
    # ATRC: every pair global; mTEB: 4x3 at scale 1; plain networks and CompositeTasking: no pair units
    want = {"atrc": 16, "mteb": 12}.get(mtype, 0)
    assert len(fixed.permutable()) == want


def test_a_task_from_outside_the_package_trains_and_is_searched(tmp_path, fast_args):
    """tests/plugins/gray_task.py: a task (and the dataset giving its labels) registered from one user file; a
    multi-task network trains on it and an ATRC search uses it as target and source."""
    plugin = str(PLUGINS / "gray_task.py")
    sets = ["--plugin", plugin, "--set", "data.dataset=synthetic_gray", "--set", "data.tasks=[semseg, gray]"]
    assert main(["train", *fast_args, *sets, "--out", str(tmp_path / "t")]) == 0
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert set(m["primary"]) == {"semseg", "gray"} and 0 < m["primary"]["gray"] < 2
    # the task's own metadata: its loss weight is the config's default, its title names it in figures
    stored = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    assert stored["loss_weights"]["gray"] == 2.0 and stored["loss_weights"]["semseg"] == 1.0
    from trcnas.analysis.style import task_label

    assert task_label("gray") == "Gray level"
    assert main(["search", "--local", *fast_args, *sets, "--out", str(tmp_path / "s")]) == 0
    hist = pd.read_csv(tmp_path / "s" / "alpha_history.csv")
    assert {"atrc.gray.semseg:slabel", "atrc.semseg.gray:tlabel"} <= set(hist.columns)


def test_a_space_family_from_outside_the_package_searches_and_retrains(tmp_path, fast_args):
    """tests/plugins/head_kernel.py + headk.yaml: a whole space family from one module and one YAML."""
    sets = ["--plugin", str(PLUGINS / "head_kernel.py"), "--config", "synthetic-mt", "--set", "model.type=headk"]
    assert main(["search", "--local", *fast_args, *sets, "--out", str(tmp_path / "s")]) == 0
    arch = yaml.safe_load((tmp_path / "s" / "architecture.yaml").read_text())
    assert set(arch["choices"]["headk"]) == {"semseg", "depth", "normals", "edge"}
    assert set(arch["choices"]["headk"].values()) <= {1, 3}
    assert main(["retrain", *fast_args, "--architecture", str(tmp_path / "s" / "architecture.yaml"),
                 "--out", str(tmp_path / "r")]) == 0  # the search's config (with its plugin) beside the file
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["architecture"]["choices"] == arch["choices"]
    assert main(["train", *fast_args, *sets, "--architecture", "default", "--out", str(tmp_path / "d")]) == 0
    # the report needs no hook from the family: its decisions are figures and tables like any single space's
    assert main(["report", str(tmp_path)]) == 0
    chosen = pd.read_csv(tmp_path / "figures" / "chosen_decisions.csv")
    assert chosen.astype(str).apply(lambda col: col.str.contains("headk.semseg")).any().any()


def test_ray_and_optuna_read_one_hyperparameter_format():
    """ray.param_space and hpo.params: the same entries give the same ranges to Ray Tune and Optuna; Ray's
    shorthands are the same ranges; grid is Ray's only."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray import tune

    from trcnas.nas.config import load_config
    from trcnas.nas.errors import UserError
    from trcnas.runners.params import parse_params

    # _delete_: the given space replaces the config's (a --set mapping otherwise merges into it)
    space = ("{_delete_: true, search.alpha_lr: {type: float, low: 0.001, high: 0.1, log: true}, "
             "search.alpha_warmup: {type: int, low: 0, high: 400}, "
             "search.mode: {type: categorical, choices: [soft, hard]}}")
    cfg = load_config("synthetic-atrc", [f"ray.param_space={space}", f"hpo.params={space}"])
    ray_p, hpo_p = parse_params(cfg, "ray.param_space"), parse_params(cfg, "hpo.params")
    assert ray_p == hpo_p
    assert hpo_p["search.alpha_lr"].to_optuna("hpo.params") == FloatDistribution(0.001, 0.1, log=True)
    assert hpo_p["search.alpha_warmup"].to_optuna("hpo.params") == IntDistribution(0, 400)
    assert hpo_p["search.mode"].to_optuna("hpo.params") == CategoricalDistribution(["soft", "hard"])
    t = ray_p["search.alpha_warmup"].to_tune()
    assert isinstance(t, tune.search.sample.Integer) and (t.lower, t.upper) == (0, 401)  # Ray's upper excluded
    short = load_config("synthetic-atrc", ["ray.param_space={_delete_: true, "
                                           "search.alpha_lr: {loguniform: [0.001, 0.1]}, "
                                           "search.alpha_warmup: {randint: [0, 401]}, "
                                           "search.mode: {choice: [soft, hard]}}"])
    assert parse_params(short, "ray.param_space") == ray_p
    grid = load_config("synthetic-atrc", ["hpo.params={search.freeze_threshold: {grid: [0.2, 0.3]}}"])
    with pytest.raises(UserError, match="use type categorical"):
        parse_params(grid, "hpo.params")["search.freeze_threshold"].to_optuna("hpo.params")


def test_a_run_stored_by_the_previous_version_resumes(tmp_path, fast_args):
    """A config.yaml written before model.type selected the family (search.space spelled out, a retired debug
    section) is the same run: resuming it is allowed; a real difference is still refused."""
    out = tmp_path / "r"
    argv = ["train", *fast_args, "--config", "synthetic-atrc", "--architecture", "fixed:global", "--out", str(out),
            "--set", "train.steps=2"]
    assert main(argv) == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())
    stored["search"]["space"] = "atrc"
    stored["debug"] = {"crash_after_checkpoint": None}
    (out / "config.yaml").write_text(yaml.safe_dump(stored))
    assert main([*argv[:-2], "--set", "train.steps=3"]) == 2  # steps differ: refused
    argv[-1] = "train.steps=2"
    assert main(argv) == 0  # the same run: resumed (already finished)


def test_a_composite_run_stored_before_its_reference_fixes_resumes_only_with_the_old_settings(tmp_path, fast_args):
    """A CompositeTasking config.yaml without the keys added on 2026-11-22 meant sigmoid normals, block slope 0.2
    and an antialiased palette pyramid: resuming it with today's defaults is refused, with those settings it is
    the same run."""
    out = tmp_path / "c"
    argv = ["train", *fast_args, "--config", "synthetic-composite", "--architecture", "default", "--out", str(out),
            "--set", "train.steps=2"]
    old = ["--set", "model.composite.normals=sigmoid", "--set", "model.composite.block_slope=0.2",
           "--set", "model.composite.palette_antialias=true"]
    assert main([*argv, *old]) == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("anchor_inset", "anchors", "normals", "block_slope", "palette_antialias"):
        del stored["model"]["composite"][key]
    (out / "config.yaml").write_text(yaml.safe_dump(stored))
    assert main(argv) == 2  # today's reading of normals etc.: another run
    assert main([*argv, *old]) == 0  # the settings it was trained with: the same run (already finished)
