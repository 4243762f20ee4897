"""Progress of the long steps (loading and quantizing a model layer by layer, GPTQ calibration,
perplexity windows, bench repetitions) as tqdm bars on stderr, shown only when stderr is a
terminal (tqdm's disable=None)."""
from __future__ import annotations

import sys
from typing import Callable


def reporter(desc: str, unit: str = "layer") -> Callable[[int, int], None]:
    """A report(done, total) callback drawing one tqdm bar: created at the first report, advanced to
    `done` at each, closed when done reaches total."""
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False,
                       dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            bar = None
    return report
