// Fibers for the emulation's kernels that call __syncthreads (cuda_runtime.h): a block's threads
// as fibers on the calling thread, each with its own stack, switched at every __syncthreads.
//
// Why: the GPU backend's emulated suite launches such kernels by the thousands of blocks (the
// Adam step over every parameter, the bias and batch-norm reductions of every layer). As OS
// threads meeting at a std::barrier, a barrier phase of 256 threads costs about 0.6 ms on two
// cores; as fibers it costs 512 context switches of a few nanoseconds each. Between two
// barriers the threads run one after another, in an order the scheduler in cuda_runtime.h
// varies from launch to launch (forward, reverse, shuffled), so that a missing barrier between
// one thread's write and another's read shows in some launches. The threaded mode of
// emu::launch, with real concurrency, is the other check tests/emulation's kernel tests use.
//
// x86-64 only (the context switch below saves the System V callee-saved registers; not MXCSR or
// the x87 control word, which no kernel changes); elsewhere the callers use threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#include <sys/mman.h>

#define VARNET_EMU_FIBERS 1

// varnet_emu_switch(save, load): saves the callee-saved state on the current stack and its stack
// pointer in *save, then resumes the context whose stack pointer is `load`. In a COMDAT section,
// so that every translation unit including this header may define it.
asm(R"(
  .pushsection .text.varnet_emu_switch,"axG",@progbits,varnet_emu_switch,comdat
  .weak varnet_emu_switch
  .type varnet_emu_switch,@function
varnet_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size varnet_emu_switch, .-varnet_emu_switch
  .popsection
)");
extern "C" void varnet_emu_switch(void** save, void* load);

#if defined(__SANITIZE_ADDRESS__)
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
#endif

namespace emu::fibers {

// Each fiber's stack, with an inaccessible guard page below it so that an overflow faults.
constexpr size_t kStackBytes = size_t(256) << 10;
constexpr size_t kGuardBytes = size_t(4) << 10;

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while suspended
  char* stack = nullptr;
  bool done = false;
  int64_t syncs = 0;  // __syncthreads calls
  std::string error;  // what an exception escaping the kernel said
};

struct Scheduler {
  std::vector<Fiber> fibers;
  void* sp = nullptr;  // the scheduler's saved stack pointer while a fiber runs
  Fiber* current = nullptr;
  void (*run_body)(void*) = nullptr;
  void* body = nullptr;
  ~Scheduler() {
    for (Fiber& f : fibers) munmap(f.stack - kGuardBytes, kStackBytes + kGuardBytes);
  }
};
inline thread_local Scheduler* t_scheduler = nullptr;  // set while a block runs on fibers

[[noreturn]] inline void entry() {
  Scheduler& s = *t_scheduler;
  try {
    s.run_body(s.body);
  } catch (const std::exception& e) {
    s.current->error = e.what();
  } catch (...) {
    s.current->error = "a non-standard exception";
  }
  s.current->done = true;
  varnet_emu_switch(&s.current->sp, s.sp);
  __builtin_unreachable();  // a finished fiber is never resumed
}

// Prepares f to start in entry() at its next resumption.
inline void prepare(Fiber& f) {
  if (!f.stack) {
    void* m = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("emulation: no memory for a fiber's stack");
    mprotect(m, kGuardBytes, PROT_NONE);
    f.stack = static_cast<char*>(m) + kGuardBytes;
  }
#if defined(__SANITIZE_ADDRESS__)
  // A kernel that threw left its frames' redzones poisoned (unwinding does not clear them on a
  // stack AddressSanitizer does not know); frames that returned cleared their own.
  if (!f.error.empty()) __asan_unpoison_memory_region(f.stack, kStackBytes);
#endif
  f.done = false;
  f.syncs = 0;
  f.error.clear();
  // The frame varnet_emu_switch pops: r15..rbp, then the return address. entry() starts as if
  // called: the stack pointer after `ret` is 8 modulo 16.
  auto* top = reinterpret_cast<uint64_t*>(
      (reinterpret_cast<uintptr_t>(f.stack + kStackBytes) & ~uintptr_t(15)) - 16);
  uint64_t* sp = top - 8;  // 8 words: 6 registers, the return address, and a zero above
  for (int i = 0; i < 6; ++i) sp[i] = 0;
  sp[6] = reinterpret_cast<uint64_t>(&entry);
  sp[7] = 0;
  f.sp = sp;
}

// Called by __syncthreads on a fiber: back to the scheduler until every thread has arrived.
inline void barrier() {
  Scheduler& s = *t_scheduler;
  ++s.current->syncs;
  varnet_emu_switch(&s.current->sp, s.sp);
}

}  // namespace emu::fibers

#endif
