"""Run the fuzz harnesses: ``python -m fuzz.run TARGET|all [--runs N] [--seconds S]``.

Each target runs in its own process (libFuzzer owns the process and exits when done): seeds are generated there
(valid files, see :mod:`fuzz.seeds`), the code under test is imported with atheris' coverage instrumentation, and
libFuzzer mutates from the seeds, keeping inputs that reach new coverage in ``WORKDIR/corpus/TARGET`` (reused by
the next run). A crash (an exception other than the reader's contract allows, a native crash, memory above
``--rss-limit-mb``) is saved as ``WORKDIR/crashes/TARGET-crash-*`` and makes the run fail (exit code 1); an input
slower than ``--timeout`` seconds is reported, and fails the run only with ``--fail-on-timeout``.

Reproduce a saved input with ``python -m fuzz.run TARGET --replay FILE...`` (no atheris needed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

TARGETS: tuple[str, ...] = ("sniff", "image", "video", "checkpoint", "pth", "upload", "index_csv", "train_yaml")
ROOT = Path(__file__).resolve().parents[1]

_STAT = re.compile(r"^#(\d+)\s+(INITED|NEW|REDUCE|pulse|DONE|RELOAD)\s+cov: (\d+) ft: (\d+)(?: corp: (\d+))?")


@dataclass
class Result:
    target: str
    outcome: str  # ok | crash | oom | timeout | error
    executions: int
    cov_start: int | None
    cov_end: int | None
    features_end: int | None
    corpus: int | None
    seconds: float
    artifact: str | None
    log: str


def _harness(target: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"fuzz.{target}")


def _worker(target: str, libfuzzer_args: list[str]) -> None:
    """Inside the per-target process: instrument the code under test, then hand the process to libFuzzer."""
    import atheris

    harness = _harness(target)
    include = list(harness.INSTRUMENT)
    if os.environ.get("CEVIT_FUZZ_DEEP") == "1":
        include += list(getattr(harness, "INSTRUMENT_DEEP", ()))
    with atheris.instrument_imports(include=include):
        harness.load()
    atheris.Setup([sys.argv[0], *libfuzzer_args], harness.one_input)
    atheris.Fuzz()


def _seed(target: str, folder: str) -> None:
    _harness(target).seed(Path(folder))


def _parse(target: str, log: Path, rc: int, seconds: float, crashes: Path) -> Result:
    text = log.read_text(encoding="utf-8", errors="replace")
    executions, cov_start, cov_end, ft, corp = 0, None, None, None, None
    for line in text.splitlines():
        m = _STAT.match(line)
        if m:
            executions = max(executions, int(m.group(1)))
            cov = int(m.group(3))
            if m.group(2) == "INITED":
                cov_start = cov
            cov_end, ft = cov, int(m.group(4))
            corp = int(m.group(5)) if m.group(5) else corp
        done = re.match(r"^Done (\d+) runs", line)
        if done:
            executions = max(executions, int(done.group(1)))
    artifact = None
    found = re.search(r"Test unit written to (\S+)", text)
    if found:
        artifact = found.group(1)
    if rc == 0:
        outcome = "ok"
    elif "out-of-memory" in text:
        outcome = "oom"
    elif "ERROR: libFuzzer: timeout" in text or "ALARM: working on the last Unit" in text:
        outcome = "timeout"
    elif "Uncaught Python exception" in text or "deadly signal" in text or "ERROR: libFuzzer" in text:
        outcome = "crash"
    else:
        outcome = "error"
    return Result(target=target, outcome=outcome, executions=executions, cov_start=cov_start, cov_end=cov_end,
                  features_end=ft, corpus=corp, seconds=round(seconds, 1), artifact=artifact, log=str(log))  # fmt: skip


def run_target(target: str, *, workdir: Path, runs: int | None, seconds: int | None, timeout: int,
               rss_limit_mb: int, quiet: bool, deep: bool = False, seed: int | None = None) -> Result:  # fmt: skip
    seeds, corpus, crashes, logs = (workdir / d / target for d in ("seeds", "corpus", "crashes", "logs"))
    for d in (seeds, corpus, crashes.parent, logs.parent):
        d.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("OMP_NUM_THREADS", "1")
    env["CEVIT_FUZZ_DEEP"] = "1" if deep else "0"
    if not any(seeds.iterdir()):
        subprocess.run([sys.executable, "-m", "fuzz.run", "--seed-into", str(seeds), target], env=env, check=True)
    args = [f"-timeout={timeout}", f"-rss_limit_mb={rss_limit_mb}", f"-artifact_prefix={crashes}-",
            "-print_final_stats=1", str(corpus), str(seeds)]  # fmt: skip
    if runs is not None:
        args.insert(0, f"-runs={runs}")
    if seconds is not None:
        args.insert(0, f"-max_total_time={seconds}")
    if seed is not None:
        args.insert(0, f"-seed={seed}")
    log = workdir / "logs" / f"{target}.log"
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.run([sys.executable, "-m", "fuzz.run", "--worker", target, "--", *args], env=env,
                            stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode  # fmt: skip
    result = _parse(target, log, rc, time.monotonic() - start, crashes)
    if result.outcome != "ok" and not quiet:
        sys.stderr.write(log.read_text(encoding="utf-8", errors="replace")[-4000:])
    return result


def replay(target: str, files: list[str]) -> int:
    """Run ``files`` through the harness without atheris; print each outcome; 1 when any breaks the contract."""
    harness = _harness(target)
    harness.load()
    bad = 0
    for name in files:
        try:
            harness.one_input(Path(name).read_bytes())
            print(f"{name}: ok")
        except Exception:  # noqa: BLE001 - reporting the contract violation is the point
            bad += 1
            print(f"{name}: CONTRACT VIOLATION\n{traceback.format_exc()}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        sep = argv.index("--")
        _worker(argv[1], argv[sep + 1 :])
        return 0
    if argv[:1] == ["--seed-into"]:
        _seed(argv[2], argv[1])
        return 0
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--runs", type=int, default=None, help="executions per target (libFuzzer -runs)")
    parser.add_argument("--seconds", type=int, default=None, help="time per target, excluding start-up")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".fuzz", help="seeds, corpus, crashes, logs")
    parser.add_argument("--timeout", type=int, default=60, help="seconds one input may take (default 60)")
    parser.add_argument("--rss-limit-mb", type=int, default=3072, help="memory of the fuzzing process")
    parser.add_argument("--deep", action="store_true",
                        help="also instrument the libraries a harness names in INSTRUMENT_DEEP (pth: torch's "
                        "unpickler): better coverage guidance, slower start; for long campaigns")  # fmt: skip
    parser.add_argument("--fail-on-timeout", action="store_true", help="a slow input fails the run too")
    parser.add_argument("--seed", type=int, default=None,
                        help="libFuzzer's random seed (default: a new one each run). With a fixed seed a run "
                        "repeats the same mutations, so a time-bounded smoke run on a slower machine only stops "
                        "earlier in the same sequence (CI uses --seed 1)")  # fmt: skip
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once, no fuzzing")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.replay:
        if args.target == "all":
            parser.error("--replay needs one target")
        return replay(args.target, args.replay)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz: atheris is not installed (pip install -e '.[fuzz]')", file=sys.stderr)
        return 2
    if args.runs is None and args.seconds is None:
        parser.error("give --runs N and/or --seconds S")
    targets = TARGETS if args.target == "all" else (args.target,)
    results = []
    print(f"{'target':<12} {'outcome':<8} {'executions':>10} {'cov start->end':>15} {'ft':>6} {'corpus':>6} {'s':>6}")
    for target in targets:
        r = run_target(target, workdir=args.workdir, runs=args.runs, seconds=args.seconds, timeout=args.timeout,
                       rss_limit_mb=args.rss_limit_mb, quiet=False, deep=args.deep, seed=args.seed)  # fmt: skip
        results.append(r)
        cov = f"{r.cov_start}->{r.cov_end}"
        print(f"{r.target:<12} {r.outcome:<8} {r.executions:>10} {cov:>15} {r.features_end or 0:>6} "
              f"{r.corpus or 0:>6} {r.seconds:>6}" + (f"  {r.artifact}" if r.artifact else ""), flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    failed = [r for r in results if r.outcome in ("crash", "oom", "error")
              or (r.outcome == "timeout" and args.fail_on_timeout)]  # fmt: skip
    if failed:
        print(f"fuzz: {len(failed)} target(s) failed: {', '.join(r.target for r in failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
