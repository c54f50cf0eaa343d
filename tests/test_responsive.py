"""The responsive loop, first part: `undo unlearn --from` starts unlearning from any finished model artifact (a
previous teacher) with the user's own forget documents (`unlearn.forget_data`, e.g. outputs seen with `undo probe`);
the new artifact's lineage runs through its start, so its labels and FLOPs add to those of the start."""

from __future__ import annotations

import json
import shutil

import yaml

from tests.studies import study_config
from tests.test_bad_inputs import run_cli
from undo.analysis.accounting import accounting_of
from undo.api import unlearn
from undo.config import validate_config
from undo.schema.io import read_result
from undo.stages.evaluation import setting_for
from undo.stages.labels import documents_read


def test_a_round_from_a_teacher_on_observed_documents_adds_to_its_lineage(finished_study, tmp_path):
    run_dir = tmp_path / "runs"
    shutil.copytree(finished_study, run_dir)
    teacher = next(p.parent for p in run_dir.glob("unlearn_maxent_*/meta.json"))
    cfg = validate_config(study_config(finished_study))
    observed = tmp_path / "observed.txt"
    texts = sorted({d.text for d in setting_for(cfg).labelled_documents("forget", 12, seed=5)})
    observed.write_text("\n".join(texts) + "\n")
    raw = study_config(run_dir, unlearn={"methods": [{"method": "maxent", "lrs": [1e-3]}],
                                         "forget_data": str(observed)})
    cfg = validate_config(raw)
    chosen = unlearn(cfg, start=teacher, progress=False)
    assert not (run_dir / "unlearn_selection.json").exists()  # a round's choices never overwrite the base's
    assert json.loads((run_dir / f"unlearn_selection_from_{teacher.name}.json").read_text())
    new = run_dir / chosen["maxent"].candidates[0].path
    meta, start, base = read_result(new), read_result(teacher), read_result(run_dir / "base")
    assert meta.inputs == {"base": start.key}
    accounting = accounting_of(new)
    assert accounting.labelled_tokens == meta.labelled_tokens + start.labelled_tokens > start.labelled_tokens
    assert accounting.lineage_flops == meta.flops_total + start.flops_total + base.flops_total
    assert accounting.lineage == [new.name, teacher.name, "base"]
    read = documents_read(cfg, setting_for(cfg))
    assert {d.text for d in read["forget"]} <= set(texts)  # its forget side is the user's file
    # `unlearn.start` in the config is the same request as --from: the same runs, reused.
    from_config = validate_config({**raw, "unlearn": {**raw["unlearn"], "start": str(teacher)}})
    assert unlearn(from_config, progress=False) == chosen
    # Another file is another artifact (its contents count, not its name).
    observed.write_text("\n".join(texts[:3]) + "\n")
    again = unlearn(cfg, start=teacher, progress=False)
    assert again["maxent"].candidates[0].path != chosen["maxent"].candidates[0].path


def test_a_bad_start_or_forget_file_is_one_line(finished_study, tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_config(tmp_path / "runs")))
    assert "not a finished model artifact" in run_cli(["unlearn", config, "--from", tmp_path], capsys)
    attack = next(p.parent for p in finished_study.glob("attack_*/meta.json"))
    assert "not a finished model artifact" in run_cli(["unlearn", config, "--from", attack], capsys)
    assert "forget_data: no file at" in run_cli(
        ["unlearn", config, "--set", f"unlearn.forget_data={tmp_path / 'missing.txt'}"], capsys)
    assert not (tmp_path / "runs").exists()
