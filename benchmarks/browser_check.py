"""Open a run's HTML pages in a real headless browser with the network cut off.

    python benchmarks/browser_check.py reports/runs/<run>            # every page of the run
    python benchmarks/browser_check.py reports/runs/<run> --screenshots /tmp/shots

Needs Chromium (Debian: ``apt-get install chromium``). Every DNS lookup fails
(``--host-resolver-rules``), so a page that needs the network loses what it fetches. For each page
the script checks that the browser builds the page (its DOM holds the file's headings, tables and
figure elements) and optionally saves a screenshot to look at. It does not prove that nothing was
fetched: a failed fetch leaves the element in place; the static check of every link and image
(tests/test_study.py) covers that. Exit code 1 when a page fails;
``tests/test_study.py`` runs it on a tiny run where Chromium is installed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",  # containers run as root
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network
    "--virtual-time-budget=5000",  # let inline images decode before the DOM is dumped
]


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    return None


def check_page(page: Path, exe: str, screenshot: Path | None = None) -> list[str]:
    """Problems of one page as the browser sees it (empty: the page rendered complete)."""
    src = page.read_text()
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [exe, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    problems = []
    if "<body" not in dom:
        return [f"{page.name}: the browser produced no document"]
    for tag in ("img", "table", "h1"):
        want, got = len(re.findall(f"<{tag}[ >]", src)), len(re.findall(f"<{tag}[ >]", dom))
        if got < want:
            problems.append(f"{page.name}: {want} <{tag}> in the file, {got} in the browser")
    if screenshot is not None:
        subprocess.run(
            [exe, *FLAGS, "--window-size=1200,2400", f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=120,
        )
        if not screenshot.is_file() or screenshot.stat().st_size < 5000:
            problems.append(f"{page.name}: no screenshot (blank page?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="a run folder (every *.html in it is opened)")
    ap.add_argument("--screenshots", help="folder for one PNG per page (default: none)")
    args = ap.parse_args(argv)
    exe = browser()
    if exe is None:
        print("no Chromium found: apt-get install chromium", file=sys.stderr)
        return 2
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    problems = []
    pages = sorted(Path(args.run_dir).glob("*.html"))
    for page in pages:
        found = check_page(page, exe, shots / f"{page.stem}.png" if shots else None)
        problems += found
        print(f"{page.name}: {'ok' if not found else '; '.join(found)}")
    print(f"{len(pages)} pages, {len(problems)} problems")
    return 1 if problems or not pages else 0


if __name__ == "__main__":
    sys.exit(main())
