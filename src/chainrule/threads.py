"""How many threads NumPy's BLAS may use while chainrule trains.

Small networks gain nothing from BLAS threads, and on a shared 2-core machine
threads that wait for each other made a digits run 20x slower (measured: 60 s
against 3 s), so runs, sweeps and the benchmark choose the count explicitly.
"""

from __future__ import annotations

from typing import Any


class limit_threads:
    """Context manager: NumPy's BLAS limited to ``threads`` (None: unchanged), through threadpoolctl.

    Example:
        >>> with limit_threads(1):
        ...     cr.fit(model, "cross_entropy", opt, X, y)
    """

    def __init__(self, threads: int | None):
        self.threads = threads
        self._ctx = None

    def __enter__(self) -> "limit_threads":
        if self.threads is not None:
            from threadpoolctl import threadpool_limits

            self._ctx = threadpool_limits(limits=int(self.threads), user_api="blas")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.restore_original_limits()
