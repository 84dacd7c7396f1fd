"""The cross-fit of the edited errors in two folds (issue 27): fold A, the first ``max_edits``
Edit-Discovery errors in set order (``edit_selection: first``), and fold B, the next ``max_edits``
(``edit_selection: second``, the swap). The swap runs at the setting chosen for its seed on fold A
(:func:`vitedit.sweep.fresh.chosen_by_seed`), so it chooses nothing; fold A's edit is judged on
fold B's errors and B's on A's, each of those errors once, by the edit that never saw it.

Importable without torch (the sweep's report reads it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SWAP = "second"  # the edit_selection that edits the errors after the first max_edits


def is_swap(df: pd.DataFrame) -> pd.Series:
    """The rows of cross-fit swaps (``edit_selection: second`` run at the setting chosen for its
    'first' twin, named by ``crossfit_of``): reported only beside that twin (:func:`crossfit`)."""
    twin = df.get("crossfit_of", pd.Series("", index=df.index))
    twin = twin.astype(object).where(twin.notna(), "").astype(str)
    sel = df.get("edit_selection", pd.Series("", index=df.index)).astype(str)
    return twin.str.len().gt(0) & sel.eq(SWAP)


def swap_of(swaps: pd.DataFrame, config_id: str, seed: int, method: str):
    """The swap row run at ``config_id`` (its twin's setting) on ``seed`` by ``method``, or None."""
    if swaps.empty:
        return None
    hit = swaps[(swaps.crossfit_of == config_id) & (swaps.seed == seed) & (swaps.method == method)]
    return hit.iloc[0] if len(hit) else None


def crossfit(first, swap) -> dict:
    """One seed's cross-fit of the errors in two folds: fold A, the first ``max_edits`` errors
    (edited by ``first``), and fold B, the next ones (edited by ``swap``, the same setting). Fold
    A's edit is judged on fold B's errors and B's on A's: every one of those errors once, by the
    edit that never saw it. Read from the per-error outcomes in set order: A's held-out errors
    begin with fold B, B's with fold A. Empty without a swap."""
    none = {
        "crossfit_fixed": np.nan,
        "crossfit_errors": np.nan,
        "crossfit_fixed_mask": "",
        "crossfit_config_id": "",
    }
    if swap is None:
        return none
    a_edit, b_edit = _mask(first.get("edit_fixed_mask")), _mask(swap.get("edit_fixed_mask"))
    a_rest, b_rest = _mask(first.get("ed_rest_fixed_mask")), _mask(swap.get("ed_rest_fixed_mask"))
    if any(m is None for m in (a_edit, b_edit, a_rest, b_rest)):
        return none
    na, nb = len(a_edit), len(b_edit)
    if len(a_rest) < nb or len(b_rest) < na:
        return none  # not the two folds of one model's errors
    m = np.concatenate([a_rest[:nb], b_rest[:na]])
    return {
        "crossfit_fixed": float(m.sum()),
        "crossfit_errors": float(len(m)),
        "crossfit_fixed_mask": "".join("y" if x else "n" for x in m),
        "crossfit_config_id": str(swap.get("config_id", "")),
    }


def _mask(v) -> np.ndarray | None:
    if not isinstance(v, str) or not v or set(v) - {"y", "n"}:
        return None
    return np.frombuffer(v.encode(), dtype=np.uint8) == ord("y")
