"""Short-lived child processes for work that must not run in a server backend: building or loading a Keras
model whose size a user chose (the memory guard's measurement, import_model's check).

A backend that runs out of memory takes every backend of the server down with it; a child under an address-space
rlimit only fails. The child is this package's own module run as ``python -m``, the request on stdin, its
answer the last line of its stdout (one JSON object).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Address space of a child: TensorFlow needs about 1.6 GB.
ADDRESS_SPACE = 4 * 2**30
TIMEOUT_S = 300.0


def run(module: str, request: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module`` with ``request`` as JSON on stdin (raises ``subprocess.TimeoutExpired``
    after :data:`TIMEOUT_S`)."""
    # The embedded interpreter's sys.executable is not Python; its base installation's is.
    interpreter = os.path.join(sys.base_exec_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    environment = {
        **os.environ,
        # This package's own directory first: an editable install finds it by an import hook, not sys.path.
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), *(p for p in sys.path if p)]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # Thread pools reserve address space per core; the child computes next to nothing.
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
    }
    return subprocess.run(  # noqa: S603 - a fixed module of this package, the request on stdin
        [interpreter, "-m", module],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=environment,
        check=False,
    )


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The child's answer, or ``{}`` if it died without one (out of memory: TensorFlow aborts on a failed
    allocation)."""
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if done.returncode == 0 and lines else {}


def died(done: subprocess.CompletedProcess[str]) -> str:
    """Why a child that gave no answer ended, for the refusal."""
    return f"exit status {done.returncode}: {done.stderr.strip()[-300:]}"


def limit_address_space() -> None:
    """In the child, first thing: a failed allocation beyond :data:`ADDRESS_SPACE` raises instead of growing."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def is_memory_error(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is an allocation that failed under the limit."""
    return any(type(e).__name__ in ("MemoryError", "ResourceExhaustedError") for e in (error, error.__context__))
