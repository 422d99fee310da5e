"""The fair comparison (issue 15): each distinct gradient rule without and with the momentum encoder,
each method's original loss, DirectPred against trained predictors; several seeds; probed and
transferred; tabulated with paired intervals. ``transfer bench methods`` is the command.

- :mod:`.plan`: budgets, the cells (rule identity computed from the method registry), their configs;
- :mod:`.run`: the resumable, time-capped run (trainer, ``probes.run``, the task registry);
- :mod:`.stats`: mean ± std, paired 95 % t intervals;
- :mod:`.doc`: ``table.json`` and ``docs/benchmarks.md`` (tables, intervals, the human reading kept);
- :mod:`.paper`: the published numbers printed beside ours.
"""
from .plan import BUDGETS, VARIANTS, Cell, plan_cells, rule_groups
from .run import StudySpec, run_study

__all__ = ["BUDGETS", "VARIANTS", "Cell", "StudySpec", "plan_cells", "rule_groups", "run_study"]
