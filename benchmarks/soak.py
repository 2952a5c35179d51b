"""What the soak scripts share: one ``horovodrun`` job run with a time limit, and busy processes alongside."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Iterator, List, Optional, Tuple, Union


def run_job(command: List[str], env: dict, timeout: float, cwd: Optional[str] = None
            ) -> Tuple[Union[int, str], str, float]:
    """Run ``command``; return its exit status (``"hung"`` after ``timeout`` seconds), its stdout and
    stderr as one text, and the seconds it took."""
    tic = time.time()
    try:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        status, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as err:
        partial = [part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                   for part in (err.stdout, err.stderr)]
        status, output = "hung", "".join(partial)
    return status, output, round(time.time() - tic, 1)


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` busy-looping Python processes (CPU load) for the duration of the ``with`` block."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
