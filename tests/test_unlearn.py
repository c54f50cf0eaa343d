import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import CAPABLE
from undo.cli import main
from undo.config import SelectionRule, TrainConfig, validate_config
from undo.training.engine import train
from undo.schema.errors import UserError
from undo.objectives import OBJECTIVES
from undo.objectives.sam import SAM
from undo.stages.pretrain import pretrain
from undo.stages.selection import Candidate, select_teacher
from undo.stages.unlearn import SweepPoint, build_unlearning_objective, sweep_points
from tests.test_engine import tiny_model


def test_sweep_points_cover_every_lr_and_knob_combination():
    cfg = validate_config({"unlearn": {"methods": [
        {"method": "grad_diff", "lrs": [1e-4, 1e-3], "knobs": {"retain_weight": [1.0, 15.0]}},
        {"method": "maxent", "lrs": [3e-4], "sam_rho": 0.05},
    ]}})
    points = sweep_points(cfg)
    assert [(p.label, p.lr, p.knobs) for p in points] == [
        ("grad_diff", 1e-4, (("retain_weight", 1.0),)), ("grad_diff", 1e-4, (("retain_weight", 15.0),)),
        ("grad_diff", 1e-3, (("retain_weight", 1.0),)), ("grad_diff", 1e-3, (("retain_weight", 15.0),)),
        ("maxent+sam", 3e-4, ()),
    ]


def test_unknown_method_and_knob_are_user_errors():
    with pytest.raises(UserError, match=r"unlearn.methods.0: unknown method 'gradascent'; use one of: .*grad_ascent"):
        validate_config({"unlearn": {"methods": [{"method": "gradascent"}]}})
    point = SweepPoint("grad_diff", "grad_diff", 1e-3, (("lambda_", 2.0),), None)
    with pytest.raises(UserError, match="unknown knob 'lambda_' for method 'grad_diff'.*retain_weight"):
        build_unlearning_objective(point, tiny_model(), seed=0)


def test_teacher_selection_rule():
    candidates = [
        Candidate(name="a", retain=0.99, forget=0.40),
        Candidate(name="b", retain=0.96, forget=0.05),  # qualifies (>= 0.95 * 1.0), lowest forget
        Candidate(name="c", retain=0.90, forget=0.00),  # lowest forget but lost too much retain
        Candidate(name="d", retain=0.97, forget=0.05),  # ties b on forget with higher retain -> preferred
    ]
    chosen = select_teacher(candidates, base_retain=1.0, rule=SelectionRule(min_retain_fraction=0.95))
    assert chosen.chosen == "d"
    assert [c.qualifies for c in chosen.candidates] == [True, True, False, True]
    assert chosen.retain_threshold == pytest.approx(0.95)
    nobody = select_teacher([Candidate(name="c", retain=0.5, forget=0.0)], 1.0, SelectionRule())
    assert nobody.chosen is None


def test_sam_perturbs_by_rho_and_restores_the_weights():
    model = tiny_model()
    params = list(model.parameters())
    ids = torch.randint(3, 40, (4, 16), generator=torch.Generator().manual_seed(0))

    def recompute():
        for p in params:
            p.grad = None
        model(input_ids=ids, labels=ids).loss.backward()

    recompute()
    original = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    sam = SAM(OBJECTIVES["lm"](), rho=0.3)
    sam.adjust_gradients(params, recompute)
    assert sam.last_perturbation_norm == pytest.approx(0.3, rel=1e-5)
    assert all(torch.equal(p, o) for p, o in zip(params, original))  # undone exactly
    # The gradient left behind is the one at w + rho * g / ||g||.
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    check = tiny_model()
    with torch.no_grad():
        for p, o, g in zip(check.parameters(), original, grads):
            p.copy_(o + 0.3 * g / norm)
    check(input_ids=ids, labels=ids).loss.backward()
    for p, c in zip(params, check.parameters()):
        torch.testing.assert_close(p.grad, c.grad, rtol=1e-4, atol=1e-6)


def test_sam_accumulates_all_micro_batches_before_perturbing(tmp_path):
    rows = torch.randint(3, 40, (8, 16), generator=torch.Generator().manual_seed(1))

    class TwoHalves:
        def __getitem__(self, i):
            return {"input_ids": rows[(i % 2) * 4:(i % 2) * 4 + 4]}

    # eps 1e-4: Adam divides by sqrt(v) + eps, which would blow float noise in near-zero gradients up to lr.
    cfg = TrainConfig(batch_size=4, grad_accum=2, lr=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.0,
                      clip=None, eps=1e-4, log_every=1, eval_every=100, checkpoint_every=100)
    model = tiny_model()
    train(model, SAM(OBJECTIVES["lm"](), rho=0.5), TwoHalves(), cfg, 1, tmp_path, progress=False)

    # By hand: the full-batch gradient at w, the perturbation from it, the gradient at w + e, one AdamW step.
    manual = tiny_model()
    params = list(manual.parameters())
    manual(input_ids=rows, labels=rows).loss.backward()  # mean over 8 rows = mean of the two half-batch means
    g = [p.grad.clone() for p in params]
    norm = torch.linalg.vector_norm(torch.stack([x.norm() for x in g]))
    original = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, x in zip(params, g):
            p.add_(0.5 * x / norm)
    manual.zero_grad()
    manual(input_ids=rows, labels=rows).loss.backward()
    with torch.no_grad():
        for p, o in zip(params, original):
            p.copy_(o)
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.0},
                                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                                  lr=1e-2, betas=cfg.betas, eps=cfg.eps)
    optimizer.step()
    for a, b in zip(model.parameters(), manual.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_unlearning_sweep_end_to_end_on_a_tiny_base(tmp_path, capsys):
    raw = {**CAPABLE, "run_dir": str(tmp_path / "runs"), "unlearn": {
        "steps": 4, "batch_size": 4, "examples": 300, "eval_every": 2,
        "methods": [{"method": "grad_diff", "lrs": [1e-4, 1e-2]},
                    {"method": "grad_ascent", "lrs": [1e-3], "sam_rho": 0.05}]}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = validate_config(raw)

    def cli(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["unlearn", str(config), "--no-progress", *args])
        return exit_info.value.code, capsys.readouterr()

    code, out = cli()
    assert code == 2 and "no pretrained base model" in out.err
    base = pretrain(cfg, "base", progress=False)
    code, out = cli()
    assert code in (0, None) and "unlearning sweep" in out.out and "<- teacher" in out.out
    selection = json.loads((tmp_path / "runs" / "unlearn_selection.json").read_text())
    assert set(selection) == {"grad_diff", "grad_ascent+sam"}
    base_meta = json.loads((base / "meta.json").read_text())
    base_retain = base_meta["final_metrics"]["retain"]
    base_weights = load_file(base / "model" / "model.safetensors")
    for family in selection.values():
        assert family["base_retain"] == pytest.approx(base_retain)
        qualified = [c for c in family["candidates"] if c["retain"] >= 0.95 * base_retain]
        expected = min(qualified, key=lambda c: (c["forget"], -c["retain"]))["name"] if qualified else None
        assert family["chosen"] == expected  # and None when no run kept enough retain
        for c in family["candidates"]:
            run = tmp_path / "runs" / c["name"]
            meta = json.loads((run / "meta.json").read_text())
            assert meta["kind"] == "unlearn" and meta["steps"] == 4 and meta["inputs"]["base"] == base_meta["key"]
            sides_read = 2 if meta["method"] == "grad_diff" else 1  # gradient ascent never reads the retain half
            assert meta["labelled_tokens"] == 4 * sides_read * 4 * 32  # steps x sides x batch x context
            assert meta["metrics_before"]["retain"] == pytest.approx(base_retain)
            weights = load_file(run / "model" / "model.safetensors")
            assert any(not torch.equal(weights[k], base_weights[k]) for k in weights)
    # The retain rule decided: grad_diff's lowest forget came from the LR that also destroyed retain, not chosen.
    grad_diff = selection["grad_diff"]
    lowest = min(grad_diff["candidates"], key=lambda c: c["forget"])
    assert lowest["retain"] < 0.95 * base_retain and grad_diff["chosen"] not in (None, lowest["name"])
    sam_run = tmp_path / "runs" / selection["grad_ascent+sam"]["candidates"][0]["name"]
    sam_meta = json.loads((sam_run / "meta.json").read_text())
    assert sam_meta["flops"]["train"] == 2 * sam_meta["tokens"] * base_meta["flops_per_token"]  # two passes/step
    stamp = (sam_run / "meta.json").stat().st_mtime_ns
    assert cli()[0] in (0, None) and (sam_run / "meta.json").stat().st_mtime_ns == stamp  # complete: not rerun


