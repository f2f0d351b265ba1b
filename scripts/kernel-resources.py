#!/usr/bin/env python3
"""What each CUDA kernel costs in registers, spills, stack and shared memory, from ptxas.

The emulation (tests/emulation) checks what the kernels compute, but not what they cost the
hardware: registers, shared memory and spills to local memory are decided by ptxas for a real
architecture. This script compiles translation units that instantiate the kernels with nvcc
--resource-usage for one architecture (no GPU needed) and prints a table, one row per kernel
instantiation, most registers first. It fails (exit 1) when

  - a kernel spills registers to local memory (a slowdown nobody asked for);
  - a kernel uses so many registers that a block of the library's largest size (256 threads,
    cuda::kThreads) could not launch ("too many resources requested for launch");
  - a __global__ function declared under kernels/ was never compiled by the chosen units, so
    the table would silently miss it.

  scripts/kernel-resources.py                 # sm_90, float and double as the units instantiate
  scripts/kernel-resources.py --arch 80 --top 10
  scripts/kernel-resources.py --units benchmarks/gpu/bench_lrt.cu

CI runs it as the ctest kernel_resources wherever CMake finds CUDA (tests/CMakeLists.txt).

Exit status: 0 when nothing is wrong, 1 when something is, 2 on a usage or set-up error (no nvcc,
a unit that does not compile).
"""
import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Between them these instantiate every kernel: the whole LeNet-5 and VGG steps, the baselines'
# kernels and the plain Adam update (test_kernels.cu).
DEFAULT_UNITS = ["benchmarks/gpu/bench_step.cu", "tests/cuda/test_kernels.cu"]
REGISTERS_PER_SM = 65536  # sm_70 to sm_100: 64K 32-bit registers per block at most
LARGEST_BLOCK = 256  # the largest block the library launches (include/varnet/cuda/launch.hpp)


def die(message):
    print(f"kernel-resources: {message}", file=sys.stderr)
    sys.exit(2)


def compile_unit(nvcc, arch, system_dirs, unit):
    """ptxas's report for one translation unit (its stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-O3", "-DNDEBUG", f"--generate-code=arch=compute_{arch},code=sm_{arch}",
               "--expt-relaxed-constexpr", "-diag-suppress=20012", "-std=c++17",
               "-I", os.path.join(ROOT, "tests"), "-I", ROOT, "-I", os.path.join(ROOT, "include")]
        cmd += [f"-isystem={d}" for d in system_dirs]
        cmd += ["--resource-usage", "-c", os.path.join(ROOT, unit), "-o",
                os.path.join(tmp, "unit.o")]
        run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        die(f"{unit} does not compile for sm_{arch}:\n{run.stderr[-3000:]}")
    return run.stdout + run.stderr


def parse(report):
    """{mangled name: (registers, stack bytes, spill store bytes, spill load bytes, smem bytes)}"""
    kernels, current, frame = {}, None, (0, 0, 0)
    for line in report.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m and current:
            frame = tuple(int(g) for g in m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            smem = re.search(r"(\d+) bytes smem", line)
            kernels[current] = (int(m.group(1)),) + frame + (int(smem.group(1)) if smem else 0,)
            current, frame = None, (0, 0, 0)
    return kernels


def demangle(names):
    if not shutil.which("c++filt"):
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                         text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="90", help="compute capability without the dot [90]")
    p.add_argument("--units", nargs="+", default=DEFAULT_UNITS,
                   help="translation units to compile, relative to the repository")
    p.add_argument("--top", type=int, default=0, help="print only the N heaviest rows")
    p.add_argument("--nvcc", default=None, help="the CUDA compiler [nvcc on PATH]")
    p.add_argument("--isystem", nargs="+", default=["/usr/include/eigen3"],
                   help="system include directories: Eigen's [/usr/include/eigen3]")
    args = p.parse_args()
    if not re.fullmatch(r"\d{2,3}", args.arch):
        die(f"--arch: expected a compute capability such as 90, found '{args.arch}'")
    nvcc = args.nvcc or shutil.which("nvcc") or (os.path.isfile("/usr/local/cuda/bin/nvcc")
                                                 and "/usr/local/cuda/bin/nvcc")
    if not nvcc or not shutil.which(nvcc):
        die(f"no CUDA compiler: expected nvcc on PATH, in /usr/local/cuda/bin or given by --nvcc, "
            f"found {nvcc or 'none'}")
    for unit in args.units:
        if not os.path.isfile(os.path.join(ROOT, unit)):
            die(f"no such translation unit: {unit}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        reports = list(pool.map(lambda u: compile_unit(nvcc, args.arch, args.isystem, u),
                                args.units))
    kernels = {}
    for report in reports:
        kernels.update(parse(report))
    if not kernels:
        die("ptxas reported no kernels (did --resource-usage change its output?)")
    names = demangle(sorted(kernels))

    rows = sorted(kernels.items(), key=lambda kv: (-kv[1][0], names[kv[0]]))
    shown = rows[:args.top] if args.top > 0 else rows
    print(f"sm_{args.arch}: {len(kernels)} kernel instantiations from {', '.join(args.units)}")
    print(f"{'regs':>5} {'stack':>6} {'spill st':>9} {'spill ld':>9} {'smem':>6}  kernel")
    for name, (regs, stack, spill_st, spill_ld, smem) in shown:
        print(f"{regs:5} {stack:6} {spill_st:9} {spill_ld:9} {smem:6}  {names[name][:120]}")

    problems = []
    for name, (regs, _, spill_st, spill_ld, _) in rows:
        if spill_st or spill_ld:
            problems.append(f"{names[name]}: spills {spill_st} bytes stored, {spill_ld} loaded")
        if regs * LARGEST_BLOCK > REGISTERS_PER_SM:
            problems.append(f"{names[name]}: {regs} registers per thread; a {LARGEST_BLOCK}-thread "
                            f"block needs {regs * LARGEST_BLOCK}, the limit is {REGISTERS_PER_SM}")
    declared = set()
    for path in glob.glob(os.path.join(ROOT, "kernels", "*.cuh")):
        declared.update(re.findall(r"__global__\s+void\s+(\w+)", open(path).read()))
    compiled = {m for n in names.values() for m in re.findall(r"kernels::(\w+)", n)}
    for missing in sorted(declared - compiled):
        problems.append(f"{missing} (kernels/) was not compiled by these units: add a unit that "
                        "launches it (--units, or DEFAULT_UNITS in this script)")
    for line in problems:
        print(f"kernel-resources: {line}", file=sys.stderr)
    heaviest = rows[0]
    print(f"kernel-resources: {len(problems)} problem(s); most registers: {heaviest[1][0]} "
          f"({names[heaviest[0]].split('(')[0]}); "
          f"spills: {sum(1 for _, r in rows if r[2] or r[3])} kernel(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
