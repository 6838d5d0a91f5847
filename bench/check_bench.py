"""How long `lwdsl check` takes on recipes just under the 1 MiB limit, of several shapes, and on
one just under the token limit (``MAX_RECIPE_TOKENS``; larger ones are refused before parsing,
exit 2).

Prints one line per shape: wall seconds, CPU seconds and peak memory of `lwdsl check FILE` in a
subprocess (figures, never assertions; tests only check that such recipes complete). Run:

    .venv/bin/python bench/check_bench.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lwdsl.limits import MAX_RECIPE_BYTES

LWDSL = str(Path(sys.executable).with_name("lwdsl"))
BYTES = MAX_RECIPE_BYTES - 1024


def repeat(line: str, sep: str = "\n") -> str:
    return sep.join([line] * (BYTES // (len(line) + len(sep)))) + "\n"


SHAPES = {
    "steps (prune l1 0.2 on conv, one a line)": repeat("prune l1 0.2 on conv"),
    "short steps (finetune, one a line)": repeat("finetune"),
    "steps joined by | on one line": repeat("finetune epochs=1", " | "),
    "quantize steps with distinct globs": "\n".join(f'quantize int8 on "l{i}"' for i in range(BYTES // 26)) + "\n",
    "steps at the token limit (49,995 tokens)": "prune l1 0.2 on conv\n" * 9_999,
    "comments": repeat("# a comment line, as long as a long sentence of prose would be") + "prune l1 0.2\n",
    "blank lines": "\n" * BYTES + "prune l1 0.2\n",
    "one list of 520,000 words": "distill teacher=[" + ",".join(["a"] * (BYTES // 2 - 20)) + "]\n",
    "one selector of 260,000 globs": "prune l1 0.2 on " + ",".join(['"a"'] * (BYTES // 4 - 10)) + "\n",
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in SHAPES.items():
            path = Path(tmp) / "big.lw"
            path.write_text(text)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run([LWDSL, "check", str(path)], capture_output=True, text=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
            print(f"{name:45s} {len(text.encode()) / 2**20:5.2f} MiB  {wall:6.2f} s wall  {cpu:6.2f} s cpu  "
                  f"{after.ru_maxrss / 1024:6.0f} MB peak  {status}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
