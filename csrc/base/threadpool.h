// a small persistent thread pool: no OpenMP (Apple clang has none), workers spin briefly between
// jobs (decode issues hundreds of short kernels per token) and then sleep on a condition variable.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace fastlm {

// a non-owning reference to a callable void(int64_t): no allocation per parallel region
class TaskRef {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same<std::decay_t<F>, TaskRef>::value>>
  TaskRef(F&& f)  // NOLINT: implicit on purpose, lambdas convert at the call site
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, int64_t i) { (*static_cast<std::remove_reference_t<F>*>(o))(i); }) {}
  void operator()(int64_t i) const { call_(obj_, i); }

 private:
  void* obj_;
  void (*call_)(void*, int64_t);
};

// runs fn(i) for every i in [0, n_tasks) on the pool's threads (the caller works too) and returns
// when all are done. tasks are claimed one at a time, so uneven tasks balance themselves.
// called from inside a task, or while another thread holds the pool, it runs serially.
void parallel_for(int64_t n_tasks, TaskRef fn);

// fn(begin, end) over [0, n) in about `parts_per_thread` pieces per thread, each at least `grain`
template <typename F>
void parallel_range(int64_t n, int64_t grain, F&& fn, int parts_per_thread = 4);

int num_threads();               // threads a parallel region uses, the caller included
void set_num_threads(int n);     // n >= 1; restarts the workers
int default_num_threads();       // FASTLM_NUM_THREADS, else physical cores of this process
int physical_cores();            // physical cores this process may run on
// bytes per second of a streaming read of `bytes` over the pool's threads (best of `repeats`): the
// memory bandwidth decode is bound by (benchmarks print their roofline from it)
double read_bandwidth(int64_t bytes, int repeats);

// ---- template body ----
template <typename F>
void parallel_range(int64_t n, int64_t grain, F&& fn, int parts_per_thread) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t parts = int64_t(num_threads()) * parts_per_thread;
  int64_t chunk = (n + parts - 1) / parts;
  if (chunk < grain) chunk = grain;
  int64_t n_chunks = (n + chunk - 1) / chunk;
  if (n_chunks == 1) {
    fn(int64_t(0), n);
    return;
  }
  parallel_for(n_chunks, [&](int64_t c) {
    int64_t begin = c * chunk;
    int64_t end = begin + chunk < n ? begin + chunk : n;
    fn(begin, end);
  });
}

}  // namespace fastlm
