"""The records every part of undo exchanges, and the lowest layer: it imports nothing else of undo.

    errors.py   UserError (one line, exit code 2) and TrainingDiverged
    strict.py   StrictModel, the pydantic base of every config section
    score.py    Score: how a setting's retain and forget scores compare and print
    curves.py   Curve, BestCurve, RetainCap (attack curves) and Snapshot (a curve at a budget)
    results.py  each stage's result (its artifact's meta.json): PretrainResult, UnlearnResult, DistillResult,
                AttackResult, FilterResult
    study.py    Role, ModelSpec, ModelEntry, TeacherChoice, Manifest (`<run_dir>/study.json`)
    report.py   Accounting, ModelRecord, AttackRecord, Results (results.json)
    io.py       the one reader of meta.json and of cached evaluations
"""
