"""Stages: artifacts in, artifacts out. Each is a pure function of the config slice it declares and of its input
artifacts, run through one runner (`base.py`). One module per stage kind:

    pretrain.py   the base model (retain + forget data) and the data-filtered oracle (retain data only)
    unlearn.py    one unlearning run per sweep point, on the base model
    labels.py     the labelled documents unlearning reads (not a stage: its data, shared with filter.py)
    filter.py     the label-budget-matched data filter: a classifier trained on unlearning's labels
    selection.py  the teacher of each method family (not a stage: a decision over finished runs)
    distill.py    Unlearn-and-Distill, UNDO (noised student), oracle matching
    attack.py     the relearning attack, for each attack kind of `undo.attacks`
    evaluation.py evaluations of finished models, cached beside them by what they measure

Import from the modules (`from undo.stages.attack import attack`): each module's main function has its name.
"""
