// The CUDA runtime API the library calls, emulated on the host: device memory, streams, stream
// capture into graphs, events, errors and the device's properties. Included by the stand-in
// cuda_runtime.h (next to it), so that the library's GPU backend (include/varnet/cuda/), its
// launchers and the [cuda] parity tests (tests/cuda/) compile with a host compiler and run on the
// CPU: the test_emulated_cuda_suite target. See cuda_runtime.h for what emulating kernels cannot
// see; this file adds what it checks and what it cannot see of the runtime.
//
// Device memory is host memory from operator new (so AddressSanitizer bounds every buffer, as
// compute-sanitizer's memcheck would on a GPU) and starts filled with 0xFF bytes: NaN as float or
// double, -1 as an integer, so a kernel that reads memory nothing wrote gives NaN rather than the
// zeros fresh memory often holds on a GPU. Copies and memsets check that their device side lies
// inside one allocation, and report what they found otherwise.
//
// Streams run every operation at once, on the calling thread, in the order enqueued: a stream's
// order is kept, but no two operations ever overlap, so a missing synchronisation between streams
// or with the host goes unnoticed. While a stream is captured, its operations are recorded
// instead, with their arguments as at the launch, and a graph launch replays them. As on a GPU, a
// captured thread may not allocate, free or synchronise (cudaStreamCaptureModeGlobal and
// ThreadLocal), the legacy default stream may not be used, and such a call invalidates the
// capture (cudaStreamEndCapture then fails).
//
// A kernel that throws (a launch that breaks the rules in cuda_runtime.h, a cuBLAS operand
// outside device memory) is a fault: as on a GPU the error is sticky, every later runtime call
// returns cudaErrorLaunchFailure, and the reason is printed to stderr once.
//
// What it cannot see: races between streams or with the host (everything is synchronous),
// memory visibility, the speed of anything, and memory pressure (allocations up to
// kEmulatedMemory bytes succeed while the host has them).
#pragma once

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// ---- types and constants, with the runtime's values ----

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureImplicit = 906,
  cudaErrorIllegalState = 401,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};

struct cudaDeviceProp {
  char name[256] = {};
  size_t totalGlobalMem = 0;
  int major = 0, minor = 0;
  int multiProcessorCount = 0;
  int maxThreadsPerBlock = 0;
};

namespace emu {
using Operation = std::function<void()>;
struct Graph {
  std::vector<Operation> operations;
};
}  // namespace emu

struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;  // a forbidden call during the capture: EndCapture fails
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;  // the thread that began the capture
  emu::Graph recorded;
};
struct CUevent_st {
  bool recorded = false;
  std::chrono::steady_clock::time_point when;
};
struct CUgraph_st : emu::Graph {};
struct CUgraphExec_st : emu::Graph {};
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
using cudaGraph_t = CUgraph_st*;
using cudaGraphExec_t = CUgraphExec_st*;

namespace emu {

// What the emulated device reports as its memory; larger allocations fail as on a real device.
constexpr size_t kEmulatedMemory = size_t(16) << 30;

namespace detail {

struct Runtime {
  std::mutex m;
  std::map<const char*, size_t> allocations;  // start -> bytes
  size_t allocated = 0;
  cudaError_t sticky = cudaSuccess;    // a kernel fault: every later call returns it
  std::vector<CUstream_st*> captures;  // streams being captured
};
inline Runtime& runtime() {
  static Runtime* r = new Runtime();  // leaked: static destructors may still free buffers
  return *r;
}
inline thread_local cudaError_t t_last_error = cudaSuccess;

inline cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}
inline cudaError_t sticky() {
  std::lock_guard<std::mutex> lock(runtime().m);
  return runtime().sticky;
}

// The capture this thread may not break: a Global capture anywhere, or a ThreadLocal one begun
// by this thread. Null when none.
inline CUstream_st* guarding_capture() {
  std::lock_guard<std::mutex> lock(runtime().m);
  for (CUstream_st* s : runtime().captures)
    if (s->mode == cudaStreamCaptureModeGlobal ||
        (s->mode == cudaStreamCaptureModeThreadLocal && s->owner == std::this_thread::get_id()))
      return s;
  return nullptr;
}
// A call that is not allowed during a capture: invalidates it and returns the error to report.
inline cudaError_t unsafe_during_capture(const char* call) {
  CUstream_st* s = guarding_capture();
  if (!s) return cudaSuccess;
  s->invalidated = true;
  std::fprintf(stderr, "emulated CUDA: %s during a stream capture invalidates the capture\n", call);
  return fail(cudaErrorStreamCaptureUnsupported);
}

inline void fault(const std::string& what) {
  std::lock_guard<std::mutex> lock(runtime().m);
  if (runtime().sticky == cudaSuccess)
    std::fprintf(stderr, "emulated CUDA: device fault: %s\n", what.c_str());
  runtime().sticky = cudaErrorLaunchFailure;
}

// Runs `op` now, or records it when `stream` is being captured.
inline cudaError_t enqueue(cudaStream_t stream, Operation op) {
  if (const cudaError_t e = sticky(); e != cudaSuccess) return fail(e);
  if (!stream) {
    // The legacy stream synchronises with every blocking stream: not during a capture.
    if (CUstream_st* s = guarding_capture()) {
      s->invalidated = true;
      return fail(cudaErrorStreamCaptureImplicit);
    }
  } else if (stream->capturing) {
    if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    stream->recorded.operations.push_back(std::move(op));
    return cudaSuccess;
  }
  try {
    op();
  } catch (const std::exception& e) {
    fault(e.what());
    return fail(cudaErrorLaunchFailure);
  }
  return cudaSuccess;
}

}  // namespace detail

// True when [p, p + bytes) lies inside one device allocation (bytes = 0: p inside or at the end).
inline bool device_range(const void* p, size_t bytes) {
  auto& r = detail::runtime();
  std::lock_guard<std::mutex> lock(r.m);
  const char* c = static_cast<const char*>(p);
  auto it = r.allocations.upper_bound(c);
  if (it == r.allocations.begin()) return false;
  --it;
  const size_t offset = size_t(c - it->first);
  return offset <= it->second && bytes <= it->second - offset;
}
inline std::string describe(const void* p, size_t bytes) {
  char text[96];
  std::snprintf(text, sizeof text, "[%p, +%zu bytes)", p, bytes);
  return text;
}

// Checks a launch's shape as the device would (cudaErrorInvalidConfiguration when it breaks a
// limit), then runs it with launch() in cuda_runtime.h, or records it during a capture.
template <class Body>
void launch_on(cudaStream_t stream, dim3 grid, dim3 block, bool barriers, Body body) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  const bool valid = threads >= 1 && threads <= 1024 && block.z <= 64 && grid.x >= 1 &&
                     grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7FFFFFFFu && grid.y <= 65535 &&
                     grid.z <= 65535;
  if (!valid) {
    detail::fail(cudaErrorInvalidConfiguration);
    return;
  }
  (void)detail::enqueue(stream, [grid, block, barriers, body]() mutable {
    if (barriers)
      launch_fibers(grid, block, body);
    else
      launch(grid, block, false, body);
  });
}

}  // namespace emu

// ---- the runtime API ----

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit:
      return "cudaErrorStreamCaptureImplicit";
  }
  return "unknown cudaError_t";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorIllegalState:
      return "the operation is not permitted in the current state";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure (emulated fault, see stderr)";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
  }
  return "unknown error";
}

// Returns the last error of this thread and clears it; a sticky fault stays.
inline cudaError_t cudaGetLastError() {
  if (const cudaError_t s = emu::detail::sticky(); s != cudaSuccess) return s;
  const cudaError_t e = emu::detail::t_last_error;
  emu::detail::t_last_error = cudaSuccess;
  return e;
}

inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : emu::detail::fail(cudaErrorInvalidDevice);
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return emu::detail::fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "varnet host emulation (no GPU)");
  prop->totalGlobalMem = emu::kEmulatedMemory;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = int(std::max(1u, std::thread::hardware_concurrency()));
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto& r = emu::detail::runtime();
  std::lock_guard<std::mutex> lock(r.m);
  *total_bytes = emu::kEmulatedMemory;
  *free_bytes = emu::kEmulatedMemory - std::min(r.allocated, emu::kEmulatedMemory);
  return cudaSuccess;
}

inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (const cudaError_t e = emu::detail::unsafe_during_capture("cudaMalloc")) return e;
  if (const cudaError_t e = emu::detail::sticky(); e != cudaSuccess) return emu::detail::fail(e);
  if (bytes == 0) return cudaSuccess;
  auto& r = emu::detail::runtime();
  {
    std::lock_guard<std::mutex> lock(r.m);
    if (bytes > emu::kEmulatedMemory - std::min(r.allocated, emu::kEmulatedMemory))
      return emu::detail::fail(cudaErrorMemoryAllocation);
  }
  void* q = ::operator new(bytes, std::align_val_t(256), std::nothrow);
  if (!q) return emu::detail::fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(r.m);
  r.allocations[static_cast<const char*>(q)] = bytes;
  r.allocated += bytes;
  *p = q;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  if (const cudaError_t e = emu::detail::unsafe_during_capture("cudaFree")) return e;
  auto& r = emu::detail::runtime();
  {
    std::lock_guard<std::mutex> lock(r.m);
    auto it = r.allocations.find(static_cast<const char*>(p));
    if (it == r.allocations.end()) return emu::detail::fail(cudaErrorInvalidValue);
    r.allocated -= it->second;
    r.allocations.erase(it);
  }
  ::operator delete(p, std::align_val_t(256));
  return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_device = emu::device_range(dst, bytes), src_device = emu::device_range(src, bytes);
  const bool want_dst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_src = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind != cudaMemcpyDefault && (dst_device != want_dst || src_device != want_src)) {
    std::fprintf(stderr,
                 "emulated CUDA: cudaMemcpyAsync (kind %d): destination %s is %s, source %s "
                 "is %s\n",
                 int(kind), emu::describe(dst, bytes).c_str(),
                 dst_device ? "device memory" : "not inside one device allocation",
                 emu::describe(src, bytes).c_str(),
                 src_device ? "device memory" : "not inside one device allocation");
    return emu::detail::fail(cudaErrorInvalidValue);
  }
  return emu::detail::enqueue(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!emu::device_range(p, bytes)) {
    std::fprintf(stderr, "emulated CUDA: cudaMemsetAsync: %s is not inside one device allocation\n",
                 emu::describe(p, bytes).c_str());
    return emu::detail::fail(cudaErrorInvalidValue);
  }
  return emu::detail::enqueue(stream, [p, value, bytes] { std::memset(p, value, bytes); });
}

inline cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = new CUstream_st();
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream || stream->capturing) return emu::detail::fail(cudaErrorInvalidResourceHandle);
  delete stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (stream && stream->capturing) {
    stream->invalidated = true;
    return emu::detail::fail(cudaErrorStreamCaptureUnsupported);
  }
  if (const cudaError_t e = emu::detail::unsafe_during_capture("cudaStreamSynchronize")) return e;
  return emu::detail::sticky();  // everything enqueued has run
}
inline cudaError_t cudaDeviceSynchronize() {
  if (const cudaError_t e = emu::detail::unsafe_during_capture("cudaDeviceSynchronize")) return e;
  return emu::detail::sticky();
}

inline cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (!stream) return emu::detail::fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream
  if (stream->capturing) return emu::detail::fail(cudaErrorIllegalState);
  stream->capturing = true;
  stream->invalidated = false;
  stream->mode = mode;
  stream->owner = std::this_thread::get_id();
  stream->recorded.operations.clear();
  auto& r = emu::detail::runtime();
  std::lock_guard<std::mutex> lock(r.m);
  r.captures.push_back(stream);
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!stream || !stream->capturing) return emu::detail::fail(cudaErrorIllegalState);
  {
    auto& r = emu::detail::runtime();
    std::lock_guard<std::mutex> lock(r.m);
    std::erase(r.captures, stream);
  }
  stream->capturing = false;
  emu::Graph recorded = std::move(stream->recorded);
  stream->recorded = {};
  if (stream->invalidated) return emu::detail::fail(cudaErrorStreamCaptureInvalidated);
  *graph = new CUgraph_st();
  (*graph)->operations = std::move(recorded.operations);
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                        unsigned long long /*flags*/ = 0) {
  if (!graph) return emu::detail::fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st();
  (*exec)->operations = graph->operations;
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return emu::detail::fail(cudaErrorInvalidValue);
  for (const emu::Operation& op : exec->operations)
    if (const cudaError_t e = emu::detail::enqueue(stream, op); e != cudaSuccess) return e;
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

inline cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st();
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr) {
  if (!event) return emu::detail::fail(cudaErrorInvalidResourceHandle);
  return emu::detail::enqueue(stream, [event] {
    event->recorded = true;
    event->when = std::chrono::steady_clock::now();
  });
}
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end) return emu::detail::fail(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return emu::detail::fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
