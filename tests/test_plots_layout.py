"""What a reader sees in the report figures and tables: axis labels, class names, readable cell
numbers, one colour meaning "better" in the difference maps, no overlapping labels, shared colour
scales, and compact tables instead of raw dumps. Synthetic data only (no model, no training)."""

import io
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from vitedit import plots  # noqa: E402

NAMES = ("basophil", "eosinophil", "immature granulocytes (myelocytes)")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def images_of(ax):
    return [a for a in ax.get_children() if isinstance(a, AxesImage)]


def colorbar_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def panels(fig):
    """The axes a reader looks at: not colour bars, not switched off."""
    return [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]


def assert_labelled(fig):
    """Every plot panel has both axis labels and a title (its own or the figure's)."""
    for ax in panels(fig):
        if images_of(ax) and not ax.get_xticks().size:
            continue  # a picture, not a plot
        assert ax.get_xlabel(), ax.get_title()
        assert ax.get_ylabel() or ax.get_shared_y_axes().get_siblings(ax) != [ax], ax.get_title()
        assert ax.get_title() or (fig._suptitle and fig._suptitle.get_text())


# --------------------------------------------------------------------------- confusion matrices
BEFORE = np.array([[50, 1, 4], [2, 30, 3], [6, 5, 20]])
AFTER = np.array([[52, 0, 3], [2, 28, 5], [6, 5, 20]])


def confusion_figure():
    return plots.confusion_matrices({"alphaedit": {"confusion": (BEFORE, AFTER)}}, NAMES)


def change_panel(fig):
    (ax,) = [ax for ax in panels(fig) if "change" in ax.get_title()]
    return ax


def test_confusion_improvement_sign_convention():
    gain = plots.confusion_improvement(BEFORE, AFTER)
    # diagonal: more correct is better; off the diagonal: fewer errors is better
    assert gain[0, 0] == 2 and gain[1, 1] == -2
    assert gain[0, 1] == 1 and gain[0, 2] == 1  # errors gone: better
    assert gain[1, 2] == -2  # new errors: worse
    assert gain[2, 2] == 0


def test_confusion_axes_say_predicted_and_true_with_class_names():
    fig = confusion_figure()
    mats = [ax for ax in panels(fig) if images_of(ax)]
    assert len(mats) == 3  # before, after, change
    for ax in mats:
        assert ax.get_xlabel() == "predicted"
        assert ax.get_ylabel() == "true"
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks[0] == "basophil" and ticks[2].startswith("immature")
        assert [t.get_text() for t in ax.get_yticklabels()] == ticks


def test_difference_map_green_means_better_red_worse():
    fig = confusion_figure()
    ax = change_panel(fig)
    (im,) = images_of(ax)
    np.testing.assert_array_equal(im.get_array(), plots.confusion_improvement(BEFORE, AFTER))
    lo, hi = im.get_clim()
    assert hi > 0 and lo == -hi  # symmetric
    better = im.cmap(im.norm(plots.confusion_improvement(BEFORE, AFTER)[0, 0]))  # +2 correct
    fewer_errors = im.cmap(im.norm(plots.confusion_improvement(BEFORE, AFTER)[0, 1]))
    worse = im.cmap(im.norm(plots.confusion_improvement(BEFORE, AFTER)[1, 1]))  # -2 correct
    new_errors = im.cmap(im.norm(plots.confusion_improvement(BEFORE, AFTER)[1, 2]))
    for c in (better, fewer_errors):
        assert c[1] > c[0]  # green
    for c in (worse, new_errors):
        assert c[0] > c[1]  # red
    # the numbers are the raw change after - before
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert texts[(0, 1)].get_text() == "-1" and texts[(1, 2)].get_text() == "+2"
    (cbar,) = [c for c in colorbar_axes(fig) if "better" in c.get_ylabel()]
    assert "worse" in cbar.get_ylabel()


def test_cell_numbers_are_readable_on_their_cell():
    fig = confusion_figure()
    (ax,) = [ax for ax in panels(fig) if ax.get_title().startswith("before")]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert texts[(0, 0)].get_text() == "50"
    assert matplotlib.colors.to_hex(texts[(0, 0)].get_color()) == "#ffffff"  # darkest cell
    assert matplotlib.colors.to_hex(texts[(0, 1)].get_color()) == "#000000"  # light cell


def test_text_color_follows_luminance():
    fig, ax = plt.subplots()
    im = ax.imshow(np.array([[0.0, 1.0]]), cmap="Greys", vmin=0, vmax=1)
    assert plots.text_color(im, 0.0) == "black"
    assert plots.text_color(im, 1.0) == "white"


def test_confusion_matrices_of_several_methods_share_scales():
    evals = {m: {"confusion": (BEFORE, AFTER + k)} for k, m in enumerate(("a", "b", "c"))}
    fig = plots.confusion_matrices(evals, None)
    changes = [images_of(ax)[0] for ax in panels(fig) if "change" in ax.get_title()]
    counts = [images_of(ax)[0] for ax in panels(fig) if ax.get_title().endswith("after")]
    assert len(changes) == len(counts) == 3
    assert len({im.get_clim() for im in changes}) == 1
    assert len({im.get_clim() for im in counts}) == 1
    assert_labelled(fig)


# --------------------------------------------------------------------------- scatter labels
def metrics_table():
    return pd.DataFrame(
        {
            "method": ["alphaedit", "memit", "head", "head_closed_form", "baseline"],
            "edit_fix_ratio": [1.0, 1.0, 0.98, 1.0, np.nan],  # on top of each other
            "proj_regression_rate": [0.0, 0.0, 0.01, 0.0, 0.02],
        }
    )


def test_fix_vs_regression_names_methods_in_a_legend_not_on_the_points():
    fig = plots.fix_vs_regression(metrics_table())
    (ax,) = panels(fig)
    assert not ax.texts  # no annotations that could overlap
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [s.split(" ")[0] for s in labels] == list(metrics_table().method)
    markers = [
        h.get_paths()[0].vertices.tobytes() for h in ax.get_legend().legend_handles if h.get_paths()
    ]
    assert len(set(markers)) == len(markers)  # a distinct marker per method
    assert "%" in ax.get_xlabel() and "%" in ax.get_ylabel()  # units
    assert_labelled(fig)


# --------------------------------------------------------------------------- 03: tracing
def importance_table(n_samples=3, n_layers=4):
    rows = []
    for s in range(n_samples):
        for kind in ("block", "mlp", "attn"):
            for layer in range(n_layers):
                valid = s != 2  # the last error: |TE| too small
                norm = 1.0 + 1e-7 if kind == "block" else 0.1 * layer
                rows.append(
                    dict(
                        sample=s,
                        true_label=0,
                        pred_label=1,
                        layer=layer,
                        kind=kind,
                        scope="all",
                        p_clean=0.9,
                        p_corrupted=0.2,
                        p_restored=0.5,
                        ie=0.3,
                        te=0.7 if valid else 0.01,
                        te_valid=valid,
                        norm_effect=norm if valid else np.nan,
                    )
                )
    return pd.DataFrame(rows)


def stats_table(n_layers=12):
    rows = []
    for kind in ("attn", "block", "mlp"):
        for layer in range(n_layers):
            m = 1.0 if kind == "block" else 0.05 * layer
            rows.append(
                dict(
                    kind=kind,
                    scope="all",
                    layer=layer,
                    mean=m,
                    std=0.1,
                    ci_low=m - 0.02,
                    ci_high=m + 0.02,
                    n_used=12,
                    n_excluded=38,
                    mean_ie=0.01,
                    rank=1.0,
                )
            )
    return pd.DataFrame(rows)


def test_identity_check_is_not_a_panel_of_the_tracing_figures():
    fig = plots.trace_heatmaps(importance_table())
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == 2 and not any(t.startswith("block") for t in titles)
    assert_labelled(fig)
    fig = plots.trace_means(stats_table())
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == 2 and not any(t.startswith("block") for t in titles)
    assert_labelled(fig)


def test_identity_check_line_states_its_max_deviation():
    dev, n = plots.identity_deviation(importance_table())
    assert dev == pytest.approx(1e-7) and n == 8  # 2 usable errors x 4 layers
    line = plots.identity_check(importance_table())
    assert "1.0e-07" in line and "passed" in line and "\n" not in line
    broken = importance_table()
    broken.loc[(broken.kind == "block") & broken.te_valid, "norm_effect"] = 0.5
    assert "FAILED" in plots.identity_check(broken)


def test_trace_stats_table_is_one_row_per_layer_without_the_identity_check():
    t = plots.trace_stats_table(stats_table())
    assert len(t) == 12 and len(t.columns) <= 4
    assert list(t.index) == list(range(12)) and t.index.name == "layer"
    assert not any(c.startswith("block") for c in t.columns)
    assert t.loc[2, "mlp: mean IE/TE [95% CI]"] == "0.100 [0.080, 0.120]"


def test_layer_choice_states_the_excluded_share_with_the_layers():
    choice = {"layers": [1, 2, 3], "source": "tracing", "reason": "top 3 by mean IE/TE"}
    text = plots.layer_choice_text(choice, {"n_traced": 50, "n_low_total_effect": 38}, 0.05)
    assert "[1, 2, 3]" in text and "38 of 50" in text and "76%" in text and "0.05" in text
    assert "\n" not in text


def test_attribution_maps_share_one_scale_and_have_a_colorbar():
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(7, 7)) * s for s in (0.1, 1.0, 3.0)]
    fig = plots.attribution_maps(rng.random((3, 28, 28)), maps, ["a", "b", "c"])
    ims = [im for ax in fig.axes for im in images_of(ax) if im.get_cmap().name == "RdBu_r"]
    assert len(ims) == 3
    assert len({im.get_clim() for im in ims}) == 1
    # the median map's peak sets the scale: the strong map saturates, the weak ones stay visible
    lim = float(np.median([np.abs(m).max() for m in maps]))
    assert ims[0].get_clim() == pytest.approx((-lim, lim))
    (cbar,) = colorbar_axes(fig)
    assert "coefficient" in cbar.get_ylabel()


# --------------------------------------------------------------------------- 01: data
def counts_table():
    rows = []
    for s, n in (("FT-Train", 90), ("Test", 30)):
        row = {"set": s, "source": "official train"}
        row.update({f"class_{i}_{name}": n + i for i, name in enumerate(NAMES)})
        row["total"] = sum(n + i for i in range(len(NAMES)))
        rows.append(row)
    return pd.DataFrame(rows)


def test_class_tables_use_the_class_names():
    t = plots.class_count_table(counts_table(), NAMES)
    assert list(t.columns) == [
        "set",
        "source",
        "basophil",
        "eosinophil",
        "immature granulocytes",
        "total",
    ]
    # names that are only the index (RetinaMNIST) read as classes; cut names stay distinct
    assert plots.class_labels(["0", "1"]) == ["class 0", "class 1"]
    assert plots.class_labels(["femur-left", "femur-right"], 6) == ["femur… (0)", "femur… (1)"]


def test_class_distribution_bars_have_class_names_and_axis_labels():
    fig = plots.class_distribution(counts_table(), NAMES)
    for ax in panels(fig):
        assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["basophil", "eosinophil"]
        assert ax.get_xlabel() == "class"
    assert panels(fig)[0].get_ylabel() == "number of images"
    assert_labelled(fig)


def test_example_images_name_each_row():
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 3
    fig = plots.example_images(rng.random((12, 28, 28)), labels, NAMES, per_class=2)
    rows = [fig.axes[2 * c].get_ylabel() for c in range(3)]
    assert rows[0].startswith("basophil") and rows[2].startswith("immature granulocytes")
    assert fig._suptitle.get_text()


# --------------------------------------------------------------------------- 06, 07: summary
def metrics_json_table():
    from vitedit.columns import ORIGINAL_COLUMNS

    cols = ["method", *ORIGINAL_COLUMNS, "test_mcnemar_p", "val_acc_delta", "test_auc_after"]
    cols += [f"extra_{i}" for i in range(15)]  # the 31+ columns pandas truncates
    return pd.DataFrame([{c: (m if c == "method" else 0.5) for c in cols} for m in "abcd"])


def test_summary_columns_are_few_existing_and_readable():
    df = metrics_json_table()
    cols = plots.summary_columns(df)
    assert len(cols) <= 10 and set(cols) <= set(df.columns)
    assert cols[0] == "method"
    for c in (
        "edit_fix_ratio",
        "test_acc_before",
        "test_acc_after",
        "test_acc_delta",
        "test_mcnemar_p",
        "proj_regression_rate",
        "val_acc_delta",
        "edit_time_seconds",
    ):
        assert c in cols
    t = plots.summary_table(df)
    assert len(t.columns) == len(cols) <= 10 and len(t) == 4
    assert "fix rate" in t.columns and "Test Δ acc" in t.columns


def test_summary_columns_of_a_sparse_table():
    # an edit summary (04/05) or an old metrics.json: only what exists, one column per meaning
    df = pd.DataFrame({"method": ["a"], "fix_rate": [1.0], "edit_seconds": [1.0], "x": [0]})
    assert plots.summary_columns(df) == ["method", "fix_rate", "edit_seconds"]


# --------------------------------------------------------------------------- every figure
def test_other_figures_have_axis_labels_and_titles():
    rng = np.random.default_rng(0)
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1, 0.8, 0.7],
            "val_loss": [1, 0.9, 0.9],
            "train_acc": [0.5, 0.6, 0.7],
            "val_acc": [0.5, 0.55, 0.6],
            "lr": [1e-3, 5e-4, 1e-4],
        }
    )
    info = {
        "L1 mlp": {"kept_dim": 10, "dim": 64, "eigenvalues": rng.random(64), "eigenvalue_cut": 0.1}
    }
    updates = pd.DataFrame(
        {"method": ["a", "a", "b"], "target": ["L1", "L2", "L1"], "relative_update": [0.1, 0.2, 1]}
    )
    log = pd.DataFrame(
        {
            "method": ["a", "a", "b"],
            "p_true_before": [0.1, 0.2, 0.3],
            "p_true_after": [0.9, 0.1, 0.8],
            "fixed": [True, False, True],
        }
    )
    per_class = pd.DataFrame(
        {
            "method": ["a"] * 3 + ["b"] * 3,
            "class": [0, 1, 2] * 2,
            "name": list(NAMES) * 2,
            "acc_change": [0.01, -0.02, 0.0, 0.03, 0.0, -0.01],
        }
    )
    imp = importance_table()
    for fig in (
        plots.training_curves(history, 2),
        plots.nullspace_dims(info),
        plots.eigen_spectra(info),
        plots.update_norms(updates),
        plots.edit_probabilities(log),
        plots.per_class_changes(per_class),
        plots.trace_examples(rng.random((3, 28, 28)), imp, [0, 1], NAMES),
    ):
        assert_labelled(fig)
        plt.close(fig)


def test_trade_off_plots_take_more_methods_than_there_are_colours():
    """The benchmark's rows (methods, their variants, both baselines) outnumber the palette: the
    plots reuse colours instead of failing (a 12-row BloodMNIST sweep report did)."""
    methods = [f"m{i}" for i in range(len(plots.METHOD_COLORS) + 3)]
    settings = pd.DataFrame(
        {
            "method": methods,
            "proj_regression_rate": np.linspace(0, 0.1, len(methods)),
            "edit_fix_ratio": np.linspace(0.1, 1, len(methods)),
            "status": "ok",
            "config_id": methods,
        }
    )
    points = settings.assign(budget=0.05)
    plt.close(plots.budget_curves(settings, points))
    plt.close(plots.sweep_pareto(settings))
    assert len(set(plots.method_colors(methods).values())) == len(plots.METHOD_COLORS)


# --------------------------------------------------------------------------- display in a kernel
def _drawn_width(fig) -> int:
    """The width in pixels of the figure as a kernel's inline backend draws it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    return int.from_bytes(buf.getvalue()[16:20], "big")


def _saved_confusion(path):
    return plots.confusion_matrices({"alphaedit": {"confusion": (BEFORE, AFTER)}}, NAMES, path)


def test_a_saved_figure_is_shown_as_the_file_it_saved(tmp_path):
    """The notebooks show each figure as the PNG the plot function saved, not drawn a second time
    (drawing is most of a figure's cost); the shown image is that file, at the kernel's size."""
    assert (
        plots.common._show_saved_png(confusion_figure()) is None
    )  # not saved: the kernel draws it
    fig = _saved_confusion(tmp_path / "cm.png")
    data, meta = plots.common._show_saved_png(fig)
    assert data == (tmp_path / "cm.png").read_bytes()
    assert abs(meta["width"] / _drawn_width(fig) - 1) < 0.01 and set(meta) == {"width"}
    fig.axes[0].set_title("changed after saving")  # the file is stale: draw the figure
    assert plots.common._show_saved_png(fig) is None
    pdf = plots.confusion_matrices(
        {"alphaedit": {"confusion": (BEFORE, AFTER)}}, NAMES, tmp_path / "cm.pdf"
    )
    assert plots.common._show_saved_png(pdf) is None


def test_the_kernel_display_hook_uses_the_saved_file_and_falls_back_to_drawing(
    tmp_path, monkeypatch
):
    import IPython
    from IPython.core.formatters import DisplayFormatter
    from matplotlib.figure import Figure

    shell = SimpleNamespace(display_formatter=DisplayFormatter())  # a kernel's, without a kernel
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    fmt = shell.display_formatter.formatters["image/png"]
    assert (
        plots.common._register_saved_png_display() is None
    )  # no Figure formatter yet: nothing to wrap
    fmt.for_type(Figure, lambda fig: b"drawn")  # the inline backend's drawing, stood in for
    plots.common._register_saved_png_display()
    wrapped = fmt.lookup_by_type(Figure)
    plots.common._register_saved_png_display()  # once only: a second call does not wrap the wrapper
    assert fmt.lookup_by_type(Figure) is wrapped
    data, meta = fmt(_saved_confusion(tmp_path / "cm.png"))
    assert data == (tmp_path / "cm.png").read_bytes() and meta["width"] > 0
    assert fmt(confusion_figure()) == b"drawn"
