"""What a researcher sees: warnings in words, clean reports, console progress, documented CLIs,
portable locks (unit tests; the HTML of a real tiny run is checked in test_study.py)."""

import ast
import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from vitedit import (
    alerts,
    benchmark,
    checkpoints,
    cli,
    clihelp,
    execute,
    methods,
    progress,
    report,
    runs,
)
from vitedit.sweep import cli as sweep_cli
from vitedit.sweep import report as sweep_report
from vitedit.sweep.run import lock_sweep

from conftest import ROOT

HEALTHY = {
    "edit_fix_ratio": 0.6,
    "edit_num_fixed": 18,
    "edit_total_wrong": 30,
    "proj_regression_rate": 0.004,
    "proj_n_heldout": 900,
    "test_acc_before": 0.93,
    "test_acc_after": 0.931,
    "test_acc_delta": 0.001,
    "test_delta_ci_high": 0.004,
    "test_majority_share": 0.2,
    "val_acc_delta": 0.0,
    "val_total": 1200,
    "preservation_exceeds_bound": False,
}


def test_a_healthy_result_has_no_warning():
    rec = {"layer_info": {"L3.mlp": {"update_norm": 0.1, "weight_norm": 2.0}}}
    assert alerts.record_alerts("alphaedit", HEALTHY, rec) == []


@pytest.mark.parametrize(
    "change, words",
    [
        ({"proj_regression_rate": 0.9}, "breaks 90.0% of the held-out"),
        ({"test_acc_after": 0.15, "test_majority_share": 0.435}, "below always answering"),
        ({"test_acc_delta": -0.29, "test_delta_ci_high": -0.2}, "Test accuracy falls by 29.0%"),
        ({"val_acc_delta": -0.1}, "FT-Val accuracy falls by 10.0% (120 of 1200 samples)"),
        (
            {"edit_fix_ratio": 1 / 30, "edit_num_fixed": 1},
            "fixes almost none of the errors it edited (1 of 30)",
        ),
        ({"preservation_exceeds_bound": True, "preservation_insample": 19.0}, "above the bound"),
        ({"proj_n_heldout": 40}, "only 40 held-out"),
    ],
)
def test_each_documented_bound_fires_alone(change, words):
    out = alerts.record_alerts("m", {**HEALTHY, **change})
    assert len(out) == 1 and words in out[0], out


def test_a_test_loss_inside_its_ci_is_not_a_warning():
    assert (
        alerts.record_alerts("m", {**HEALTHY, "test_acc_delta": -0.03, "test_delta_ci_high": 0.01})
        == []
    )


def test_update_norm_far_above_the_weights_is_named_with_its_layer():
    rec = {
        "layer_info": {
            "L1.mlp": {"update_norm": 638.0, "weight_norm": 2.75},
            "L2.mlp": {"update_norm": 1, "weight_norm": 2},
        }
    }
    (w,) = alerts.record_alerts("alphaedit", HEALTHY, rec)
    assert "L1.mlp is 232x" in w


def test_a_method_that_reads_the_unedited_samples_is_told_its_figures_on_them_are_in_sample():
    """head_anchored, head_refit and head_dfr read the Edit-Discovery samples not edited: their
    run reports say so beside those figures (head_dfr: at their labels); no other method's does."""
    m = {**HEALTHY, "ed_rest_fix_rate": 0.2}
    readers = [n for n in methods.names() if methods.get(n).reads_edit_discovery_rest]
    assert {"head_anchored", "head_refit", "head_dfr", "baseline_finetune_labelled"} <= set(readers)
    for name in methods.names():
        said = [w for w in alerts.record_alerts(name, m) if "not out of sample" in w]
        assert len(said) == (name in readers), name
    (w,) = [w for w in alerts.record_alerts("head_dfr", m) if "not out of sample" in w]
    assert "at their labels" in w
    for blind in ("head_anchored", "head_refit"):  # they keep the anchors at the model's decisions
        (w,) = [w for w in alerts.record_alerts(blind, m) if "not out of sample" in w]
        assert "as it decides" in w and "at their labels" not in w, blind
    assert not [w for w in alerts.record_alerts("head_dfr", HEALTHY) if "not out of sample" in w]


def test_run_alerts_reads_metrics_and_unevaluated_edits(tmp_path):
    (tmp_path / "edits").mkdir()
    (tmp_path / "metrics.json").write_text(
        json.dumps({"methods": {"head": {**HEALTHY, "edit_fix_ratio": 0.0}}})
    )
    (tmp_path / "edits" / "memit.json").write_text(
        json.dumps({"info": {"preservation": {"exceeds_bound": True, "insample_median_max": 0.3}}})
    )
    got = alerts.run_alerts(tmp_path)
    assert set(got) == {"head", "memit"} and "above the bound" in got["memit"][0]
    assert set(alerts.run_alerts(tmp_path, ["head"])) == {"head"}
    # each stage reports the methods it edits or evaluates
    # 05 judges the edit it just made: head's metrics row is an earlier edit's evaluation
    assert execute.stage_warnings(tmp_path, "05_edit_head") == []
    assert execute.stage_warnings(tmp_path, "06_evaluate") == got["head"] + got["memit"]
    assert execute.stage_warnings(tmp_path, "04_edit_alphaedit") == got["memit"]
    assert execute.stage_warnings(tmp_path, "02_train") == []


def test_progress_lines_are_few_marked_and_on_the_real_stderr(monkeypatch, capfd):
    monkeypatch.setenv(progress.ENV, "1")
    for _ in progress.bar(range(100), desc="causal tracing: error"):
        pass
    b = progress.bar(desc="train x epoch", total=3, each_step=True)
    for i in range(3):
        b.set_postfix(loss=f"{1 / (i + 1):.3f}")
        b.update(1)
    b.close()
    for _ in progress.bar(range(50), desc="inner", leave=False):
        pass
    err = capfd.readouterr().err.splitlines()
    tracing = [ln for ln in err if "causal tracing" in ln]
    assert len(tracing) == progress.LINES and tracing[-1].startswith(
        progress.MARK + "causal tracing: error: 100/100"
    )
    epochs = [ln for ln in err if "train x epoch" in ln]
    assert len(epochs) == 3 and "loss=0.333" in epochs[-1]
    assert not any("inner" in ln for ln in err)


def test_without_the_kernel_flag_progress_is_a_tqdm_bar_not_tqdm_auto(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    from tqdm.std import tqdm

    b = progress.bar(range(3), desc="x")
    assert type(b) is tqdm
    b.close()
    # no module of the library imports tqdm.auto (it warns "IProgress not found" in kernels)
    for f in (ROOT / "lib" / "vitedit").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("tqdm.auto", "tqdm.notebook", "tqdm.autonotebook"), f


def _nb_with(*texts):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name=n, text=t) for n, t in texts]
    nb.cells = [cell]
    return nb


def test_reports_keep_the_last_progress_line_of_each_bar():
    m = progress.MARK
    nb = _nb_with(
        ("stderr", f"{m}train a epoch: 1/3 (1 s)\n"),
        ("stdout", "hello\n"),
        ("stderr", f"{m}train a epoch: 2/3 (2 s)\n{m}causal tracing: error: 5/10 (1 s)\n"),
        ("stderr", f"{m}train a epoch: 3/3 (3 s, loss=0.1)\nreal warning\n"),
        ("stderr", "bar  10%\rbar 100%\n"),
    )
    outs = report.coalesce_progress(nb).cells[0].outputs
    err = next(o for o in outs if o["name"] == "stderr")["text"].splitlines()
    assert err == [
        f"{m}train a epoch: 3/3 (3 s, loss=0.1)",
        f"{m}causal tracing: error: 5/10 (1 s)",
        "real warning",
        "bar 100%",
    ]
    assert [o["name"] for o in outs] == ["stderr", "stdout"]


def test_the_banner_sits_first_in_the_body(tmp_path):
    f = tmp_path / "n.ipynb"
    nbformat.write(_nb_with(("stdout", "numbers\n")), f)
    page = report.render_html(
        f, tmp_path / "n.html", ["alphaedit: the edited model is destroyed"]
    ).read_text()
    body = page[page.index("<body") :]
    assert body.index("vitedit-warnings") < body.index("numbers")
    assert "destroyed" in page
    assert "vitedit-warnings" not in report.render_html(f, tmp_path / "m.html").read_text()


def test_run_index_is_written_at_the_start_and_shows_what_the_run_is(tmp_path):
    runs.write_params(
        tmp_path, {"dataset": "bloodmnist", "size": 28, "model": "vit_small_p4_28", "seed": 43}
    )
    folder = runs.RunFolder(tmp_path)
    folder.write_plan(["01_split", "02_train"])
    text = report.write_run_index(tmp_path).read_text()
    assert "bloodmnist" in text and "vit_small_p4_28" in text and "seed 43" in text
    assert text.count(">waiting<") == 2 and "no evaluated method yet" in text
    folder.set_status("02_train", "ok", seconds=12.0, test_acc=0.9374, warnings=[])
    (tmp_path / "metrics.json").write_text(
        json.dumps({"methods": {"head": {**HEALTHY, "edit_fix_ratio": 0.0}}})
    )
    text = report.write_run_index(tmp_path).read_text()
    assert text.count(">waiting<") == 1 and "Test acc 0.937" in text and "12 s" in text
    assert "fixes almost none" in text and "<td>head</td>" in text


def test_sweep_and_benchmark_reports_warn_about_the_chosen_settings():
    summary = pd.DataFrame(
        {
            "experiment": ["a", "b", "c"],
            "dataset": ["bloodmnist"] * 3,
            "status": ["ok", "ok", "failed"],
            "seed": [42, 42, 42],
            "config_id": ["x", "y", "z"],
            "warnings": ["head: fixes almost none", "", "memit: breaks 9%"],
        }
    )
    w = sweep_report.sweep_warnings(summary, pd.DataFrame({"config_id": ["x"]}))
    assert any("did not finish" in x for x in w) and any(
        "chosen setting, seed 42: head" in x for x in w
    )
    assert any("1 of 3 experiments cross" in x for x in w)
    points = pd.DataFrame({"dataset": ["bloodmnist"], "budget": [0.01], "experiments": ["a b"]})
    b = benchmark.report_warnings(summary, points)
    assert any("one seed only" in x for x in b) and any(
        "<= 1% regression: head: fixes" in x for x in b
    )


def test_every_option_of_both_clis_has_help_and_a_default():
    assert clihelp.undocumented(cli.build_parser()) == []
    assert clihelp.undocumented(sweep_cli.build_parser()) == []
    text = cli.build_parser().format_help()
    assert "--epochs EPOCHS       training epochs (default: 30)" in text
    # the schema is the one source: a stale hand-written "(1e-2)" is replaced by the real default
    assert "(1e-2)" not in text
    top = sweep_cli.build_parser().format_help()
    assert "SUPPRESS" not in top and "exec" not in top


def test_locks_are_portable_and_exclusive(tmp_path):
    for f in (ROOT / "lib" / "vitedit").rglob("*.py"):
        assert "import fcntl" not in f.read_text(), f
    lock = lock_sweep(tmp_path)
    code = (
        "from pathlib import Path; from vitedit.sweep.run import lock_sweep; "
        f"lock_sweep(Path({str(tmp_path)!r}))"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    finally:
        lock.release()
    assert r.returncode != 0 and "another process is running the sweep" in r.stderr
    again = lock_sweep(tmp_path)  # released: the next sweep may run
    again.release()
    with checkpoints.file_lock(tmp_path / "ckpt.pt"):
        assert (tmp_path / "ckpt.pt.lock").exists()


def _box(warnings):
    """What ``nb.show_warnings`` displays in a notebook."""
    import IPython.display

    from vitedit import nb as nb_mod

    shown = []
    real = IPython.display.display
    IPython.display.display = shown.append
    try:
        nb_mod.show_warnings(warnings)
    finally:
        IPython.display.display = real
    return shown[0].data


def test_a_section_warning_box_repeated_by_the_banner_is_shown_once(tmp_path):
    w = ["head: fixes almost none of the errors it edited (0 of 30)"]
    book = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": _box(w)}),
        nbformat.v4.new_output("display_data", data={"text/html": _box(["03: traces too weak"])}),
    ]
    book.cells = [cell]
    f = tmp_path / "n.ipynb"
    nbformat.write(book, f)
    page = report.render_html(f, tmp_path / "n.html", w).read_text()
    assert page.count("fixes almost none") == 1 and "traces too weak" in page
    assert report.render_html(f, tmp_path / "m.html").read_text().count("fixes almost none") == 1


def test_level_tables_show_a_chosen_set_of_columns():
    from vitedit import plots
    from vitedit.columns import LEVELS

    wide = pd.DataFrame(
        {"method": ["a"], **{f"c{i}": [0.1] for i in range(20)}, "acc_delta": [0.01]}
    )
    for level in LEVELS:
        t = plots.level_table(wide, level)
        assert t.shape[1] <= plots.MAX_SUMMARY_COLUMNS and t.index.name == "method"
    assert list(plots.level_table(wide, "test_set").columns) == ["acc_delta"]


def test_edit_summaries_show_the_chosen_columns_of_the_csv():
    from vitedit import plots

    cols = list(plots.EDIT_SUMMARY_COLUMNS) + [
        "ft_heldout_n",
        "stats_seconds",
        "ft_heldout_stability",
    ]
    df = pd.DataFrame([dict.fromkeys(cols, 0.5) | {"method": "alphaedit"}])
    t = plots.edit_summary_table(df)
    assert list(t.columns) == list(plots.EDIT_SUMMARY_COLUMNS[1:]) and t.index.name == "method"
    for name in ("04_edit_alphaedit", "05_edit_head"):
        assert (
            "plots.edit_summary_table(out.summary)"
            in (ROOT / "notebooks" / f"{name}.ipynb").read_text()
        )


def test_ft_val_loss_warns_only_beyond_its_confidence_interval():
    # 120 samples, 3 broken of 60 right and none fixed: -2.5 %, inside its CI (a coin's noise)
    small = {**HEALTHY, "val_total": 120, "val_acc_before": 0.5, "val_fix_rate": 0.0}
    small |= {"val_regression_rate": 3 / 60, "val_acc_delta": -0.025}
    assert alerts.val_delta_ci_high(small) > 0 and alerts.record_alerts("m", small) == []
    big = {**small, "val_regression_rate": 15 / 60, "val_acc_delta": -0.125}
    (w,) = alerts.record_alerts("m", big)
    assert "FT-Val accuracy falls by 12.5% (15 of 120 samples, 95% CI of the change up to" in w


def test_a_base_model_at_the_majority_share_is_not_blamed_on_the_edit():
    at_majority = {**HEALTHY, "test_acc_before": 0.435, "test_acc_after": 0.43}
    assert alerts.record_alerts("m", {**at_majority, "test_majority_share": 0.435}) == []


def test_edit_notebooks_warn_from_their_own_summaries(tmp_path):
    (tmp_path / "edit_summary.csv").write_text(
        "method,n_edits,fix_rate,ft_heldout_n,ft_heldout_regression_rate\n"
        "alphaedit,30,0.0,900,0.001\nalphaedit_noproj,30,0.9,900,0.268\n"
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": {"alphaedit": HEALTHY}}))
    w = execute.stage_warnings(tmp_path, "04_edit_alphaedit")
    assert any("alphaedit: fixes almost none of the errors it edited (0 of 30)" in x for x in w)
    assert any("alphaedit_noproj: breaks 26.8%" in x for x in w)
    assert execute.stage_warnings(tmp_path, "06_evaluate") == []  # 06 judges metrics.json
