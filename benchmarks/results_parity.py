"""Do two studies report the same numbers? Compares two `results.json` files, artifact names, stage keys, paths and
wall times aside, and prints every number that differs.

Run:  python benchmarks/results_parity.py OLD/results.json NEW/results.json [--kind lora]

Either file may use the schema before the stage/manifest redesign (one `attack` and one `robustness` per model,
claims not split by attack kind, selection keyed "seed N"), the one before the typed claims (no `id` in a claim) or
the current one (`attacks` and `robustness` per attack kind; the plain fine-tune is `finetune`). Kendall's tau is printed beside, not compared: the redesign
replaced a hand-written tau without tie handling by scipy's tau-b, so the two legitimately differ when there are
ties. The attack numbers and claims compared are those of one attack kind (`--kind`, default the plain fine-tune).
Exits 0 when every compared number is equal (floats to 1e-12), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

KIND = "finetune"
KEY_SUFFIX = re.compile(r"_[0-9a-f]{8}(?=_|$)")  # the 8-hex stage-key part of an artifact name


def strip_names(value: Any) -> Any:
    if isinstance(value, str):
        return KEY_SUFFIX.sub("", value)
    if isinstance(value, list):
        return [strip_names(v) for v in value]
    if isinstance(value, dict):
        return {k: strip_names(v) for k, v in value.items()}
    return value


def attack_numbers(attack: dict | None) -> dict | None:
    if not attack:
        return None
    return {k: attack[k] for k in ("before", "best", "at", "area", "area_up_to", "flops_total")}


def normalise(results: dict) -> dict:
    """The numbers a reader would quote, in one schema."""
    models = {}
    for m in results["models"]:
        attack = m["attacks"].get(KIND) if "attacks" in m else m.get("attack")
        robustness = m["robustness"].get(KIND) if "attacks" in m else m.get("robustness")
        accounting = dict(m.get("accounting") or {})
        accounting.pop("lineage", None)  # artifact names; their number is checked below
        lineage = len((m.get("accounting") or {}).get("lineage") or [])
        distill = {k: v for k, v in (m.get("distill") or {}).items() if k != "teacher"}
        models[(m["id"], m["seed"])] = {
            "role": m["role"], "metrics": m.get("metrics"), "steps": m.get("steps"), "accounting": accounting,
            "lineage_length": lineage, "distill": distill, "attack": attack_numbers(attack),
            "robustness": robustness or None, "skipped": m.get("skipped")}
    claims = results["claims"].get(KIND, {}) if KIND in results["claims"] else results["claims"]
    claims = json.loads(json.dumps(claims))
    for claim in claims.values():  # typed claims carry their id (the key they are stored under already says it)
        claim.pop("id", None)
    tau = claims.get("R3", {}).pop("kendall_tau", None)  # R3's verdict, decided from tau, is still compared
    selection = {str(seed).removeprefix("seed "): {
        family: {"chosen": strip_names(choice["chosen"]), "base_retain": choice["base_retain"],
                 "retain_threshold": choice["retain_threshold"],
                 "candidates": [{k: c[k] for k in ("lr", "knobs", "retain", "forget", "qualifies")}
                                for c in choice["candidates"]]}
        for family, choice in by_family.items()} for seed, by_family in results["selection"].items()}
    return {"models": {f"{name} (seed {seed})": value for (name, seed), value in models.items()},
            "claims": strip_names(claims), "selection": selection,
            "skipped": sorted(results["skipped"]), "tau": tau}


def differences(a: Any, b: Any, where: str, counter: list[int]) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'old' if k in a else 'new'}" for k in set(a) ^ set(b)]
        for k in sorted(set(a) & set(b), key=str):
            out += differences(a[k], b[k], f"{where}.{k}", counter)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]", counter)]
    counter[0] += 1
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12):
            return [f"{where}: {a!r} vs {b!r}"]
        return []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def main() -> None:
    global KIND
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--kind", default=KIND, help="the attack kind whose numbers are compared")
    args = parser.parse_args()
    KIND = args.kind
    old, new = (normalise(json.loads(path.read_text())) for path in (args.old, args.new))
    print(f"Kendall tau (R3), old: {old.pop('tau')}  new: {new.pop('tau')}")
    counter = [0]
    found = differences(old, new, "", counter)
    for line in found:
        print(line)
    print(f"{len(old['models'])} model records, {counter[0]} values compared: "
          + ("every one equal" if not found else f"{len(found)} differ"))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
