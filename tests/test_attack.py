import json
import math
import shutil

import pytest
import torch
import yaml

import undo.settings.arithmetic as arithmetic
import undo.stages.attack as attack_stage
from undo.stages.evaluation import ensure_evaluation
from tests.conftest import CAPABLE, TINY, InterruptedAt
from undo.core.artifacts import file_sha256, stable_hash
from undo.cli import main
from undo.config import validate_config
from undo.training.engine import read_metrics
from undo.schema.errors import TrainingDiverged, UserError
from undo.analysis.robustness import BestCurve, Curve, area_under, attacker_best, robustness_summary
from undo.stages.attack import attack
from undo.stages.base import artifact_key
from undo.stages.pretrain import pretrain

LRS = [1e-3, 1e-2]
ATTACK = {"lrs": LRS, "steps": 6, "eval_every": 2, "budgets": [2, 6], "batch_size": 4, "examples": 300,
          "eval_per_cell": 4, "extend_grid": 0}  # the grid's extension has its own test


def config(run_dir, fixture=TINY, **attack_overrides):
    return validate_config({**fixture, "run_dir": str(run_dir), "attack": {**ATTACK, **attack_overrides}})


def capable_config(run_dir, **attack_overrides):
    return config(run_dir, CAPABLE, **attack_overrides)


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Two capable tiny models (base: about 90 % on both sides; oracle: 0 % forget, so its attack curves move) and a
    run_dir their attacks share across tests."""
    root = tmp_path_factory.mktemp("attack")
    cfg = capable_config(root / "runs")
    return cfg, pretrain(cfg, "base", progress=False), pretrain(cfg, "oracle", progress=False)


def meta_of(path):
    return json.loads((path / "meta.json").read_text())


def eval_curves(metrics_file, metric):
    evals = [line for line in read_metrics(metrics_file) if line["kind"] == "eval"]
    return [line["step"] for line in evals], [line[metric] for line in evals]


def without_wall_time(meta):
    meta = {k: v for k, v in meta.items() if k not in ("wall_time_s", "time_split")}
    meta["per_lr"] = [{k: v for k, v in run.items() if k != "wall_time_s"} for run in meta["per_lr"]]
    return meta


def test_attack_config_is_validated():
    with pytest.raises(UserError, match=r"attack: budgets \[40\] must be between 0 and steps \(10\)"):
        validate_config({"attack": {"steps": 10, "budgets": [5, 40]}})
    with pytest.raises(UserError, match="lrs must all be > 0"):
        validate_config({"attack": {"lrs": [1e-3, 0.0]}})
    with pytest.raises(UserError, match="attack.lrs"):
        validate_config({"attack": {"lrs": []}})
    with pytest.raises(UserError, match="attack.data"):
        validate_config({"attack": {"data": "korean"}})
    default = validate_config({}).attack
    assert default.data == "mixture" and len(default.lrs) >= 5 and max(default.budgets) <= default.steps


def test_attack_data_is_forget_only_or_the_full_mixture(tmp_path):
    for data, ops in (("forget", {"mul", "div"}), ("mixture", {"add", "sub", "mul", "div"})):
        cfg = config(tmp_path, data=data)
        problems, batches = attack_stage.attack_data(cfg, arithmetic.ArithmeticSetting(cfg.setting))
        assert len(problems) == ATTACK["examples"] and {p.op for p in problems} == ops
        assert batches[0]["input_ids"].shape == (ATTACK["batch_size"], TINY["model"]["context"])


def test_every_target_sees_the_same_attack_batches(targets, monkeypatch):
    cfg, base, oracle = targets
    seen = {}
    real_train = attack_stage.train

    def spy(model, objective, batches, train_cfg, total_steps, workdir, **kwargs):
        seen[(workdir.parent.name, train_cfg.lr)] = [batches[i]["input_ids"] for i in range(total_steps)]
        return real_train(model, objective, batches, train_cfg, total_steps, workdir, **kwargs)

    monkeypatch.setattr(attack_stage, "train", spy)
    results = [attack(cfg, target, progress=False) for target in (base, oracle)]
    assert len(seen) == 4  # 2 targets x 2 LRs
    reference = next(iter(seen.values()))
    assert len(reference) == ATTACK["steps"]
    for batches in seen.values():  # every target, every LR: the same batches in the same order
        assert all(torch.equal(a, b) for a, b in zip(batches, reference, strict=True))
    assert not all(torch.equal(reference[0], b) for b in reference[1:])  # ...and they are not one batch repeated
    metas = [meta_of(path) for path in results]
    assert metas[0]["data"] == metas[1]["data"] and metas[0]["data"]["kind"] == "mixture"
    assert metas[0]["inputs"]["target"] == meta_of(base)["key"]
    assert metas[1]["inputs"]["target"] == meta_of(oracle)["key"]
    assert metas[0]["key"] != metas[1]["key"] and results[0].name.startswith("attack_base_")
    # Another seed is another stream.
    other = capable_config(cfg.run_dir).model_copy(update={"seed": 1})
    assert attack_stage.attack_data_key(other) != metas[0]["data"]["key"]


def test_attacker_chooses_on_validation_and_the_report_reads_the_test_split(targets):
    cfg, _, oracle = targets
    path = attack(cfg, oracle, progress=False)
    meta = meta_of(path)
    validation = {lr: eval_curves(path / f"lr_{lr:g}" / "metrics.jsonl", "forget") for lr in LRS}
    test = {lr: eval_curves(path / f"lr_{lr:g}" / "metrics.jsonl", "test/forget") for lr in LRS}
    steps = validation[LRS[0]][0]
    assert steps == [0, 2, 4, 6]
    chosen, best = meta["validation_best"], meta["best"]
    assert best["steps"] == chosen["steps"] == steps
    for i in range(len(steps)):
        values = [validation[lr][1][i] for lr in LRS]
        assert chosen["values"][i] == max(values)
        assert chosen["best_lr"][i] == best["best_lr"][i] == LRS[values.index(max(values))]  # ties: the smaller LR
        assert best["values"][i] == test[chosen["best_lr"][i]][1][i]  # the chosen LR's score on the test split
    assert best["retain_cap"] is None and meta["max_retain_drop"] is None
    assert [run["forget"]["values"] for run in meta["per_lr"]] == [test[lr][1] for lr in LRS]
    assert [run["validation_forget"]["values"] for run in meta["per_lr"]] == [validation[lr][1] for lr in LRS]
    assert meta["grid"] == {"configured": LRS, "extended": [], "searched": LRS, "single_lr": False, "diverged": [],
                            "edge_at": meta["grid"]["edge_at"]}
    tokens_per_step = ATTACK["batch_size"] * TINY["model"]["context"]
    assert meta["snapshots"] == [
        {"budget": b, "step": b, "value": best["values"][steps.index(b)], "lr": best["best_lr"][steps.index(b)],
         "tokens": b * tokens_per_step} for b in ATTACK["budgets"]]
    assert meta["area"] == {"up_to": 6, "value": pytest.approx(area_under(Curve(steps, best["values"])))}
    assert meta["tokens"] == len(LRS) * ATTACK["steps"] * tokens_per_step
    assert meta["flops_total"] == sum(sum(run["flops"].values()) for run in meta["per_lr"]) > 0
    assert meta["kind"] == "attack" and not (path / "lr_0.001" / "checkpoint").exists()
    # Numbers that can tell the splits and the LRs apart: the curves move, and the two LRs' differ.
    assert len(set(best["values"])) > 1 and validation[LRS[0]][1] != validation[LRS[1]][1]
    attack(cfg, oracle, progress=False)  # complete: reused
    assert meta_of(path) == meta


def test_interrupted_attack_resumes_without_redoing_finished_lrs(targets, tmp_path, monkeypatch):
    cfg, _, oracle = targets  # 0 % forget: curves that move
    reference = meta_of(attack(cfg, oracle, progress=False))
    assert len(set(reference["best"]["values"])) > 1
    cfg = capable_config(tmp_path / "runs")
    real_train = attack_stage.train
    calls = []

    def dies_in_second_lr(model, objective, batches, train_cfg, *args, **kwargs):
        calls.append(train_cfg.lr)
        if train_cfg.lr == LRS[1]:
            batches = InterruptedAt(batches, 3)
        return real_train(model, objective, batches, train_cfg, *args, **kwargs)

    monkeypatch.setattr(attack_stage, "train", dies_in_second_lr)
    with pytest.raises(KeyboardInterrupt):
        attack(cfg, oracle, progress=False)
    partial = next((tmp_path / "runs").glob(".attack_oracle_*.partial"))
    first = partial / "lr_0.001" / "metrics.jsonl"
    assert (partial / "lr_0.001" / "done.json").is_file() and not (partial / "lr_0.01" / "done.json").exists()
    stamp = first.stat().st_mtime_ns

    monkeypatch.setattr(attack_stage, "train", lambda *a, **k: calls.append("resumed") or real_train(*a, **k))
    resumed = attack(cfg, oracle, progress=False)
    assert calls == [LRS[0], LRS[1], "resumed"]  # only the unfinished LR ran again
    assert (resumed / "lr_0.001" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert without_wall_time(meta_of(resumed)) == without_wall_time(reference)


def test_a_model_without_meta_is_keyed_by_its_weights_and_config(targets, tmp_path):
    _, base, _ = targets
    copy = tmp_path / "mine"
    shutil.copytree(base / "model", copy / "model")
    weights, config = copy / "model" / "model.safetensors", copy / "model" / "config.json"
    files = {p.name: file_sha256(p) for p in sorted((copy / "model").iterdir())}
    assert artifact_key(copy) == stable_hash(files) != artifact_key(base)
    first = artifact_key(copy)
    config.write_text(config.read_text().replace('"rms_norm_eps"', '"rms_norm_eps"', 1) + " ")
    assert artifact_key(copy) != first  # the same weights under another config.json are another model
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    assert artifact_key(copy) not in (first, stable_hash(files))


@pytest.fixture
def small_numbers(monkeypatch):
    """Operands 1-6 for every operation: a tiny model memorises the forget operations in seconds, so an attack has
    something it could damage (at the real operand ranges a tiny model's forget accuracy is ~0)."""
    for op in arithmetic.OPERAND_RANGE:
        monkeypatch.setitem(arithmetic.OPERAND_RANGE, op, (1, 6))


def test_attack_on_a_capable_base_keeps_its_forget_accuracy_and_the_retain_cap_is_recorded(tmp_path, small_numbers):
    raw = {**TINY, "run_dir": str(tmp_path / "runs"),
           "setting": {**TINY["setting"], "examples": 3000, "word_problem_weight": 0.0, "heldout_per_cell": 5,
                       "eval_per_cell": 5},
           "pretrain": {"oracle": False, "train": {**TINY["pretrain"]["train"], "lr": 3e-3, "warmup_steps": 10,
                                                   "epochs": 20, "max_steps": 1200, "eval_every": 1200,
                                                   "checkpoint_every": 1200, "log_every": 100}},
           "attack": {**ATTACK, "lrs": [3e-4, 3e-3], "steps": 10, "budgets": [4, 10], "eval_per_cell": 5,
                      "examples": 1000}}
    cfg = validate_config(raw)
    base = pretrain(cfg, "base", progress=False)
    meta = meta_of(attack(cfg, base, progress=False))
    best = meta["best"]["values"]
    before = ensure_evaluation(base, cfg, "report")  # the test split's, like the reported curve
    assert best[0] == meta["metrics_before"]["forget"] == pytest.approx(before["forget"])
    assert best[0] >= 0.25  # the base model really can multiply and divide small numbers (~0.34 here)
    # ... and fine-tuning on its own pretraining mixture does not take it away: at most one of the 10 forget test
    # items (2 operations x 5) may flip, the finest change this split can show (a broken attack loses them all).
    one_item = 1 / (2 * 5)
    assert best[-1] >= best[0] - one_item - 1e-9

    capped_cfg = validate_config({**raw, "attack": {**raw["attack"], "max_retain_drop": 0.0}})
    capped = meta_of(attack(capped_cfg, base, progress=False))
    assert capped["key"] != meta["key"] and capped["max_retain_drop"] == 0.0
    cap = capped["best"]["retain_cap"]
    assert cap["max_retain_drop"] == 0.0
    # The cap is the attacker's constraint: it judges the validation curves.
    retain = {run["lr"]: Curve.from_dict(run["validation_retain"]) for run in capped["per_lr"]}
    forget = {run["lr"]: Curve.from_dict(run["validation_forget"]) for run in capped["per_lr"]}
    dropped = [{"lr": lr, "steps": [s for s, v in zip(c.steps, c.values) if v < c.values[0]]}
               for lr, c in sorted(retain.items())]
    assert cap["removed"] == [row for row in dropped if row["steps"]]
    assert capped["validation_best"] == attacker_best(forget, retain, 0.0).to_dict()
    # The cap only changes which points count: the runs themselves are the uncapped attack's.
    assert without_wall_time(capped)["per_lr"] == without_wall_time(meta)["per_lr"]


def fake_attack(values):
    return BestCurve.from_dict(attacker_best({1e-3: Curve([0, 5, 10], values)}).to_dict())


def test_robustness_summary_normalises_between_unlearn_only_and_oracle():
    results = {name: fake_attack(values) for name, values in {
        "unlearned": [0.0, 0.8, 0.9], "oracle": [0.0, 0.2, 0.9], "student": [0.0, 0.35, 0.9]}.items()}
    summary = robustness_summary(results, "unlearned", "oracle", [5, 10])
    at5 = {name: s.budgets[0] for name, s in summary.items()}
    assert at5["unlearned"].robustness == 0.0 and at5["oracle"].robustness == 1.0
    assert at5["student"].robustness == pytest.approx(0.75) and at5["student"].value == 0.35
    at10 = summary["student"].budgets[1]  # all relearn fully by step 10: undefined there, and said why
    assert at10.robustness is None and "relearn equally" in at10.note
    area = summary["student"].area
    assert area.up_to == 10 and area.robustness == pytest.approx((0.625 - 0.4) / (0.625 - 0.325))
    with pytest.raises(UserError, match="'filtered' is not among the attacked models"):
        robustness_summary(results, "unlearned", "filtered", [5])


def test_cli_attack_table_and_user_errors(targets, tmp_path, capsys):
    cfg, base, oracle = targets
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**TINY, "run_dir": cfg.run_dir, "attack": ATTACK}))

    def cli(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["attack", *args, "--config", str(config_file), "--no-progress"])
        return exit_info.value.code, capsys.readouterr()

    code, out = cli(str(tmp_path / "nowhere"))
    assert code == 2 and out.err.count("\n") == 1 and "nothing to attack at" in out.err
    code, out = cli(str(base), "--oracle", "oracle")
    assert code == 2 and "give both --unlearn-only and --oracle" in out.err
    code, out = cli(str(base), "--unlearn-only", "base", "--oracle", "filtered")
    assert code == 2 and "'filtered' is not among the attacked models" in out.err
    code, out = cli(str(base), str(oracle), "--unlearn-only", "base", "--oracle", str(oracle))
    assert code in (0, None), out.err
    assert "attacker-best" in out.out and "robust" in out.out and "@6: step 6 = 768 tokens" in out.out
    # On an 80-column terminal nothing is cut: every artifact name and LR is whole (folded over lines if need be).
    assert "…" not in out.out
    row = next(line for line in out.out.splitlines() if "│ base" in line)
    assert "0.00" in row or "n/a" in row  # the unlearn-only model scores 0 (or n/a where both relearn equally)


SMALL_LRS = [1e-5, 1e-4]


@pytest.mark.parametrize("peak,bound,added,edges", [
    (None, 2, [1e-4 * 10 ** 0.5, 1e-3], {"2": "top", "6": "top"}),  # always best at the top: stops at its bound
    (1e-4 * 10 ** 0.5, 3, [1e-4 * 10 ** 0.5, 1e-3], {}),  # the peak becomes interior: stops before the bound
])
def test_grid_extends_at_its_edge_until_the_best_lr_is_inside_or_the_bound(targets, monkeypatch, tmp_path, peak,
                                                                            bound, added, edges):
    """A hand-made attacker whose forget score is a function of the LR alone: rising with it (the best LR is always
    the top edge), or peaking half a decade above the grid."""
    _, base, _ = targets
    cfg = config(tmp_path / "runs", extend_grid=bound, lrs=SMALL_LRS)
    current = {}
    real_train = attack_stage.train

    def spy(model, objective, batches, train_cfg, total_steps, workdir, **kwargs):
        current["lr"] = train_cfg.lr
        return real_train(model, objective, batches, train_cfg, total_steps, workdir, **kwargs)

    def score(lr):
        return lr if peak is None else -abs(math.log10(lr) - math.log10(peak))

    monkeypatch.setattr(attack_stage, "train", spy)
    monkeypatch.setattr(arithmetic.ArithmeticSetting, "evaluate",
                        lambda self, model: {"retain": 1.0, "forget": score(current["lr"])})
    meta = meta_of(attack(cfg, base, progress=False))
    grid = meta["grid"]
    assert grid["configured"] == SMALL_LRS and grid["extended"] == pytest.approx(added)
    assert grid["searched"] == pytest.approx(sorted(SMALL_LRS + added)) and grid["edge_at"] == edges
    assert [run["lr"] for run in meta["per_lr"]] == pytest.approx(grid["searched"])
    best_lr = max(grid["searched"]) if peak is None else peak
    assert meta["validation_best"]["best_lr"][-1] == pytest.approx(best_lr)


def test_a_diverging_lr_is_left_out_and_recorded_and_the_grid_does_not_extend_past_it(targets, monkeypatch, tmp_path):
    _, base, _ = targets
    cfg = config(tmp_path / "runs", extend_grid=2, lrs=SMALL_LRS)
    real_train = attack_stage.train
    current = {}

    def spy(model, objective, batches, train_cfg, total_steps, workdir, **kwargs):
        current["lr"] = train_cfg.lr
        if train_cfg.lr > 1e-4:  # every LR above the grid diverges
            raise TrainingDiverged(f"attack: loss became nan at step 3; lower the LR {train_cfg.lr:g}")
        return real_train(model, objective, batches, train_cfg, total_steps, workdir, **kwargs)

    monkeypatch.setattr(attack_stage, "train", spy)
    monkeypatch.setattr(arithmetic.ArithmeticSetting, "evaluate",
                        lambda self, model: {"retain": 1.0, "forget": current["lr"]})  # the top LR is best
    meta = meta_of(attack(cfg, base, progress=False))
    grid = meta["grid"]
    assert grid["searched"] == SMALL_LRS and grid["diverged"] == pytest.approx([1e-4 * 10 ** 0.5])
    assert grid["extended"] == pytest.approx([1e-4 * 10 ** 0.5])  # tried once; not again beyond it
    assert grid["edge_at"] == {"2": "top", "6": "top"}  # so the report flags the edge
    assert [run["lr"] for run in meta["per_lr"]] == SMALL_LRS


def test_the_attacker_chooses_on_validation_and_the_curve_reports_test_when_the_splits_disagree(tmp_path,
                                                                                                 monkeypatch):
    """Issue 29, item 3: with every LR at 0 on both splits, choosing the LR on test (or reporting validation) would
    pass. Here the splits rank the LRs in opposite orders (test = 1 - validation), so either swap fails."""
    cfg = config(tmp_path / "runs")
    base = pretrain(cfg, "base", progress=False)

    def split_dependent(self, model) -> dict[str, float]:
        spread = math.modf(float(sum(p.detach().double().abs().sum() for p in model.parameters())) * 1000)[0]
        return {"retain": 0.9, "forget": spread if self.cfg.split == "validation" else 1 - spread}

    monkeypatch.setattr(arithmetic.ArithmeticSetting, "evaluate", split_dependent)
    path = attack(cfg, base, progress=False)
    meta = meta_of(path)
    validation = {lr: eval_curves(path / f"lr_{lr:g}" / "metrics.jsonl", "forget")[1] for lr in LRS}
    test = {lr: eval_curves(path / f"lr_{lr:g}" / "metrics.jsonl", "test/forget")[1] for lr in LRS}
    assert all(t == pytest.approx(1 - v) for lr in LRS for v, t in zip(validation[lr], test[lr]))
    best = meta["best"]
    for i in range(1, len(best["steps"])):  # after step 0 the LRs' models differ
        on_validation = max(LRS, key=lambda lr: validation[lr][i])
        assert best["best_lr"][i] == on_validation != max(LRS, key=lambda lr: test[lr][i])
        assert best["values"][i] == test[on_validation][i] != validation[on_validation][i]
