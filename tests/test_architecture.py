import json
import re

import numpy as np
import pytest
import yaml

from trcnas.nas.genotype import from_genotype
from trcnas.runners.cli import main
from trcnas.spaces import fixed_architecture, load_architecture, load_space
from trcnas.spaces.architecture import from_dict
from trcnas.spaces.errors import UserError

TASKS = ["semseg", "depth", "normals", "edge"]


def _arch():
    return from_genotype({"data": {t: {s: (i + j) % 5 if t != s else 3 for j, s in enumerate(TASKS)}
                                   for i, t in enumerate(TASKS)}, "step": 7})


def test_space_expands_pairs_without_self_slabel():
    space = load_space("atrc")
    ds = space.decisions(TASKS)
    assert len(ds) == 16
    for d in ds:
        _, t, s = d.path
        assert ("slabel" in d.candidates) == (t != s)
        assert d.candidates[0] == "none"


def test_space_restrict():
    space = load_space("atrc")
    space.restrict = {"*": {"edge": ["none", "global"]}}
    d = {x.path: x.candidates for x in space.decisions(TASKS)}
    assert d[("atrc", "semseg", "edge")] == ("none", "global")
    assert d[("atrc", "edge", "edge")] == ("none", "global")


def test_genotype_imports_right_names():
    g = {"data": {"semseg": {"semseg": 3, "depth": 1}, "depth": {"semseg": 4, "depth": 2}}, "step": 40000}
    arch = from_genotype(g)
    assert arch.choices["atrc"]["semseg"] == {"semseg": "tlabel", "depth": "global"}
    assert arch.choices["atrc"]["depth"] == {"semseg": "slabel", "depth": "local"}
    assert arch.search["step"] == 40000


def test_roundtrip_yaml(tmp_path):
    arch = _arch()
    p = arch.save(tmp_path / "a.yaml")
    again = load_architecture(p)
    assert again.to_dict() == arch.to_dict()
    assert yaml.safe_load(p.read_text())["format"] == "trcnas-architecture/1"


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["choices"]["atrc"]["semseg"].update(depth="teleport"), "not one of"),
    (lambda d: d["choices"]["atrc"]["semseg"].pop("edge"), "missing choice for atrc.semseg.edge"),
    (lambda d: d["choices"]["atrc"]["depth"].update(depth="slabel"), "not one of"),
    (lambda d: d.update(format="v0"), "format must be one of trcnas-architecture/1, got 'v0'"),
    (lambda d: d.update(colour=1), "unknown key 'colour'"),
    (lambda d: d.pop("tasks"), "tasks is missing"),
    (lambda d: d.update(tasks="semseg"), "tasks must be a list, got 'semseg'"),
    (lambda d: d.update(choices=[1]), "choices must be a mapping, got [1]"),
    (lambda d: d.update(space_spec=3), "space_spec must be a mapping"),
])
def test_invalid_architecture_rejected(mutate, match):
    d = json.loads(json.dumps(_arch().to_dict()))
    mutate(d)
    with pytest.raises(UserError, match=re.escape(match)):
        from_dict(d)


SPACE = {"format": "trcnas-space/1", "name": "s", "per": "single", "decisions": {"a": [1, 2]}}


@pytest.mark.parametrize("change,match", [
    ({"format": "x"}, "s.yaml: format must be one of trcnas-space/1, got 'x'"),
    ({"per": "pair"}, "s.yaml: per must be one of task_pair, single, got 'pair'"),
    ({"per": "task_pair"}, "s.yaml: a task_pair space needs candidates"),
    ({"decisions": None}, "s.yaml: a single space needs decisions"),
    ({"decisions": {"a": []}}, "s.yaml: decisions.a must be a list of candidates or {subset: [elements]}, got []"),
    ({"decisions": {"a": {"subset": []}}}, "decisions.a must be a list of candidates or {subset: [elements]}"),
    ({"defaults": [1]}, "s.yaml: defaults must be a mapping, got [1]"),
    ({"colour": 1}, "s.yaml: unknown key 'colour'"),
    ({"exclude_self": 3}, "s.yaml: exclude_self must be a list of candidates or {candidate: substitute}"),
    ({"restrict": {"x": ["a"]}}, "s.yaml: restrict.x must be a mapping, got ['a']"),
])
def test_invalid_space_is_one_line_naming_the_key(change, match):
    from trcnas.spaces.space import SearchSpace

    with pytest.raises(UserError) as e:
        SearchSpace.from_dict({**SPACE, **change}, "s.yaml")
    assert match in str(e.value)
    ok = SearchSpace.from_dict({**SPACE, "decisions": {"a": [1, 2], "b": {"subset": [0, 1]}}}, "s.yaml")
    assert ok.group == "s" and ok.decisions_spec == {"a": [1, 2], "b": {"subset": [0, 1]}} and ok.defaults == {}


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    d = _arch().to_dict()
    d["tasks"] = ["semseg", "telepathy"]
    d["choices"]["atrc"]["telepathy"] = {"semseg": "none", "telepathy": "none"}
    d["choices"]["atrc"]["semseg"] = {"semseg": "none", "telepathy": "none"}
    bad.write_text(yaml.safe_dump(d))
    assert main(["export", str(bad), "--out", str(tmp_path / "o.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'telepathy'" in err[0]
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"data": {"semseg": {"semseg": 9}}}))
    assert main(["export", str(g), "--out", str(tmp_path / "o.yaml")]) == 2
    assert "code 0..4" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"data": {"semseg": {"semseg": 3, "depth": 0}, "depth": {"semseg": 1, "depth": 2}}}))
    assert main(["export", str(good), "--out", str(tmp_path / "o.yaml")]) == 0
    assert load_architecture(tmp_path / "o.yaml").choices["atrc"]["depth"]["semseg"] == "global"


def test_fixed_variants_cover_every_pair():
    space = load_space("atrc")
    a = fixed_architecture(space, TASKS, "slabel")
    a.validate(space)
    assert a.choices["atrc"]["semseg"]["semseg"] == "tlabel" and a.choices["atrc"]["semseg"]["depth"] == "slabel"


def test_fixed_network_builds_only_chosen_blocks_and_needed_aux():
    from trcnas.nas.config import load_config
    from trcnas.nas.families import build_model
    from trcnas.nas.models.context import GlobalContext, LocalContext, SLabelContext, TLabelContext
    from trcnas.nas.tasks import DatasetInfo, build_tasks

    g = {"data": {"semseg": {"semseg": 3, "depth": 0}, "depth": {"semseg": 2, "depth": 0}}}
    arch = from_genotype(g)
    cfg = load_config("synthetic-atrc", ["data.tasks=[semseg, depth]"])
    tasks = build_tasks(["semseg", "depth"], DatasetInfo("s", num_classes=9, normal_centroids=np.eye(3)))
    model = build_model(cfg, tasks, architecture=arch)
    blocks = [type(m) for m in model.modules() if isinstance(m, (GlobalContext, LocalContext, TLabelContext,
                                                                 SLabelContext))]
    assert sorted(b.__name__ for b in blocks) == ["LocalContext", "TLabelContext"]
    assert set(model.aux) == {"semseg"}  # only the T-label block reads aux logits
    assert set(model.distill.fusion) == {"semseg", "depth"}
    # the fusion of 'depth' takes exactly one message of C/2 channels
    assert model.distill.fusion["depth"].reduce[0].in_channels == model.distill.attn_channels
    mt = build_model(load_config("synthetic-mt", ["data.tasks=[semseg, depth]"]), tasks)
    assert len(mt.aux) == 0  # the multi-task baseline has no aux heads
