"""Every README command on the demo, each in its own process: does any third-party line show?

    .venv/bin/python benchmarks/readme_quiet.py [--out DIR]

Starts as the README does (``quotacast demo --size small`` in a fresh directory with MLflow
and the alert store on SQLite files there), then runs every ``quotacast`` line of the README's
``bash`` blocks in order as a real process (``.venv/bin/quotacast``), with the README's example
names swapped for the small company's exactly as ``tests/test_readme.py`` does. A fresh process
per command matters: chatter comes from import-time logger set-up (cmdstanpy, Prophet, MLflow)
that an in-process test run hides. Each stderr line is matched against the marks third-party
loggers and libraries leave (a logging level prefix, ``cmdstanpy``, ``Importing plotly``,
MLflow's ``Successfully registered``/``Created version``, ``[LightGBM]``, Python warnings);
any match is printed and the script exits 1. ``serve`` is asked for ``--help`` only.

The suite keeps the in-process checks (tests/test_quiet.py, tests/test_readme.py); this is the
end-to-end measurement behind "no command prints a line from a third-party logger" (about 5-10
minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_readme import LONG_RUNNING, Company, adapt, readme_commands  # noqa: E402

THIRD_PARTY = re.compile(
    r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ]|^\d{2}:\d{2}:\d{2} - |cmdstanpy|Importing plotly|"
    r"Successfully registered|Created version|\[LightGBM\]|(Future|Deprecation|User|Runtime)"
    r"Warning|^\s*warnings\.warn|py4j|Traceback")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = str(Path(sys.executable).with_name("quotacast"))
    return subprocess.run([binary, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the working directory here (default: a temporary one)")
    options = parser.parse_args()
    root = options.out or Path(tempfile.mkdtemp(prefix="readme-quiet-"))
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "rules", root / "rules", dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUOTACAST_") and k != "PYTHONWARNINGS"}
    env["QUOTACAST_MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env["QUOTACAST_DATABASE_URL"] = f"sqlite:///{root / 'quotacast.db'}"
    loud: list[tuple[str, str]] = []
    codes: dict[int, int] = {}
    started = time.perf_counter()
    demo = run(["demo", "--size", "small"], root, env)
    loud += [("demo --size small", line) for line in demo.stderr.splitlines()
             if THIRD_PARTY.search(line)]
    company = Company(root / "demo-data")
    for words in readme_commands():
        args, _ = adapt(words, company)
        if args[0] in LONG_RUNNING:
            args = [*args, "--help"]
        done = run(args, root, env)
        codes[done.returncode] = codes.get(done.returncode, 0) + 1
        said = " ".join(args)[:90]
        loud += [(said, line) for line in done.stderr.splitlines() if THIRD_PARTY.search(line)]
        print(f"exit {done.returncode}  {said}", flush=True)
    seconds = time.perf_counter() - started
    print(f"\n{sum(codes.values())} README commands (+ demo) in {seconds:.0f} s, exit codes "
          f"{dict(sorted(codes.items()))}; third-party lines: {len(loud)}")
    for said, line in loud:
        print(f"  {said}: {line[:160]}")
    return 1 if loud else 0


if __name__ == "__main__":
    sys.exit(main())
