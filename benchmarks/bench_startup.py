"""Start-up time of `import rvc_peft`, `rvc-peft --help` and `rvc-peft convert --help`, written as JSON.

Each is timed as a fresh process (wall clock from spawn to exit, so interpreter start-up is included), interleaved,
median of N runs. `python -c pass` is timed the same way as the floor, and `import torch` for scale (what a command
that needs the models pays on top). Also records which heavy modules each command imported (`-X importtime` names).

    python benchmarks/bench_startup.py [--repeats 5] [--out benchmarks/results/startup_cpu.json]

Goals (issue 10.6): `rvc-peft --help` <= 1 s and `import rvc_peft` <= 1.5 s on a desktop CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "accelerate", "numpy", "huggingface_hub", "faiss", "librosa")

# The installed console script when there is one (what users run), else the same entry point through -m.
_SCRIPT = Path(sys.executable).with_name("rvc-peft")
_CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "rvc_peft.cli"]
COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "import rvc_peft": [sys.executable, "-c", "import rvc_peft"],
    "rvc-peft --help": [*_CLI, "--help"],
    "rvc-peft convert --help": [*_CLI, "convert", "--help"],
    "import torch (for scale)": [sys.executable, "-c", "import torch"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def time_once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def heavy_imports(command: list[str]) -> list[str]:
    """Top-level packages among HEAVY that the command imports (from `python -X importtime`)."""
    if command[0] != sys.executable:  # the console script: run its module with the same interpreter
        command = [sys.executable, "-m", "rvc_peft.cli", *command[1:]]
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()
             if line.startswith("import time:")}
    return sorted(names & set(HEAVY))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (median reported)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup_cpu.json"))
    args = parser.parse_args(argv)

    for command in COMMANDS.values():  # warm the OS file cache and .pyc files: the first run is not the question
        time_once(command)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # interleaved, so a burst of load from elsewhere spreads over all commands
        for name, command in COMMANDS.items():
            samples[name].append(time_once(command))
    results = {
        name: {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
               "max_s": round(max(values), 3), "heavy_imports": heavy_imports(COMMANDS[name])}
        for name, values in samples.items()
    }
    report = {
        "benchmark": "startup",
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cli": " ".join(_CLI),
        "goals_s": {"import rvc_peft": 1.5, "rvc-peft --help": 1.0},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, row in results.items():
        print(f"{name:<26} median {row['median_s']:6.3f} s  (min {row['min_s']:.3f}, max {row['max_s']:.3f})  "
              f"heavy imports: {', '.join(row['heavy_imports']) or 'none'}")
    print(f"-> {out}")
    return report


if __name__ == "__main__":
    main()
