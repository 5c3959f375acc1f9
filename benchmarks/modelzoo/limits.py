"""Per-step time limits, and the error categories a failure is recorded under (the step of
``fxprune.compile`` it came from)."""

from __future__ import annotations

import os
import signal
import traceback
from contextlib import contextmanager
from typing import Any, Iterator

import fxprune


class StepTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that library ``except Exception`` fallbacks
    (e.g. capture trying torch.export after fx) do not swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StepTimeout after ``seconds`` (main thread, POSIX); no limit when <= 0."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise StepTimeout(f"timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def first_line(e: BaseException, limit: int = 300) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:limit] if lines else ''}".rstrip(": ")


def detail(e: BaseException, limit: int = 1200) -> str:
    """The whole message (a capture error quotes the fx and the torch.export failures on
    separate lines) and the innermost frame, for the JSONL."""
    frames = traceback.extract_tb(e.__traceback__)
    where = (
        f" [at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} {frames[-1].name}]"
        if frames
        else ""
    )
    return (f"{type(e).__name__}: {str(e).strip()}"[:limit] + where).replace("\n", " | ")


_STAGE_OF_FILE = {
    "capture.py": "capture", "dependency.py": "analysis", "importance.py": "importance",
    "plan.py": "plan", "rewrite.py": "rewrite", "report.py": "macs", "verify.py": "verify_raised",
}  # fmt: skip


def is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def stage_of(e: BaseException) -> str:
    """The step of ``fxprune.compile`` an exception came from: the first frame below
    ``compile`` in its traceback names the file, hence the stage."""
    if isinstance(e, StepTimeout):
        return "timeout"
    if is_oom(e):
        return "oom"
    if isinstance(e, fxprune.CaptureError):
        return "capture"
    frames = traceback.extract_tb(e.__traceback__)
    for i, fr in enumerate(frames):
        if fr.name == "compile" and fr.filename.endswith(os.path.join("fxprune", "api.py")):
            if i + 1 == len(frames):
                return "api"
            return _STAGE_OF_FILE.get(os.path.basename(frames[i + 1].filename), "api")
    return "api"
