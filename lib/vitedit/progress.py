"""Progress that suits where the code runs.

- In a terminal or JupyterLab: a ``tqdm`` bar (``tqdm.std``, never ``tqdm.auto``: without ipywidgets
  ``tqdm.auto`` prints a ``TqdmWarning`` with the virtualenv's path into every report).
- In a notebook run by papermill (``execute.papermill`` sets ``$VITEDIT_PROGRESS_LINES``): one compact
  line per step, marked with ``MARK``, written to the kernel's real stderr so that it reaches the
  console at once (ipykernel also copies it into the notebook); at most ``LINES`` lines per bar plus
  the last. The HTML report keeps only the last line of each bar (``report.coalesce_progress``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.std import tqdm

ENV = "VITEDIT_PROGRESS_LINES"
MARK = "[progress] "
LINES = 10  # lines per bar at most (plus the last); a bar of <= LINES steps prints every step


def line_mode() -> bool:
    """Whether progress is written as lines (a non-interactive kernel run by papermill)."""
    return os.environ.get(ENV, "") not in ("", "0")


class LineBar:
    """The part of tqdm's interface the library uses, printing marked lines instead of a bar."""

    def __init__(
        self,
        iterable: Iterable | None,
        desc: str,
        total: int | None,
        initial: int = 0,
        each_step: bool = False,
    ):
        self.iterable, self.desc = iterable, desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, initial, ""
        self.t0, self._last_printed = time.perf_counter(), initial
        self.every = 1 if each_step or not total else max(1, -(-total // LINES))

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **kw: Any) -> None:
        """Figures shown on the next line (call it before ``update``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self._last_printed >= self.every or (self.total and self.n >= self.total):
            self._print()

    def _print(self) -> None:
        self._last_printed = self.n
        total = f"/{self.total}" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        text = f"{MARK}{self.desc}: {self.n}{total} ({time.perf_counter() - self.t0:.0f} s{post})\n"
        err = sys.__stderr__ or sys.stderr
        err.write(text)
        err.flush()

    def close(self) -> None:
        if self.n != self._last_printed:
            self._print()


class _Quiet:
    def __init__(self, iterable: Iterable | None):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
    each_step: bool = False,
):
    """A progress bar over ``iterable`` (or one updated by hand when ``total`` is given).

    In line mode a bar prints at most ``LINES`` lines (``each_step``: one per step, e.g. per epoch),
    and an inner bar (``leave=False``: batches of one layer's keys) prints nothing."""
    if disable or (line_mode() and not leave):
        return _Quiet(iterable)
    if line_mode():
        return LineBar(iterable, desc, total, initial, each_step)
    return tqdm(iterable, desc=desc, total=total, initial=initial, leave=leave, file=sys.stderr)
