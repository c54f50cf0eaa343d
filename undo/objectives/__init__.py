"""Training objectives: what the one engine minimises. Each is a small class in its own file, registered by name.

Adding a method = one new file with one `@register`ed class (see `base.py`), plus its module name below.
"""

from undo.objectives.base import (  # noqa: F401
    OBJECTIVES, Objective, check_knobs, method_knobs, register, unlearning_methods,
)

# Importing each module registers its objective.
from undo.objectives import (  # noqa: E402,F401
    distill, grad_ascent, grad_diff, lm, maxent, npo, repnoise, rmu, simnpo,
)
