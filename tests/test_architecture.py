"""The package's shape: layers that import only downward (function-level imports included), no import cycle, no
code outside `undo/settings/` that asks which setting it has, the report reading the study only through its
records, and commands that import only what they use.

The layers, highest first (each may import those below it, never one above):

    {cli | session} > api > report > study > stages > training > config > attacks > {objectives | settings |
    analysis} > core > schema

`schema` holds the records every part exchanges and imports nothing of undo; objectives, settings and analysis are
independent leaves of one layer (none imports another).

The same import check by hand: `python -c "import grimp; g = grimp.build_graph('undo', cache_dir=None);
print([(a, b) for a in g.modules for b in g.find_modules_directly_imported_by(a) if g.chain_exists(b, a)])"`
(prints []), or, slower, `pylint --disable=all --enable=cyclic-import undo`.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import undo
from undo.settings import SETTINGS

PACKAGE = Path(undo.__file__).parent


def import_graph():
    return grimp.build_graph("undo", cache_dir=None)


def test_no_import_cycles():
    graph = import_graph()
    cycles = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                     if graph.chain_exists(importer=b, imported=a)})
    assert cycles == []
    assert len(graph.modules) > 40  # the graph really holds the package (a wrong package name would pass above)


def test_the_cycle_check_finds_a_cycle_when_there_is_one():
    graph = import_graph()
    cycles = lambda: [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)  # noqa: E731
                      if graph.chain_exists(importer=b, imported=a)]
    assert cycles() == []
    graph.add_import(importer="undo.core.artifacts", imported="undo.report.records")  # the report reads artifacts
    assert ("undo.core.artifacts", "undo.report.records") in cycles()


LAYERS = (grimp.Layer("undo.cli", "undo.session", independent=True), "undo.api", "undo.report", "undo.study",
          "undo.stages", "undo.training", "undo.config",
          "undo.attacks", grimp.Layer("undo.objectives", "undo.settings", "undo.analysis", independent=True),
          "undo.core", "undo.schema")


def illegal(graph) -> list[str]:
    return sorted(f"{d.importer} -> {d.imported}" for d in graph.find_illegal_dependencies_for_layers(layers=LAYERS))


def test_layers_import_only_downward():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph.modules if m.count(".") >= 1} <= {
        "cli", "session", "api", "report", "study", "stages", "training", "config", "attacks", "objectives", "settings",
        "analysis", "core", "schema", "__main__"}  # a new package must be given its layer here
    assert illegal(graph) == []


@pytest.mark.parametrize("importer, imported", [
    ("undo.schema.io", "undo.core.artifacts"),  # the records import nothing of undo
    ("undo.core.models", "undo.config.sections"),  # core reads its own protocol, not the config
    ("undo.settings.base", "undo.objectives.base"),  # leaves of one layer are independent
    ("undo.study.runner", "undo.report.records"),  # the report is written by the layer above the study
])
def test_the_layer_check_finds_an_upward_import(importer, imported):
    graph = import_graph()
    graph.add_import(importer=importer, imported=imported)
    assert illegal(graph) != []


def imported_by(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running `code`."""
    heavy = ["torch", "transformers", "peft", "lm_eval", "ray", "sklearn", "datasets", "matplotlib"]
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\n"
                          f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_no_torch():
    assert imported_by("import undo.cli") == []
    assert imported_by("from undo.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass") == []


@pytest.mark.slow
def test_a_config_check_imports_no_optional_extra():
    """`undo config` and a config error load the config's registries (torch, transformers), never peft, lm-eval,
    Ray or scikit-learn: a typo must not cost their start-up."""
    for argv in (["config"], ["config", "--set", "attack.kinds=[lora]"], ["config", "--set", "model.layers=x"]):
        loaded = imported_by(f"from undo.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass")
        assert not {"peft", "lm_eval", "ray", "sklearn"} & set(loaded), (argv, loaded)


def test_only_settings_modules_name_a_setting():
    """Adding a setting is one module in undo/settings/: nothing else branches on a setting's name."""
    names = set(SETTINGS)
    assert {"arithmetic", "language"} <= names
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "settings" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_the_report_reads_records_only():
    """The report reads what the study made through the schema's records: never a stage, the study's plan or a
    setting module (its numbers and how they print come with the records)."""
    graph = import_graph()
    for package in ("undo.stages", "undo.study", "undo.settings", "undo.training"):
        assert not graph.chain_exists(importer="undo.report", imported=package, as_packages=True), package


def test_no_raw_meta_json_outside_the_schema_loader():
    """meta.json is read as a typed record (`undo.schema.io.read_result`) everywhere, and the report catches no
    error that a misspelt field would raise."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.relative_to(PACKAGE).parts[0] != "schema" and 'meta.json").read_text' in text.replace("'", '"'):
            offenders.append(str(path.relative_to(PACKAGE)))
        if path.relative_to(PACKAGE).parts[0] == "report" and "except (KeyError" in text:
            offenders.append(f"{path.relative_to(PACKAGE)}: swallows KeyError")
    assert offenders == []
