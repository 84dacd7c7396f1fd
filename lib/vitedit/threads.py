"""``num_threads`` reaching every thread pool: torch's, OpenMP's, oneDNN's and the BLAS libraries'.

``torch.set_num_threads`` alone sets torch's intra-op pool of the process that calls it, after the
libraries have sized theirs; a notebook kernel or a job started without it sized its pools for
every core. Beside a busy neighbour on 2 cores such a process runs about 10x slower (the tracing
stage: 86 s against 8 s with ``OMP_NUM_THREADS=1`` exported, issue 26). So a thread count is
exported in the environment before a child process (a kernel, a sweep job) starts, where the
libraries read it when they load, and applied in-process as well (:func:`apply`) for a notebook
run by hand.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# the variables the thread pools read when their library loads (OpenMP covers torch's intra-op
# pool and oneDNN; MKL and OpenBLAS are numpy's or torch's BLAS, whichever is installed)
POOL_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def environment(n: int | None) -> dict[str, str]:
    """The environment that gives a child process ``n`` threads in every pool ({} for None)."""
    return {} if not n else {v: str(int(n)) for v in POOL_VARIABLES}


@contextlib.contextmanager
def exported(n: int | None) -> Iterator[None]:
    """``n`` threads for the child processes started inside the block (then the old values)."""
    env = environment(n)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def apply(n: int | None) -> None:
    """``n`` threads in this process: exported for its children and for libraries not yet loaded,
    and set in torch's pools if torch is loaded (the inter-op pool only while torch has not used
    it yet; later it stays as it is)."""
    if not n:
        return
    os.environ.update(environment(n))
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.set_num_threads(int(n))
    with contextlib.suppress(RuntimeError):  # "cannot set ... after parallel work has started"
        torch.set_num_interop_threads(int(n))


def in_use() -> int | None:
    """torch's intra-op thread count in this process (None when torch is not loaded)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())
