"""`undo verify [RUN_DIR]`: every artifact, work in progress and cache of a run directory checked against its own
records (meta.json and the hashes of its model files; a checkpoint's checksums; a cache's file record), and, with
`--repair`, every damaged one set aside (renamed, not deleted) so that the next `undo run` recomputes it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from undo.core.artifacts import CHECKSUMS, STAMPS, content_problems, verified_meta
from undo.schema.errors import UserError
from undo.schema.study import MANIFEST, Manifest


@dataclass(frozen=True)
class Finding:
    path: Path
    status: str  # "ok", "in progress", "damaged", "set aside"
    detail: str = ""

    @property
    def damaged(self) -> bool:
        return self.status == "damaged"


def checkpoint_finding(partial: Path) -> Finding:
    """A work-in-progress folder: where it would resume, or why its checkpoint cannot be resumed from (the engine's
    own check, `Checkpoint.damage`: the stage sets such a checkpoint aside and starts over by itself)."""
    from undo.training.engine import Checkpoint

    steps = []
    for folder in sorted(p for p in partial.rglob("checkpoint") if p.is_dir()):
        checkpoint = Checkpoint(folder)
        try:
            run_key = json.loads((folder / "state.json").read_text()).get("run_key", "")
        except (OSError, ValueError, AttributeError) as err:
            run_key, damage = None, f"state.json unreadable: {type(err).__name__}"
        if run_key is not None:
            damage = checkpoint.damage(run_key, folder.parent / "metrics.jsonl")
        if damage is not None:
            return Finding(partial, "damaged", f"{folder}: {damage} (the stage sets it aside and starts over by "
                                               "itself)")
        steps.append(checkpoint.step())
    return Finding(partial, "in progress", f"resumes at step {max(steps)}" if steps else "starts from step 0")


def cache_findings(cache: Path) -> list[Finding]:
    findings = []
    for folder in sorted(p for p in cache.glob("*/*") if p.is_dir() and ".damaged-" not in p.name):
        try:
            problems = content_problems(folder, json.loads((folder / CHECKSUMS).read_text()), folder / STAMPS)
        except (OSError, ValueError):
            problems = ["its record of its files is missing or unreadable"]
        findings.append(Finding(folder, "damaged", problems[0]) if problems else Finding(folder, "ok"))
    return findings


def verify_run_dir(run_dir: Path) -> list[Finding]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir}; give the run_dir of a study (e.g. runs/demo)")
    findings = []
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if folder.name == "cache":
            findings += cache_findings(folder)
        elif folder.name.endswith("_figures") or folder.name in (".locks", "tracking"):  # report figures; lock
            continue  # files; a tracker's view of the metrics (undo.core.tracking), which no stage reads
        elif ".damaged-" in folder.name:
            findings.append(Finding(folder, "set aside", "kept for inspection; delete it when done"))
        elif folder.name.startswith(".") and folder.name.endswith(".partial"):
            findings.append(checkpoint_finding(folder))
        elif (folder / "meta.json").is_file():
            try:
                verified_meta(folder)
                findings.append(Finding(folder, "ok"))
            except UserError as err:
                findings.append(Finding(folder, "damaged", str(err).split("; delete")[0]))
        else:
            findings.append(Finding(folder, "damaged", "not an artifact (no meta.json): an interrupted copy, or a "
                                                       "folder someone put here"))
    if (run_dir / MANIFEST).is_file():
        try:
            Manifest.read(run_dir)
            findings.append(Finding(run_dir / MANIFEST, "ok"))
        except UserError as err:
            findings.append(Finding(run_dir / MANIFEST, "damaged", str(err)))
    return findings


def set_aside(findings: list[Finding]) -> list[Path]:
    """Rename every damaged artifact and cache (not work in progress, which repairs itself) out of the way."""
    moved = []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for finding in findings:
        if finding.damaged and finding.path.is_dir() and not finding.path.name.endswith(".partial"):
            aside = finding.path.with_name(f"{finding.path.name}.damaged-{stamp}")
            finding.path.rename(aside)
            moved.append(aside)
    return moved
