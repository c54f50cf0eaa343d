"""The package's shape: no import cycle anywhere in `undo/` (function-level imports included), no code outside
`undo/settings/` that asks which setting it has, and the report reading the study only through its manifest.

The same import check by hand: `python -c "import grimp; g = grimp.build_graph('undo', cache_dir=None);
print([(a, b) for a in g.modules for b in g.find_modules_directly_imported_by(a) if g.chain_exists(b, a)])"`
(prints []), or, slower, `pylint --disable=all --enable=cyclic-import undo`.
"""

import ast
from pathlib import Path

import grimp

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
    graph.add_import(importer="undo.core.data", imported="undo.report.records")  # core -> report -> ... -> core
    assert graph.chain_exists(importer="undo.report.records", imported="undo.core.data")


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


def test_the_report_reads_the_study_through_its_manifest_only():
    graph = import_graph()
    for module in ("undo.study.plan", "undo.study.executors", "undo.study.runner"):
        assert not graph.chain_exists(importer="undo.report", imported=module, as_packages=True)
    assert not graph.chain_exists(importer="undo.study.manifest", imported="undo.study.plan")
