"""HTML reports: executed notebooks rendered by nbconvert (no code input) and a run index."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from . import alerts, paths, progress, runs
from .paths import atomic_write_text


def render_html(notebook: Path, out: Path | None = None, warnings: list[str] | None = None) -> Path:
    """Render an executed notebook to a standalone HTML report without code cells' input: progress
    lines coalesced to the last of each bar (:func:`coalesce_progress`), ``warnings`` in a banner
    at the top."""
    # lazy: nbconvert costs ~2 s to import; the CLI's and the sweep's index pages need none of it
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    out = Path(out) if out else notebook.with_suffix(".html")
    nb = coalesce_progress(nbformat.read(notebook, as_version=4))
    if warnings:
        drop_repeated_warnings(nb, warnings)
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(out, with_banner(offline(body), warnings or []))
    return out


_PROGRESS = re.compile(re.escape(progress.MARK) + r"(?P<desc>.*?): \d+(/\d+)? \(")


def coalesce_progress(nb):
    """Each code cell's stream outputs merged per stream, the progress lines of each bar
    (``progress.MARK``) reduced to the last one, kept where the bar's first line was; tqdm's
    redraws (carriage returns) reduced to their final state; streams left empty removed."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        outputs, streams = [], {}
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                if o["name"] in streams:
                    streams[o["name"]]["text"] += o["text"]
                    continue
                streams[o["name"]] = o
            outputs.append(o)
        for o in streams.values():
            lines = [ln.rsplit("\r", 1)[-1] for ln in o["text"].split("\n")]
            last, first = {}, {}
            for i, ln in enumerate(lines):
                m = _PROGRESS.match(ln)
                if m:
                    last[m["desc"]] = ln
                    first.setdefault(m["desc"], i)
            keep = {i: last[d] for d, i in first.items()}
            text = [
                keep.get(i, ln)
                for i, ln in enumerate(lines)
                if i in keep or not _PROGRESS.match(ln)
            ]
            o["text"] = "\n".join(text)
        cell["outputs"] = [
            o for o in outputs if o.get("output_type") != "stream" or o["text"].strip()
        ]
    return nb


def drop_repeated_warnings(nb, warnings: list[str]) -> None:
    """Remove a section's warnings box (``nb.show_warnings``) whose every item is in the banner:
    the reader sees each warning once, at the top (JupyterLab, which has no banner, keeps it)."""
    shown = {html.escape(w) for w in warnings}
    for cell in nb.cells:
        keep = []
        for o in cell.get("outputs", []):
            page = (o.get("data") or {}).get("text/html", "")
            page = "".join(page) if isinstance(page, list) else page
            items = re.findall(r"<li>(.*?)</li>", page, flags=re.S)
            if SECTION_CLASS in page and items and set(items) <= shown:
                continue
            keep.append(o)
        if "outputs" in cell:
            cell["outputs"] = keep


SECTION_CLASS = "vitedit-section-warnings"
BANNER_STYLE = (
    "border:2px solid #b00;background:#fee;padding:0.5em 1em;margin:1em 2em;font-family:sans-serif"
)


def with_banner(page: str, warnings: list[str]) -> str:
    """``page`` with the warnings in words right after ``<body>`` (nothing when there are none)."""
    if not warnings:
        return page
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    banner = f"<div class='vitedit-warnings' style='{BANNER_STYLE}'><b>Warnings</b><ul>{items}</ul></div>"
    m = re.search(r"<body[^>]*>", page)
    return page[: m.end()] + banner + page[m.end() :] if m else banner + page


def offline(page: str) -> str:
    """Drop the template's CDN scripts (require.js, MathJax): the reports use neither (tables and
    figures are inline, figures as base64 PNG), so the page opens complete without a network."""
    return re.sub(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', "", page)


STYLE = (
    "body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;border-bottom:1px solid #ddd}"
    ".warn{border:2px solid #b00;background:#fee;padding:0.5em 1em;margin:1em 0}"
    ".ok{color:#070}.failed{color:#b00;font-weight:bold}.running{color:#a60}.skipped,.waiting{color:#666}"
)


def _write_page(out: Path, title: str, body: str) -> Path:
    """A small standalone HTML page (no scripts, no external resources)."""
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )
    atomic_write_text(out, page)
    return out


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def run_warnings(
    run_dir: Path, names: list[str] | None = None, evaluated: bool = True
) -> list[str]:
    """What a reader must know before the numbers, in words (:mod:`vitedit.alerts`): every method
    of the run, or ``names`` only (``evaluated=False``: from the edit records alone)."""
    return alerts.flat(alerts.run_alerts(run_dir, names, evaluated))


def console_summary(run_dir: Path) -> list[str]:
    """What a run ends with on the console: one compact table (method, errors fixed, FT-Val
    regression, Test change, warnings) and one line per method with warnings (its count and the
    most serious); the full list is in the reports. Empty when nothing was evaluated."""
    blob, _ = runs.read_object(Path(run_dir) / "metrics.json")
    rows = (blob or {}).get("methods") or {}
    found = alerts.run_alerts(run_dir)
    if not rows and not found:
        return []

    def pct(v) -> str:
        return "-" if v is None else f"{v:.1%}"

    w = max([20, *map(len, rows)])  # the longest method name sets the column
    lines = [f"{'method':<{w}} {'fixed':>9} {'FT-Val regr.':>12} {'Test Δ':>8} {'warnings':>8}"]
    for name, m in rows.items():
        fixed = (
            f"{int(m['edit_num_fixed'])}/{int(m['edit_total_wrong'])}"
            if m.get("edit_num_fixed") is not None and m.get("edit_total_wrong")
            else "-"
        )
        delta = m.get("test_acc_delta")
        lines.append(
            f"{name:<{w}} {fixed:>9} {pct(m.get('val_regression_rate')):>12} "
            f"{'-' if delta is None else f'{delta:+.3f}':>8} {len(found.get(name, [])):>8}"
        )
    return lines + [f"WARNING {w}" for w in alerts.grouped(found)]


def warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>"


HEADLINE = {  # metrics.json column -> its label in the run index (the full table: metrics.json)
    "edit_fix_ratio": "fixed (edited errors)",
    "proj_regression_rate": "training-set regression",
    "test_acc_before": "Test before",
    "test_acc_after": "Test after",
    "test_acc_delta": "Test Δ",
    "test_mcnemar_p": "McNemar p",
    "val_acc_delta": "FT-Val Δ",
    "edit_time_seconds": "edit s",
}
STAGE_FACTS = {  # status.json field -> label, shown beside a stage in the run index
    "test_acc": "Test acc",
    "val_acc": "FT-Val acc",
    "best_epoch": "best epoch",
    "edit_layers": "edit layers",
    "n_errors": "errors",
}


def _fmt(v) -> str:
    if v is None:  # an undefined figure (JSON null, no longer NaN)
        return "–"
    if isinstance(v, float):
        return "–" if v != v else f"{v:.3g}" if abs(v) < 1e-2 and v else f"{v:.3f}"
    return html.escape(str(v))


TEST_CSV = "comparative_evaluation_test_set.csv"


def headline_table(run_dir: Path) -> str:
    """One row per method of ``metrics.json``: the figures a reader looks at first."""
    f = Path(run_dir) / "metrics.json"
    try:
        ms = json.loads(f.read_text()).get("methods", {}) if f.is_file() else {}
    except ValueError:
        ms = {}
    if not ms:
        return "<p>no evaluated method yet</p>"
    head = "".join(f"<th>{html.escape(v)}</th>" for v in HEADLINE.values())
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_fmt(m.get(k, float('nan')))}</td>" for k in HEADLINE)
        + "</tr>"
        for name, m in sorted(ms.items())
    )
    return (
        f"<table><tr><th>method</th>{head}</tr>{rows}</table><p>All figures: "
        f"{_link('metrics.json', 'metrics.json')}, {_link(TEST_CSV, TEST_CSV)}</p>"
    )


def stale_note(status: dict) -> str:
    """A line above the methods' table when 06 or 07 is not current (its rows are then from an
    earlier evaluation)."""
    old = [
        s for s in ("06_evaluate", "07_baselines") if s in status and status[s]["status"] != "ok"
    ]
    if not old:
        return ""
    return (
        f"<p class='warn'>{', '.join(old)}: {', '.join(status[s]['status'] for s in old)}; the "
        "figures below (and the warnings above) are from their last completed evaluation</p>"
    )


def write_run_index(run_dir: Path, planned: list[str] | None = None) -> Path:
    """``index.html`` of a run: what it is (dataset, model, seed), its warnings in words, each
    stage's status, time, key figures and report link, and the methods' headline figures.
    Written when the run starts (``planned`` stages shown as waiting) and after every stage."""
    run_dir = Path(run_dir)
    folder = runs.RunFolder(run_dir)
    p = folder.params or {}
    status = folder.status()
    planned = list(planned or folder.plan())
    rows = []
    for stage in sorted(set(status) | set(planned)):
        st = status.get(stage, {"status": "waiting", "time": ""})
        cell = _link(st["html"], stage) if st.get("html") else html.escape(stage)
        facts = ", ".join(f"{label} {_fmt(st[k])}" for k, label in STAGE_FACTS.items() if k in st)
        n_warn = len(st.get("warnings") or [])
        err = html.escape(str(st.get("error", "")))
        secs = st.get("seconds")
        rows.append(
            f"<tr><td>{cell}</td><td class='{st['status']}'>{st['status']}</td>"
            f"<td>{'' if secs is None else f'{secs:.0f} s'}</td><td>{facts}</td>"
            f"<td>{n_warn or ''}</td><td>{html.escape(st.get('time', ''))}</td><td>{err}</td></tr>"
        )
    what = ", ".join(
        f"{k} {html.escape(str(p[k]))}" for k in ("dataset", "size", "model", "seed") if k in p
    )
    body = (
        f"<h1>Run {html.escape(run_dir.name)}</h1><p>{what}</p>"
        f"{warnings_html(run_warnings(run_dir))}"
        f"<p>Parameters: {_link(runs.PARAMS_FILE, runs.PARAMS_FILE)}</p>"
        "<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time</th><th>figures</th>"
        f"<th>warnings</th><th>finished</th><th>error</th></tr>{''.join(rows)}</table>"
        f"<h2>Methods</h2>{stale_note(status)}{headline_table(run_dir)}"
    )
    return _write_page(run_dir / "index.html", run_dir.name, body)


def write_seeds_index(parent: Path, codes: dict, table=None) -> Path:
    """``index.html`` of a multi-seed run: each seed's run (and whether it succeeded) and the
    mean ± 95% CI table across the seeds that succeeded."""
    parent = Path(parent)
    items = "".join(
        f"<li>{_link(f'seed-{s}/index.html', f'seed {s}')} — "
        f"{'ok' if c == 0 else '<b class=failed>failed</b>'}</li>"
        for s, c in codes.items()
    )
    tab = (
        table.to_html(classes="t")
        if table is not None
        else "<p>no metrics across seeds (none succeeded, or the stage run ends before evaluation)</p>"
    )
    body = (
        f"<h1>{html.escape(parent.name)}: {len(codes)} seeds</h1><ul>{items}</ul>"
        f"<h2>Across seeds (mean ± 95% CI half-width)</h2>{tab}"
        f"<p>All metrics: {_link('seeds_summary.csv', 'seeds_summary.csv')}</p>"
    )
    return _write_page(parent / "index.html", parent.name, body)


def _newest_first(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True)


def update_reports_index(run_dir: Path) -> None:
    """Keep ``reports/index.html`` (every run and sweep) current for runs in the default folder."""
    reports = paths.resolve("reports")
    if Path(run_dir).parent == reports / "runs":
        write_reports_index(reports)


def write_reports_index(reports_dir: Path) -> Path:
    """``<reports>/index.html``: every run (``runs/*``) with its stages' states, and every sweep
    (``sweeps/*``) with its experiments' states; links are relative, the page works offline."""
    reports_dir = Path(reports_dir)
    run_rows = []
    for d in _newest_first(reports_dir / "runs"):
        if not (d / "index.html").is_file():
            continue
        folder = runs.RunFolder(d)
        states = (
            ", ".join(f"{k}: {v['status']}" for k, v in sorted(folder.status().items()))
            or "multi-seed run"
        )
        failed = folder.has_failure()
        run_rows.append(
            f"<tr><td>{_link(f'runs/{d.name}/index.html', d.name)}</td>"
            f"<td class='{'failed' if failed else 'ok'}'>{html.escape(states)}</td></tr>"
        )
    sweep_rows = []
    for d in _newest_first(reports_dir / "sweeps"):
        counts: dict[str, int] = {}
        for e in runs.job_folders(d):
            folder = runs.RunFolder(e)
            state = folder.state(folder.job()["notebooks"])
            counts[state] = counts.get(state, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no experiments yet"
        sweep_rows.append(
            f"<tr><td>{_link(f'sweeps/{d.name}/index.html', d.name)}</td><td>{html.escape(summary)}</td></tr>"
        )
    none = "<tr><td>none</td></tr>"
    body = (
        f"<h1>Reports</h1><h2>Sweeps</h2><table><tr><th>sweep</th><th>experiments</th></tr>"
        f"{''.join(sweep_rows) or none}</table><h2>Runs</h2><table><tr><th>run</th><th>stages</th></tr>"
        f"{''.join(run_rows) or none}</table>"
    )
    return _write_page(reports_dir / "index.html", "vitedit reports", body)
