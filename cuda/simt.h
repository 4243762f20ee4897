// A CPU emulation of the CUDA execution model, enough to run the kernels in cuda/ on the host and
// check their arithmetic and indexing where no GPU is lent (tests/test_cuda.py, backend
// "emulated"). Included only when FASTLM_SIMT is defined, instead of the CUDA headers.
//
// Blocks run one after another; the threads of a block are fibers on the calling OS
// thread, switched at every barrier: __syncthreads() parks a thread until every live thread of
// the block arrives, and warp-collective operations (shuffles, ldmatrix, mma) park it until every
// live lane of its warp arrives. A barrier that can never complete (a divergent __syncthreads, a
// warp whose lanes wait at different barriers) raises instead of hanging. cp.async copies are
// deferred to the cp.async.wait that covers their group, so a kernel that reads shared memory
// before waiting sees stale data here too; cp.async, ldmatrix and wgmma of the same shared bytes
// in different warps with no barrier between them raise. What this does not model: timing, bank
// conflicts, and races through plain loads and stores between threads that do not synchronize
// (emulated device buffers end at an inaccessible page: see device_alloc in kernels.cu).
#pragma once

#include <ucontext.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/half.h"

namespace simt {

using fastlm::bf16_to_float;
using fastlm::float_to_bf16;
using fastlm::float_to_half;
using fastlm::half_to_float;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

enum class Wait { kRun, kBlock, kWarp, kDone };

struct CopyOp {
  void* dst;
  const void* src;
  int bytes, src_bytes;
};

// one wgmma.m64n128k16 (bf16, both operands in shared memory, K-major, 128-byte swizzle) of one
// thread, done when a wgmma.wait_group covers it: like the hardware, it reads shared memory and
// the accumulators asynchronously, so touching either before the wait shows up
struct WgmmaOp {
  void* d;  // 64 floats (bf16 operands) or ints (s8 operands)
  uint64_t a, b;
  bool accumulate, s8;
};

// the shared-memory bytes [lo, hi) (shared-window offsets) an operand of an unfinished wgmma
// reads: a cp.async into them is a race on the hardware, where the copy may land first, though
// here (copies land at their wait, wgmmas run at theirs) it would never show in the numbers
// what a 16-byte chunk of the block's dynamic shared memory has seen, by barrier epoch (the count
// of __syncthreads the block has passed), so that an ldmatrix and a cp.async of the same bytes in
// different warps with no barrier between them raise: the order the emulation runs them in is one
// of many the hardware may choose
struct ChunkLog {
  static constexpr uint32_t kInFlight = ~0u;
  uint32_t read_epoch = 0, read_warps = 0;  // the warps whose ldmatrix read it in read_epoch
  int writer_warp = -1;                     // the warp of the last cp.async into it
  uint32_t landed = 0;                      // the epoch its copy landed in (kInFlight until its wait)
};

struct SharedRange {
  uint32_t lo, hi;
  bool operator<(const SharedRange& o) const { return lo != o.lo ? lo < o.lo : hi < o.hi; }
};

// asynchronous operations of one thread (cp.async, wgmma): issued into an open group, committed,
// and carried out only when a wait leaves at most `pending` groups outstanding, oldest first
template <class Op>
struct Deferred {
  std::vector<std::vector<Op>> groups;
  std::vector<Op> open;

  void issue(const Op& op) { open.push_back(op); }
  void commit() {
    groups.push_back(std::move(open));
    open.clear();
  }
  template <class Run>
  void wait(int pending, Run run) {
    while (int(groups.size()) > pending) {
      for (const Op& op : groups.front()) run(op);
      groups.erase(groups.begin());
    }
  }
  void clear() {
    groups.clear();
    open.clear();
  }
};

// Switching fibers. On x86-64 a switch saves the callee-saved registers on the old stack and
// loads the new stack pointer (fastlm_simt_switch, cuda/emulated.cpp): no system call, where
// swapcontext() saves and restores the signal mask with one at every switch. Elsewhere, and under
// AddressSanitizer (which follows swapcontext only), ucontext.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define FASTLM_SIMT_FAST_SWITCH 1
extern "C" void fastlm_simt_switch(void** save_sp, void* load_sp);
struct Context {
  void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { fastlm_simt_switch(&from.sp, to.sp); }
// a fresh context that starts in entry() (which never returns) on the stack [stack, stack + size)
inline void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top - 16);  // 16-byte aligned: entry's return address slot
  sp[1] = nullptr;                                   // entry's own (never used) return address
  sp[0] = reinterpret_cast<void*>(entry);            // where the first switch's ret lands
  sp -= 6;                                           // rbp rbx r12 r13 r14 r15, popped first
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
  const void* bottom = nullptr;  // the stack it runs on, for AddressSanitizer's fiber annotations
  size_t size = 0;
};
// under ASan each switch says which stack it goes to, so that ASan's bookkeeping (an exception
// thrown on a fiber's stack, say) follows the fibers
inline void switch_context(Context& from, Context& to) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, to.bottom, to.size);
  swapcontext(&from.uc, &to.uc);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}
inline void make_context(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
  c.bottom = stack;
  c.size = size;
}
#endif

struct Fiber {
  Context ctx;
  char* stack = nullptr;  // kStack bytes from stack_pool()
  uint3 tid;
  int linear = 0;
  Wait wait = Wait::kRun;
  Deferred<CopyOp> copies;  // cp.async
  Deferred<WgmmaOp> mmas;   // wgmma
};


struct Launch {
  dim3 grid, block;
  uint3 block_idx;
  std::vector<Fiber> fibers;
  Context scheduler;
  Fiber* current = nullptr;
  std::function<void()> body;
  std::vector<char> dynamic_smem;
  std::vector<unsigned char> exchange;  // kExchange bytes per lane, for warp-collective operations
  std::string error;
  std::map<SharedRange, int> wgmma_reads;  // operands of issued, unfinished wgmmas (counted per thread)
  uint32_t epoch = 1;
  std::vector<ChunkLog> smem_log;  // one per 16 bytes of dynamic shared memory
};

constexpr int kExchange = 64;
constexpr size_t kStack = 128 * 1024;

// fiber stacks, kept across launches (allocating and clearing them per launch costs more than the
// kernels); uninitialised memory, as a thread's stack is
inline char* stack_for(int thread) {
  static std::vector<std::unique_ptr<char[]>> pool;
  while (int(pool.size()) <= thread) pool.emplace_back(new char[kStack]);
  return pool[size_t(thread)].get();
}

inline Launch*& active() {
  static Launch* launch = nullptr;
  return launch;
}

inline Fiber& self() { return *active()->current; }
inline int lane_id() { return self().linear & 31; }
inline unsigned char* lane_slot(int lane) {
  Launch& l = *active();
  return l.exchange.data() + size_t((self().linear & ~31) + lane) * kExchange;
}

inline void park(Wait w) {
  Launch& l = *active();
  Fiber& f = self();
  f.wait = w;
  switch_context(f.ctx, l.scheduler);
}

inline void syncthreads() { park(Wait::kBlock); }
inline void syncwarp() { park(Wait::kWarp); }

inline void fiber_entry() {
  Launch& l = *active();
#if defined(__SANITIZE_ADDRESS__) && !defined(FASTLM_SIMT_FAST_SWITCH)
  // the first switch into this fiber: finish it, and learn the scheduler's stack to switch back to
  __sanitizer_finish_switch_fiber(nullptr, &l.scheduler.bottom, &l.scheduler.size);
#endif
  try {
    l.body();
  } catch (const std::exception& e) {
    if (l.error.empty()) l.error = e.what();
  }
  l.current->wait = Wait::kDone;
  switch_context(l.current->ctx, l.scheduler);
}

// run one block to completion: every fiber until it parks, then release whichever barrier is full
inline void run_block(Launch& l) {
  const int n = int(l.fibers.size());
  l.wgmma_reads.clear();
  l.epoch = 1;
  l.smem_log.assign(l.dynamic_smem.size() / 16, ChunkLog());
  for (auto& f : l.fibers) {
    f.wait = Wait::kRun;
    f.copies.clear();
    f.mmas.clear();
    make_context(f.ctx, f.stack, kStack, fiber_entry);
  }
  for (;;) {
    for (auto& f : l.fibers) {
      if (f.wait != Wait::kRun) continue;
      l.current = &f;
      switch_context(l.scheduler, f.ctx);
    }
    if (!l.error.empty()) throw std::runtime_error("simt: kernel raised: " + l.error);
    bool all_done = true, any_block = false, released = false;
    for (auto& f : l.fibers) {
      all_done &= f.wait == Wait::kDone;
      any_block |= f.wait == Wait::kBlock;
    }
    if (all_done) return;
    for (int w0 = 0; w0 < n; w0 += 32) {  // a warp barrier completes when every live lane waits at one
      const int w1 = std::min(n, w0 + 32);
      bool full = true, any = false;
      for (int i = w0; i < w1; ++i) {
        full &= l.fibers[i].wait == Wait::kWarp || l.fibers[i].wait == Wait::kDone;
        any |= l.fibers[i].wait == Wait::kWarp;
      }
      if (full && any) {
        for (int i = w0; i < w1; ++i)
          if (l.fibers[i].wait == Wait::kWarp) l.fibers[i].wait = Wait::kRun;
        released = true;
      }
    }
    if (!released && any_block) {
      bool full = true;
      for (auto& f : l.fibers) full &= f.wait == Wait::kBlock || f.wait == Wait::kDone;
      if (full) {
        for (auto& f : l.fibers)
          if (f.wait == Wait::kBlock) f.wait = Wait::kRun;
        released = true;
        ++l.epoch;
      }
    }
    if (!released) throw std::runtime_error("simt: deadlock: the threads of a block wait at different barriers");
  }
}

template <class Fn>
void launch(dim3 grid, dim3 block, size_t smem, Fn&& body) {
  const int threads = int(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024) throw std::runtime_error("simt: bad block size " + std::to_string(threads));
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) throw std::runtime_error("simt: empty grid");
  static std::mutex one_at_a_time;  // the emulated device runs one launch at a time (callers drop the GIL)
  std::lock_guard<std::mutex> lock(one_at_a_time);
  Launch l;
  l.grid = grid;
  l.block = block;
  l.body = std::forward<Fn>(body);
  l.dynamic_smem.assign(smem + 1024, 0);
  l.exchange.assign(size_t((threads + 31) / 32) * 32 * kExchange, 0);
  l.fibers.resize(threads);
  for (int i = 0; i < threads; ++i) {
    Fiber& f = l.fibers[i];
    f.stack = stack_for(i);
    f.linear = i;
    f.tid.x = unsigned(i) % block.x;
    f.tid.y = unsigned(i) / block.x % block.y;
    f.tid.z = unsigned(i) / (block.x * block.y);
  }
  Launch* outer = active();
  active() = &l;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          l.block_idx.x = x;
          l.block_idx.y = y;
          l.block_idx.z = z;
          run_block(l);
        }
  } catch (...) {
    active() = outer;
    throw;
  }
  active() = outer;
}

// the block's dynamic shared memory, 1024-byte aligned like a swizzle atom; shared-window
// addresses (__cvta_generic_to_shared, wgmma descriptors) are offsets from it
inline void* dynamic_smem() {
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(active()->dynamic_smem.data()) + 1023) &
                                 ~uintptr_t(1023));
}
inline uint32_t shared_address(const void* p) {
  const auto base = reinterpret_cast<uintptr_t>(dynamic_smem()), q = reinterpret_cast<uintptr_t>(p);
  if (q < base || q >= base + active()->dynamic_smem.size())
    throw std::runtime_error("simt: a shared-window address of memory outside the dynamic shared memory");
  return uint32_t(q - base);
}

// warp shuffles: every lane publishes its value, then reads another lane's
template <class T>
T shfl(T v, int src_lane) {
  static_assert(sizeof(T) <= kExchange, "shuffle of a large type");
  std::memcpy(lane_slot(lane_id()), &v, sizeof(T));
  syncwarp();
  T r;
  std::memcpy(&r, lane_slot(src_lane & 31), sizeof(T));
  syncwarp();
  return r;
}

// the log of the chunk holding p, or null outside the dynamic shared memory
inline ChunkLog* chunk_log(const void* p) {
  Launch& l = *active();
  const auto base = reinterpret_cast<uintptr_t>(dynamic_smem()), q = reinterpret_cast<uintptr_t>(p);
  if (q < base || q >= base + l.smem_log.size() * 16) return nullptr;
  return &l.smem_log[(q - base) / 16];
}

[[noreturn]] inline void race(const std::string& what, const void* p) {
  const auto offset = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(dynamic_smem());
  throw std::runtime_error("simt: shared-memory race at byte " + std::to_string(offset) + ": " + what);
}

// cp.async: deferred until a wait covers the group. Refused into what an unfinished wgmma reads,
// or into bytes another warp has read since the last barrier
inline void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  Launch& l = *active();
  if (ChunkLog* c = chunk_log(dst)) {
    const uint32_t lo = uint32_t(c - l.smem_log.data()) * 16 + uint32_t(reinterpret_cast<uintptr_t>(dst) % 16),
                   hi = lo + uint32_t(bytes);
    for (const auto& r : l.wgmma_reads)
      if (lo < r.first.hi && r.first.lo < hi) race("a cp.async into what an unfinished wgmma reads: wait for it first", dst);
    const int warp = self().linear / 32;
    if (c->read_epoch == l.epoch && (c->read_warps & ~(1u << warp)))
      race("a cp.async overwrites what another warp read since the last barrier", dst);
    c->writer_warp = warp;
    c->landed = ChunkLog::kInFlight;
  }
  self().copies.issue({dst, src, bytes, src_bytes});
}
inline void cp_async_commit() { self().copies.commit(); }
inline void cp_async_wait(int pending) {
  const uint32_t epoch = active()->epoch;
  self().copies.wait(pending, [epoch](const CopyOp& c) {
    std::memcpy(c.dst, c.src, size_t(c.src_bytes));
    std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
    if (ChunkLog* log = chunk_log(c.dst)) log->landed = epoch;
  });
}

// an ldmatrix row (16 bytes) read by this lane's warp: a copy still in flight, or one another warp
// made that no barrier has published since it landed, is a race
inline void note_shared_read(const void* p) {
  ChunkLog* c = chunk_log(p);
  if (!c) return;
  Launch& l = *active();
  const int warp = self().linear / 32;
  if (c->writer_warp >= 0 && c->landed == ChunkLog::kInFlight)
    race("an ldmatrix reads a cp.async destination before its cp.async.wait", p);
  if (c->writer_warp >= 0 && c->writer_warp != warp && c->landed == l.epoch)
    race("an ldmatrix reads what another warp's cp.async wrote, with no barrier since it landed", p);
  if (c->read_epoch != l.epoch) c->read_epoch = l.epoch, c->read_warps = 0;
  c->read_warps |= 1u << warp;
}

// ldmatrix .m8n8 .b16: lanes 8i..8i+7 name the rows of matrix i; lane t receives, of each matrix,
// row t/4, b16 columns 2(t%4), 2(t%4)+1 (transposed: column t/4, rows 2(t%4), 2(t%4)+1)
inline void ldmatrix(uint32_t* r, int count, const void* row_addr, bool trans) {
  const int lane = lane_id();
  if (lane < 8 * count) note_shared_read(row_addr);
  std::memcpy(lane_slot(lane), &row_addr, sizeof(row_addr));
  syncwarp();
  for (int i = 0; i < count; ++i) {
    uint16_t h[2];
    for (int e = 0; e < 2; ++e) {
      const int row = trans ? 2 * (lane % 4) + e : lane / 4;
      const int col = trans ? lane / 4 : 2 * (lane % 4) + e;
      const unsigned char* p;
      std::memcpy(&p, lane_slot(8 * i + row), sizeof(p));
      std::memcpy(&h[e], p + 2 * col, 2);
    }
    r[i] = uint32_t(h[0]) | (uint32_t(h[1]) << 16);
  }
  syncwarp();
}

// element (r, k) of a K-major operand behind a wgmma descriptor, bf16 or s8 (128-byte swizzle:
// 8-row atoms of 1024 bytes, SBO apart; in each 128-byte row the 16-byte chunk c lies at
// c ^ (row % 8), which is the XOR of address bits 4-6 with bits 7-9)
inline float wgmma_operand(uint64_t desc, int r, int k, bool s8) {
  if ((desc >> 62) != 1) throw std::runtime_error("simt: only the 128-byte swizzle of wgmma is emulated");
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4, sbo = uint32_t((desc >> 32) & 0x3FFF) << 4;
  uint32_t a = start + uint32_t(r / 8) * sbo + uint32_t(r % 8) * 128 + uint32_t(k) * (s8 ? 1 : 2);
  a ^= ((a >> 7) & 7) << 4;
  const char* p = static_cast<const char*>(dynamic_smem()) + a;
  if (s8) return float(int8_t(*p));
  uint16_t h;
  std::memcpy(&h, p, 2);
  return bf16_to_float(h);
}

// the rows of a K-major swizzled operand: `rows` rows of 128 bytes from the descriptor's row 0
inline SharedRange wgmma_range(uint64_t desc, int rows) {
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4, sbo = uint32_t((desc >> 32) & 0x3FFF) << 4;
  const uint32_t lo = start & ~127u;
  return {lo, lo + uint32_t(rows / 8) * sbo};
}

inline void wgmma_issue(void* d, uint64_t a, uint64_t b, bool accumulate, bool s8) {
  Launch& l = *active();
  ++l.wgmma_reads[wgmma_range(a, 64)];
  ++l.wgmma_reads[wgmma_range(b, 128)];
  self().mmas.issue({d, a, b, accumulate, s8});
}
inline void wgmma_commit() { self().mmas.commit(); }
// the accumulator fragment of m64nN: warp w of the warpgroup holds rows 16w + g and 16w + g + 8,
// d[4j + e] at row 16w + g + 8 (e / 2), column 8j + 2t + e % 2 (g = lane / 4, t = lane % 4)
inline void wgmma_wait(int pending) {
  Fiber& f = self();
  const int wt = f.linear % 128, w = wt / 32, g = (wt % 32) / 4, t = wt % 4;
  Launch& l = *active();
  f.mmas.wait(pending, [&](const WgmmaOp& op) {
    for (const SharedRange& r : {wgmma_range(op.a, 64), wgmma_range(op.b, 128)})
      if (--l.wgmma_reads[r] == 0) l.wgmma_reads.erase(r);
    for (int i = 0; i < 64; ++i) {
      const int j = i / 4, e = i % 4, row = 16 * w + g + 8 * (e / 2), col = 8 * j + 2 * t + e % 2;
      if (op.s8) {  // K = 32 int8, exact int32 sums
        int* d = static_cast<int*>(op.d);
        int acc = op.accumulate ? d[i] : 0;
        for (int k = 0; k < 32; ++k)
          acc += int(wgmma_operand(op.a, row, k, true)) * int(wgmma_operand(op.b, col, k, true));
        d[i] = acc;
      } else {
        float* d = static_cast<float*>(op.d);
        float acc = op.accumulate ? d[i] : 0.0f;
        for (int k = 0; k < 16; ++k) acc += wgmma_operand(op.a, row, k, false) * wgmma_operand(op.b, col, k, false);
        d[i] = acc;
      }
    }
  });
}

// mma.sync.m16n8k16 (bf16 or f16 inputs, f32 accumulate) and m16n8k32 (s8, s32 accumulate),
// row.col: lanes hold fragments as in the PTX ISA (group g = lane / 4, t = lane % 4):
//   A: a0 (g, k0..), a1 (g + 8, k0..), a2 (g, k0 + K/2..), a3 (g + 8, k0 + K/2..), k0 = t * elems
//   B: b0 (k0.., n = g), b1 (k0 + K/2.., n = g); C/D: c0,c1 (g, 2t, 2t+1), c2,c3 (g + 8, 2t, 2t+1)
struct MmaSlot {
  uint32_t a[4], b[2];
};

template <class Acc, class Elem>
void mma(Acc* d, const uint32_t* a, const uint32_t* b, const Acc* c, Elem elem, int K) {
  const int lane = lane_id();
  MmaSlot mine;
  std::memcpy(mine.a, a, sizeof(mine.a));
  std::memcpy(mine.b, b, sizeof(mine.b));
  std::memcpy(lane_slot(lane), &mine, sizeof(mine));
  syncwarp();
  const int per = K == 16 ? 2 : 4;  // elements per 32-bit register
  auto a_at = [&](int row, int k) {
    const int half = k / (K / 2), kk = k % (K / 2);
    MmaSlot s;
    std::memcpy(&s, lane_slot((row % 8) * 4 + kk / per), sizeof(s));
    return elem(s.a[(row / 8) + 2 * half], kk % per);
  };
  auto b_at = [&](int k, int n) {
    const int half = k / (K / 2), kk = k % (K / 2);
    MmaSlot s;
    std::memcpy(&s, lane_slot(n * 4 + kk / per), sizeof(s));
    return elem(s.b[half], kk % per);
  };
  const int g = lane / 4, t = lane % 4;
  Acc out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
    Acc acc = c[i];
    for (int k = 0; k < K; ++k) acc += a_at(row, k) * b_at(k, col);
    out[i] = acc;
  }
  syncwarp();
  std::memcpy(d, out, sizeof(out));
}

}  // namespace simt

// the CUDA names the kernels use, mapped onto the emulation
using simt::dim3;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define threadIdx (::simt::self().tid)
#define blockIdx (::simt::active()->block_idx)
#define blockDim (::simt::active()->block)
#define gridDim (::simt::active()->grid)
#define __syncthreads() ::simt::syncthreads()
#define __syncwarp(...) ::simt::syncwarp()

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return simt::shfl(v, simt::lane_id() ^ mask);
}
template <class T>
T __shfl_sync(unsigned, T v, int src) {
  return simt::shfl(v, src);
}
template <class T>
T __shfl_down_sync(unsigned, T v, int delta) {
  const int lane = simt::lane_id();
  return simt::shfl(v, lane + delta < 32 ? lane + delta : lane);
}
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

struct __nv_bfloat16 {
  uint16_t x;
};
struct __half {
  uint16_t x;
};
inline float __bfloat162float(__nv_bfloat16 h) { return simt::bf16_to_float(h.x); }
inline __nv_bfloat16 __float2bfloat16(float f) { return {simt::float_to_bf16(f)}; }
inline float __half2float(__half h) { return simt::half_to_float(h.x); }
inline __half __float2half(float f) { return {simt::float_to_half(f)}; }
