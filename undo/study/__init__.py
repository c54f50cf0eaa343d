"""A study: the plan (a graph of stage tasks), the executors that run it, and the manifest the report reads.

    plan.py       roles, tasks, `build_plan`
    executors.py  serial and local-process-pool executors behind one interface, and the scheduling loop
    manifest.py   the typed `<run_dir>/study.json`
    runner.py     `run_study` and `collect_study` (what `undo run` and `undo report` call)
"""
