"""HTML reports: executed notebooks rendered by nbconvert (no code input) and a run index."""
from __future__ import annotations

import html
from pathlib import Path

from . import runs


def render_html(notebook: Path, out: Path | None = None) -> Path:
    """Render an executed notebook to a standalone HTML report without code cells' input."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    out = Path(out) if out else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    body = offline(body)
    from .paths import atomic_write_text

    atomic_write_text(out, body)
    return out


def offline(page: str) -> str:
    """Drop the template's CDN scripts (require.js, MathJax): the reports use neither (tables and
    figures are inline, figures as base64 PNG), so the page opens complete without a network."""
    import re

    return re.sub(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', "", page)


def write_run_index(run_dir: Path) -> Path:
    """``index.html`` of a run: each stage's status and a link to its report."""
    run_dir = Path(run_dir)
    rows = []
    for stage, st in sorted(runs.status(run_dir).items()):
        link = st.get("html")
        cell = f'<a href="{html.escape(link)}">{html.escape(stage)}</a>' if link else html.escape(stage)
        err = html.escape(str(st.get("error", "")))
        rows.append(f"<tr><td>{cell}</td><td class='{st['status']}'>{st['status']}</td>"
                    f"<td>{html.escape(st['time'])}</td><td>{err}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd}}
.ok{{color:#070}}.failed{{color:#b00;font-weight:bold}}.running{{color:#a60}}.skipped{{color:#666}}</style>
</head><body><h1>Run {html.escape(run_dir.name)}</h1>
<p>Parameters: <a href="{runs.PARAMS_FILE}">{runs.PARAMS_FILE}</a></p>
<table><tr><th>stage</th><th>status</th><th>time</th><th>error</th></tr>{''.join(rows)}</table>
</body></html>"""
    out = run_dir / "index.html"
    from .paths import atomic_write_text

    atomic_write_text(out, page)
    return out


def write_seeds_index(parent: Path, codes: dict, table=None) -> Path:
    """``index.html`` of a multi-seed run: each seed's run (and whether it succeeded) and the
    mean ± 95% CI table across the seeds that succeeded."""
    parent = Path(parent)
    items = "".join(f'<li><a href="seed-{s}/index.html">seed {s}</a> — '
                    f'{"ok" if c == 0 else "<b class=failed>failed</b>"}</li>' for s, c in codes.items())
    tab = table.to_html(classes="t") if table is not None else "<p>no metrics across seeds (none succeeded, or the stage run ends before evaluation)</p>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(parent.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd}}
.failed{{color:#b00}}</style></head><body><h1>{html.escape(parent.name)}: {len(codes)} seeds</h1>
<ul>{items}</ul><h2>Across seeds (mean ± 95% CI half-width)</h2>{tab}
<p>All metrics: <a href="seeds_summary.csv">seeds_summary.csv</a></p></body></html>"""
    from .paths import atomic_write_text

    atomic_write_text(parent / "index.html", page)
    return parent / "index.html"


def write_reports_index(reports_dir: Path) -> Path:
    """``<reports>/index.html``: every run (``runs/*``) with its stages' states, and every sweep
    (``sweeps/*``) with its experiments' states; links are relative, the page works offline."""
    import json

    reports_dir = Path(reports_dir)
    run_rows = []
    for d in sorted((reports_dir / "runs").glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True):
        st = runs.status(d)
        if not st and not (d / "index.html").is_file():
            seeds = sorted(d.glob("seed-*/"))
            if not seeds:
                continue
        states = ", ".join(f"{k}: {v['status']}" for k, v in sorted(st.items())) or "multi-seed run"
        failed = any(v.get("status") == "failed" for v in st.values())
        run_rows.append(f"<tr><td><a href=\"runs/{html.escape(d.name)}/index.html\">{html.escape(d.name)}</a></td>"
                        f"<td class='{'failed' if failed else 'ok'}'>{html.escape(states)}</td></tr>")
    sweep_rows = []
    for d in sorted((reports_dir / "sweeps").glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True):
        counts: dict[str, int] = {}
        for job in d.glob("runs/*/*/job.json"):
            nbs = json.loads(job.read_text())["notebooks"]
            st = runs.status(job.parent)
            s = ("ok" if all(st.get(n, {}).get("status") == "ok" for n in nbs)
                 else "failed" if any(v.get("status") == "failed" for v in st.values()) else "incomplete")
            counts[s] = counts.get(s, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no experiments yet"
        sweep_rows.append(f"<tr><td><a href=\"sweeps/{html.escape(d.name)}/index.html\">{html.escape(d.name)}</a></td>"
                          f"<td>{html.escape(summary)}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vitedit reports</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd}}
.ok{{color:#070}}.failed{{color:#b00}}</style></head><body><h1>Reports</h1>
<h2>Sweeps</h2><table><tr><th>sweep</th><th>experiments</th></tr>{''.join(sweep_rows) or '<tr><td>none</td></tr>'}</table>
<h2>Runs</h2><table><tr><th>run</th><th>stages</th></tr>{''.join(run_rows) or '<tr><td>none</td></tr>'}</table>
</body></html>"""
    from .paths import atomic_write_text

    out = reports_dir / "index.html"
    atomic_write_text(out, page)
    return out
