#!/usr/bin/env python3
"""Mutation check of the tests: do they fail when a kernel, or the CPU code, is wrong?

Each mutation in tests/emulation/mutations.json is a one-line slip in a kernel (an off-by-one, a
dropped factor, a missing barrier, a swapped operand). For each, this script edits the kernel,
rebuilds one test target, runs it, restores the kernel, and reports whether the test failed
("caught") or passed ("SURVIVED"). It first builds and runs the target unmutated, and stops if
that fails, which would make every mutation look caught. A surviving mutation is a hole in the
tests, or a mutation that changes nothing observable (say so in its "why").

The kernels run on the CPU through the emulation (tests/emulation), so no GPU is needed:

  cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release
  scripts/mutation-check.py                       # every mutation, against test_emulated_kernels
  scripts/mutation-check.py lrt-parts pool-ties   # some of them
  scripts/mutation-check.py --target test_emulated_cuda_suite \
      --test-args '"cuda::Trainer follows the host Trainer*"' adam-barrier
      # against the [cuda] suite on the emulation, one test case of it (about 4 minutes a
      # build); the suite's own CMake option VARNET_EMULATED_CUDA_SUITE must be ON

The CPU reference (the layers and ops under include/varnet, which the GPU must agree with) has
its own list, run against the CPU tests it names, in any build directory:

  scripts/mutation-check.py --mutations tests/mutations_cpu.json
  scripts/mutation-check.py --mutations tests/mutations_cpu.json lrt-e0 --target test_gradcheck

and so have the readers and writers of files (IDX, CIFAR, data order, safetensors, model files,
checkpoints), whose slips pass bad data silently rather than crash:

  scripts/mutation-check.py --mutations tests/mutations_io.json

and so have the examples' command lines, argument checks, output-path checks and resumed runs,
whose slips show only in a run of the program. That list names its ctest tests (the CLI tests,
whose environment tells them where the example programs are) and the programs to rebuild, and
runs through ctest ("run": "ctest" in the list):

  scripts/mutation-check.py --mutations tests/mutations_cli.json

as has the list for what the evaluation examples (zero_mean, curvature, adversarial, toy_blobs)
compute and write, against their CLI tests and the zero-mean conversion's unit test:

  scripts/mutation-check.py --mutations tests/mutations_examples.json

Each mutation costs a rebuild of the target (about a minute for test_emulated_kernels on two
cores) and a run. The files are restored however the script ends (short of SIGKILL); it refuses
to start when a file it would mutate has uncommitted changes. While it runs, the working tree
holds a mutated file: do not commit until it has finished (or run it in a clone). A test binary
that runs past --timeout is stopped and counts as failed. Exit status: 0 when every mutation
run was caught, 1 when some survived, 2 on a usage or set-up error.
"""
import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTATIONS = os.path.join("tests", "emulation", "mutations.json")
# build_and_run's status for a test binary stopped at --timeout (not an exit status).
TIMED_OUT = "timed out"


def die(message):
    """A usage or set-up error: exit status 2."""
    print(f"mutation-check: {message}", file=sys.stderr)
    sys.exit(2)


def load_mutations(path):
    """(the list's settings, its mutations). A list file is either a JSON list of mutations, or an
    object {"targets": [test targets], "mutations": [...]}, optionally with "programs": [other
    targets to build before the tests run, such as the example programs a CLI test drives] and
    "run": "ctest" (run the targets as the ctest tests of those names, in their ctest environment,
    instead of running the binaries directly). A mutation may name its own "targets" and
    "programs", which replace the list's for it (the tests of the code it touches)."""
    try:
        with open(os.path.join(ROOT, path)) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read the mutation list {path}: {e}")
    settings, mutations = {}, data
    if isinstance(data, dict):
        settings, mutations = data, data.get("mutations")
        targets = data.get("targets")
        if not isinstance(targets, list) or not targets or not isinstance(mutations, list):
            die(f"{path}: expected an object with a non-empty list 'targets' and a list "
                "'mutations'")
        if data.get("run", "binary") not in ("binary", "ctest"):
            die(f"{path}: 'run' must be \"binary\" or \"ctest\", found {data['run']!r}")
        if not isinstance(data.get("programs", []), list):
            die(f"{path}: 'programs', where given, must be a list")
    if not isinstance(mutations, list):
        die(f"{path}: expected a list of mutations, found {type(mutations).__name__}")
    for m in mutations:
        for key in ("id", "file", "find", "replace", "why"):
            if key not in m:
                die(f"{path}: entry {m.get('id', '?')} has no '{key}'")
        own = m.get("targets")
        if own is not None and (not isinstance(own, list) or not own):
            die(f"{path}: entry {m['id']}: 'targets', where given, must be a non-empty list")
        if not isinstance(m.get("programs", []), list):
            die(f"{path}: entry {m['id']}: 'programs', where given, must be a list")
    return settings, mutations


def apply(m):
    """Returns the file's original text after writing the mutated one."""
    path = os.path.join(ROOT, m["file"])
    with open(path) as f:
        text = f.read()
    count = text.count(m["find"])
    if count != 1:
        die(f"{m['id']}: expected its text once in {m['file']}, found it {count} times "
            "(the code changed: update the mutation list)")
    with open(path, "w") as f:
        f.write(text.replace(m["find"], m["replace"]))
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ids", nargs="*", help="mutations to run (default: all)")
    p.add_argument("--build", default="build-emu", help="a configured build directory")
    p.add_argument("--mutations", default=MUTATIONS,
                   help=f"the mutation list, relative to the repository [{MUTATIONS}]")
    p.add_argument("--target", nargs="+", default=None,
                   help="the test targets; a mutation is caught when one of them fails [the "
                        "mutation's own 'targets', else the list's, else test_emulated_kernels]")
    p.add_argument("--test-args", default="",
                   help="arguments for the test binaries, e.g. a Catch2 test name to run only it")
    p.add_argument("--jobs", default=str(os.cpu_count() or 2), help="build jobs")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds a test binary may run; one that runs longer is stopped and the "
                        "mutation counts as caught (a hang is a failure a user sees) [900]")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--verify", action="store_true",
                   help="only check that every mutation's text is found once in its file "
                        "(a ctest: the list must follow the kernels as they change)")
    args = p.parse_args()
    # A kill by SIGTERM still restores the mutated file (the finally below); output piped into
    # `head` ends quietly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    settings, mutations = load_mutations(args.mutations)
    default_targets = settings.get("targets") or ["test_emulated_kernels"]
    by_ctest = settings.get("run") == "ctest"
    if by_ctest and args.test_args:
        die(f"--test-args does not apply to {args.mutations}, whose tests run through ctest")

    def targets_of(m):
        return args.target or m.get("targets") or default_targets

    def programs_of(m):
        return m.get("programs", settings.get("programs", []))
    if args.list:
        for m in mutations:
            built = " ".join(programs_of(m))
            print(f"{m['id']:18} {m['file']:28} {m['why']}  [{' '.join(targets_of(m))}"
                  + (f"; rebuilds {built}]" if built else "]"))
        return 0
    if args.verify:
        ids = [m["id"] for m in mutations]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        problems = [f"{i}: the id is used twice" for i in twice]
        for m in mutations:
            path = os.path.join(ROOT, m["file"])
            count = open(path).read().count(m["find"]) if os.path.isfile(path) else -1
            if count != 1:
                problems.append(f"{m['id']}: expected its text once in {m['file']}, found "
                                + ("no such file" if count < 0 else f"it {count} times"))
        for line in problems:
            print(f"mutation-check: {line}", file=sys.stderr)
        print(f"mutation-check: {len(mutations)} mutations, "
              + (f"{len(problems)} problem(s): update {args.mutations}" if problems
                 else "each found once in its file"))
        return 1 if problems else 0
    known = {m["id"] for m in mutations}
    unknown = [i for i in args.ids if i not in known]
    if unknown:
        print(f"mutation-check: unknown mutation(s) {', '.join(unknown)}; --list shows them",
              file=sys.stderr)
        return 2
    chosen = [m for m in mutations if not args.ids or m["id"] in args.ids]
    build = os.path.join(ROOT, args.build)
    if not os.path.isfile(os.path.join(build, "CMakeCache.txt")):
        print(f"mutation-check: {args.build} is not a configured build directory "
              "(cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release)", file=sys.stderr)
        return 2
    files = sorted({m["file"] for m in chosen})
    dirty = subprocess.run(["git", "status", "--porcelain", "--"] + files, cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print(f"mutation-check: uncommitted changes in files it would mutate:\n{dirty}",
              file=sys.stderr)
        return 2
    log_dir = os.path.join(build, "mutation-logs")
    os.makedirs(log_dir, exist_ok=True)
    all_targets = list(dict.fromkeys(t for m in chosen for t in targets_of(m)))
    all_programs = list(dict.fromkeys(p for m in chosen for p in programs_of(m)))

    def build_cmd(targets):
        return ["cmake", "--build", build, "--target"] + targets + ["-j", args.jobs]

    def ctest_cmd(targets):
        names = "|".join(targets)
        return ["ctest", "--test-dir", build, "-R", f"^({names})$", "--output-on-failure",
                "--timeout", f"{args.timeout:.0f}"]

    def run_by_ctest(out, targets):
        # A test name that matches no ctest test would run nothing and pass.
        listed = subprocess.run(ctest_cmd(targets) + ["-N"], capture_output=True,
                                text=True).stdout
        missing = [t for t in targets if f": {t}\n" not in listed]
        if missing:
            die(f"{', '.join(missing)}: no such ctest test in {args.build}")
        out.write(f"\n==== ctest {' '.join(targets)}\n")
        out.flush()
        try:
            # errors="replace": a failing test may print raw bytes (a Catch2 message
            # expanding a byte vector); the log must not end the run.
            done = subprocess.run(ctest_cmd(targets), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace",
                                  timeout=args.timeout * len(targets) + 60)
        except subprocess.TimeoutExpired:
            out.write(f"\n==== ctest: stopped after {args.timeout:.0f} s a test\n")
            return TIMED_OUT
        out.write(done.stdout)
        if done.returncode != 0 and "***Timeout" in done.stdout:
            return TIMED_OUT
        return done.returncode

    def build_and_run(log_path, targets, programs):
        """None when a target does not build, else 0 when every test passed, or the exit status
        of the first that failed."""
        with open(log_path, "w") as out:
            if subprocess.run(build_cmd(targets + programs), stdout=out,
                              stderr=subprocess.STDOUT).returncode != 0:
                return None
            if by_ctest:
                return run_by_ctest(out, targets)
            for target in targets:
                binary = os.path.join(build, "tests", target)
                if not os.path.isfile(binary):
                    die(f"built {target}, but found no {binary} to run")
                out.write(f"\n==== {target} {args.test_args}\n")
                out.flush()
                try:
                    rc = subprocess.run([binary] + shlex.split(args.test_args), stdout=out,
                                        stderr=subprocess.STDOUT, cwd=os.path.dirname(binary),
                                        timeout=args.timeout).returncode
                except subprocess.TimeoutExpired:
                    out.write(f"\n==== {target}: stopped after {args.timeout:.0f} s\n")
                    return TIMED_OUT
                if rc != 0:
                    return rc
            return 0

    # The unmutated sources first: a target that does not build, or tests that already fail,
    # would make every mutation look caught. Configured again first, so that a test file added
    # since the build directory was configured is a target.
    baseline_log = os.path.join(log_dir, "baseline.log")
    with open(baseline_log, "w") as out:
        if subprocess.run(["cmake", build], stdout=out, stderr=subprocess.STDOUT).returncode:
            die(f"cmake {args.build} failed (see {baseline_log})")
    rc = build_and_run(baseline_log, all_targets, all_programs)
    if rc is None:
        print(f"mutation-check: {' '.join(all_targets)} do not build in {args.build} without "
              f"mutations (see {baseline_log}; the emulated suite needs "
              "VARNET_EMULATED_CUDA_SUITE=ON)", file=sys.stderr)
        return 2
    if rc != 0:
        print(f"mutation-check: {' '.join(all_targets)} fail without mutations "
              f"(see {baseline_log}); fix that first", file=sys.stderr)
        return 2
    print("mutation-check: the unmutated tests pass. The working tree holds a mutated file "
          "until this ends: do not commit meanwhile", flush=True)
    survived = []
    for n, m in enumerate(chosen, 1):
        start = time.time()
        path = os.path.join(ROOT, m["file"])
        original = apply(m)
        try:
            rc = build_and_run(os.path.join(log_dir, m["id"] + ".log"), targets_of(m),
                               programs_of(m))
        finally:
            with open(path, "w") as f:
                f.write(original)
        if rc is None:
            verdict = "does not build (a broken mutation: fix its text)"
            survived.append(m["id"])
        elif rc == 0:
            verdict = "SURVIVED"
            survived.append(m["id"])
        elif rc == TIMED_OUT:
            verdict = "caught (timed out)"
        else:
            verdict = "caught"
        print(f"[{n}/{len(chosen)}] {m['id']:18} {verdict:9} {time.time() - start:5.0f} s   "
              f"{m['why']}", flush=True)
    # Leave the build matching the restored sources.
    subprocess.run(build_cmd(all_targets + all_programs), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print(f"mutation-check: {len(chosen) - len(survived)} of {len(chosen)} caught"
          + (f"; not caught: {', '.join(survived)} (logs in {log_dir})" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
