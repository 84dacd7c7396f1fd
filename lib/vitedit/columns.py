"""Names of the evaluation's levels and metric columns, importable without torch (the sweep's
selection, the CLI and the reports read them; :mod:`vitedit.evaluation` computes them)."""

LEVELS = ("edit_samples", "projection_samples", "test_set", "edit_discovery_set", "val_set")
# columns a sweep may choose a configuration on: none of them is computed on Test or on a set the
# results are reported on (held-out FT-Train, proj_*: the damage figures; the Edit-Discovery errors
# not edited, ed_rest_*: the generalisation figure)
SELECTION_METRICS = (
    "val_acc_delta",
    "val_acc_after",
    "val_fix_rate",
    "val_regression_rate",
    "val_net_fixed",
    "edit_fix_ratio",
    "edit_time_seconds",
)
# the original system's summary columns (param_search_summary_<dataset>.csv)
ORIGINAL_COLUMNS = [
    "edit_time_seconds",
    "duration_seconds",
    "edit_total_wrong",
    "edit_num_fixed",
    "edit_fix_ratio",
    "test_total",
    "test_acc_before",
    "test_acc_after",
    "test_acc_delta",
    "test_correct_to_wrong",
    "test_wrong_to_correct",
    "proj_stability",
    "proj_regression_rate",
]

# the documented bound on an AlphaEdit edit's preservation error: the median over the preserved keys
# of ||dW k|| / ||W k|| at the worst edited layer (in-sample or held out); above it the report warns
PRESERVATION_BOUND = 1e-2
# held-out FT-Train samples below which the report warns that the regression estimate is coarse
HELDOUT_WARN = 100
# a method's default that loses more Test accuracy than this is named in the report's warnings
TEST_LOSS_WARN = 0.02
# vitedit.alerts: a result beyond one of these bounds is named at the top of the reports, in the
# run index, the stage's status and the sweep report (the bounds are the budget study's: a method
# judged at <= 5 % held-out regression; "fixes nothing" below 10 % of the edited errors, e.g. 1/30;
# an update larger than the weights it changes rewrites the layer, 1x)
HELDOUT_REGRESSION_WARN = 0.05
FIX_RATE_WARN = 0.1
UPDATE_NORM_WARN = 1.0
