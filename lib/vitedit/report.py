"""HTML reports: executed notebooks rendered by nbconvert (no code input) and a run index."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from . import runs
from .columns import HELDOUT_WARN, PRESERVATION_BOUND, TEST_LOSS_WARN
from .paths import atomic_write_text


def render_html(notebook: Path, out: Path | None = None) -> Path:
    """Render an executed notebook to a standalone HTML report without code cells' input."""
    # lazy: nbconvert costs ~2 s to import; the CLI's and the sweep's index pages need none of it
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    out = Path(out) if out else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(out, offline(body))
    return out


def offline(page: str) -> str:
    """Drop the template's CDN scripts (require.js, MathJax): the reports use neither (tables and
    figures are inline, figures as base64 PNG), so the page opens complete without a network."""
    return re.sub(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', "", page)


STYLE = (
    "body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;border-bottom:1px solid #ddd}"
    ".warn{border:2px solid #b00;background:#fee;padding:0.5em 1em;margin:1em 0}"
    ".ok{color:#070}.failed{color:#b00;font-weight:bold}.running{color:#a60}.skipped{color:#666}"
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


# why a method's default may lose accuracy on purpose
WHY = {
    "alphaedit_noproj": ": the ablation runs AlphaEdit's solve and L2 without the projection P, "
    "to show what the null space prevents",
}


def run_warnings(run_dir: Path) -> list[str]:
    """What a reader must know before the numbers, in words, from the run's ``metrics.json``: an
    edit whose preservation error exceeds the documented bound, a method that loses more than
    TEST_LOSS_WARN of Test accuracy, a held-out FT-Train share too small to measure regression."""
    f = Path(run_dir) / "metrics.json"
    if not f.is_file():
        return []
    out = []
    for name, m in json.loads(f.read_text()).get("methods", {}).items():
        worst = max(
            (m.get(k) for k in ("preservation_insample", "preservation_heldout")),
            key=lambda v: -1 if v is None or v != v else v,
        )
        if m.get("preservation_exceeds_bound") is True:  # NaN/None: not judged (no projection edit)
            out.append(
                f"{name}: the edit changes the outputs of the keys it was meant to preserve: median "
                f"||dW k|| / ||W k|| = {worst:.3g} at its worst layer, above the bound "
                f"{PRESERVATION_BOUND:g} (raise L2 or lower nullspace_threshold)"
            )
        delta = m.get("test_acc_delta")
        if delta is not None and delta == delta and delta < -TEST_LOSS_WARN:
            out.append(
                f"{name}: Test accuracy falls by {-delta:.1%} ({m.get('test_acc_before', 0):.3f} -> "
                f"{m.get('test_acc_after', 0):.3f}, McNemar p = {m.get('test_mcnemar_p', 1):.2g})"
                + WHY.get(name, "")
            )
        n = m.get("proj_n_heldout")
        if n is not None and n == n and n < HELDOUT_WARN:
            out.append(
                f"{name}: only {int(n)} held-out FT-Train samples measure its regression; the "
                f"regression rate is coarse"
            )
    return out


def warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>"


def write_run_index(run_dir: Path) -> Path:
    """``index.html`` of a run: each stage's status and a link to its report."""
    run_dir = Path(run_dir)
    rows = []
    for stage, st in sorted(runs.RunFolder(run_dir).status().items()):
        cell = _link(st["html"], stage) if st.get("html") else html.escape(stage)
        err = html.escape(str(st.get("error", "")))
        rows.append(
            f"<tr><td>{cell}</td><td class='{st['status']}'>{st['status']}</td>"
            f"<td>{html.escape(st['time'])}</td><td>{err}</td></tr>"
        )
    body = (
        f"<h1>Run {html.escape(run_dir.name)}</h1>{warnings_html(run_warnings(run_dir))}"
        f"<p>Parameters: {_link(runs.PARAMS_FILE, runs.PARAMS_FILE)}</p>"
        f"<table><tr><th>stage</th><th>status</th><th>time</th><th>error</th></tr>{''.join(rows)}</table>"
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
