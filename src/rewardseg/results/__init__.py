"""Results: a finished run's evaluations -> its result JSON; every run's -> one tidy table
(``metrics.csv``); the statistics and tables drawn from it (figures are ``figures``).

One module per concern, every name re-exported here: the result JSON and the tidy tables
(``runs``), the paired statistics (``stats``), each variant against its control
(``comparisons``), the per-class IoU (``classes``), how the tables read (``formatting``),
``findings.json`` and the README's block (``report``), the table files (``tables``), the
conclusion and the cross-study overview (``summary``)."""
from .classes import (class_order, dataset_classes, per_class_summary, per_class_table,
                      table_variant_order)
from .comparisons import (COMPARISON_COLUMNS, CONTROL, PLATEAU_POINTS, REFERENCE, UNGROUPED,
                          WHOLE_STUDY, best_variant, final_table, group_by_experiment,
                          pretrain_plateau, reference_line, reference_mde, variant_table)
from .formatting import STAT_NOTES, _short, markdown_table
from .report import (README_MARKERS, RARE_CLASSES, READER_COLUMNS, findings, reader_table,
                     readme_block, render_comparisons, render_findings, update_readme)
from .runs import aggregate, collect_run, read_val_metrics
from .stats import (ALPHA, POWER, holm, minimum_detectable_effect, paired_comparison,
                    verdict)
from .summary import conclusion, overview
from .tables import PER_CLASS_NOTE, TABLE_NOTES, TABLES, write_tables
