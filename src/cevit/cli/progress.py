"""A progress bar on stderr for long CLI work (off when stderr is not a terminal or with --quiet)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(desc: str, *, unit: str = "item", enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``(done, total)`` callback driving a tqdm bar, or None when the bar is off."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(unit=unit, desc=desc, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
