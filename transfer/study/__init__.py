"""The fair comparison (issue 8): every registered method, in its original and gradient forms, with
and without the momentum encoder, under one identical setting; probed, transferred, tabulated.

``transfer bench methods`` is the command; :func:`run_study` the Python entry point.

- :mod:`.cells`: the study setting (budgets, shared overrides) and the plan of cells;
- :mod:`.runner`: one cell = pretrain -> probes -> (default form) detection + segmentation, each
  phase's result written atomically and reused, cells in parallel processes;
- :mod:`.table`: mean +- std over seeds, the Markdown/JSON table;
- :mod:`.plot`: a self-written SVG bar chart;
- :mod:`.paper`: the published numbers (UniGrad's ImageNet table and the related papers');
- :mod:`.doc`: ``docs/benchmarks.md`` with a "Reading" generated from the measured numbers.
"""
from .cells import BUDGETS, VARIANTS, Cell, StudySpec, plan_cells
from .runner import run_study

__all__ = ["BUDGETS", "VARIANTS", "Cell", "StudySpec", "plan_cells", "run_study"]
