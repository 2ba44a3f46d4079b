"""Print the reliability figures quoted in README ("Reliability"), measured now on this machine.

    python Testing/Python/reliability_report.py [--large]

Builds the hostile corpus of :mod:`hostile_corpus` in a temporary folder, runs every
case through ``spine-align`` (one forked process per case), and prints the corpus
size, the cases per class and outcome, how many behaved, the slowest case and the
highest peak memory. Then runs the kill/resume and disk-fault trials of
``test_reliability.py`` and prints their result. ``--large`` also analyses a
7000 x 9000 PNG (63 M pixels, just under the ceiling) with the shipped model and
prints its time and peak memory.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hostile_corpus as hc  # noqa: E402


def corpus_figures(root: Path) -> None:
    cases = hc.build_corpus(root / "corpus")
    outcomes = hc.run_in_subprocess(cases, root / "run", preload_model=True)
    bad = {c.id: p for c, o in zip(cases, outcomes) if (p := hc.check(c, o))}
    print(f"hostile corpus: {len(cases)} cases")
    print("  by class:   " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(c.cls for c in cases).items())))
    print("  by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(c.outcome for c in cases).items())))
    by_cmd = Counter(c.argv[0] for c in cases)
    print("  by command: " + ", ".join(f"{k} {v}" for k, v in sorted(by_cmd.items())))
    print(f"  behaved as required: {len(cases) - len(bad)} of {len(cases)}; tracebacks: "
          f"{sum('Traceback' in o.stdout + o.stderr for o in outcomes)}; hangs: {sum(o.hung for o in outcomes)}")
    for cid, problems in bad.items():
        print(f"  FAILED {cid}: {problems}")
    slow = max(outcomes, key=lambda o: o.seconds)
    slow_cpu = max(outcomes, key=lambda o: o.cpu_seconds)
    peak = max(outcomes, key=lambda o: o.max_rss_mb)
    print(f"  slowest case: {slow.id} {slow.seconds:.2f} s wall; most CPU: {slow_cpu.id} {slow_cpu.cpu_seconds:.2f} s; "
          f"median {sorted(o.seconds for o in outcomes)[len(outcomes) // 2]:.2f} s wall")
    print(f"  highest peak memory: {peak.id} {peak.max_rss_mb:.0f} MB; lowest {min(o.max_rss_mb for o in outcomes):.0f}"
          " MB (every case starts with the library, torch and MONAI imported)")


def trial_figures() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hc.REPO), str(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", "-v", "-n", "0", "-p", "no:randomly", "-rs",
           str(HERE / "test_reliability.py"), "-k", "kill or write_error or full_disk or past_a_write"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=hc.REPO)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    print(f"kill/resume and disk-fault trials ({time.perf_counter() - t0:.0f} s): {tail}")
    for line in proc.stdout.splitlines():
        m = re.search(r"::(.+?) (PASSED|FAILED|SKIPPED|ERROR)", line)
        if m:
            print(f"  {m.group(2):7} {m.group(1)}")


def large_figure(root: Path) -> None:
    import numpy as np
    from PIL import Image

    png = root / "large-7000x9000.png"
    Image.fromarray(np.tile(np.arange(7000, dtype=np.uint32) % 251, (9000, 1)).astype(np.uint8)).save(
        png, compress_level=1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hc.REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "SpineAlignmentLib.cli", "-q", "analyze", str(png), "--protocol",
                           hc.PROTO, "--out", str(root / "large-out")], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    note = "" if peak > before else " (not above an earlier child's peak)"
    print(f"analyze of a 7000 x 9000 PNG (63 M pixels): exit {proc.returncode}, {seconds:.1f} s including start-up, "
          f"peak {peak / 1024:.0f} MB{note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also analyse a 63 M pixel PNG (about 30 s, 1.3 GB)")
    parser.add_argument("--no-trials", action="store_true", help="only the corpus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spinealign-reliability-") as tmp:
        root = Path(tmp)
        if args.large:
            large_figure(root)  # first: its peak is then the only child peak so far
        corpus_figures(root)
        if not args.no_trials:
            trial_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
