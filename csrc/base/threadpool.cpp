#include "base/threadpool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FASTLM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define FASTLM_PAUSE() asm volatile("yield")
#else
#define FASTLM_PAUSE() ((void)0)
#endif

namespace fastlm {
namespace {

thread_local bool t_in_parallel = false;

// how long an idle worker spins before it sleeps: long enough to bridge the gap between two
// kernels of one forward step, short enough not to burn a core when the caller is idle
constexpr auto kSpin = std::chrono::microseconds(300);

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads) { start(n_threads); }
  ~ThreadPool() { stop(); }

  int size() const { return n_threads_; }

  void resize(int n_threads) {
    std::lock_guard<std::mutex> busy(busy_);
    stop();
    start(n_threads);
  }

  void run(int64_t n_tasks, TaskRef fn) {
    if (n_tasks <= 0) return;
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (n_tasks == 1 || n_threads_ == 1 || t_in_parallel || !busy.owns_lock()) {
      for (int64_t i = 0; i < n_tasks; ++i) fn(i);
      return;
    }
    // publish: the job first, then the state word (generation << 32 | next task) with release
    job_.store(&fn, std::memory_order_relaxed);
    n_tasks_.store(n_tasks, std::memory_order_relaxed);
    completed_.store(0, std::memory_order_relaxed);
    uint64_t gen = (state_.load(std::memory_order_relaxed) >> 32) + 1;
    state_.store(gen << 32, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(sleep_mu_);
      wake_gen_ = gen;
    }
    sleep_cv_.notify_all();

    t_in_parallel = true;
    int64_t done = work(gen);
    t_in_parallel = false;
    if (done < n_tasks) {
      while (completed_.load(std::memory_order_acquire) + done < n_tasks) FASTLM_PAUSE();
    }
  }

 private:
  // claims tasks of generation `gen` until none are left; returns how many this thread ran
  int64_t work(uint64_t gen) {
    int64_t done = 0;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> 32) != gen) break;
      const TaskRef* fn = job_.load(std::memory_order_relaxed);
      int64_t n = n_tasks_.load(std::memory_order_relaxed);
      int64_t idx = int64_t(s & 0xffffffffu);
      if (idx >= n) break;
      // the CAS fails if another thread claimed idx or a new generation began: then job and n
      // read above may belong to the next job, so nothing runs on them
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
      (*fn)(idx);
      ++done;
    }
    return done;
  }

  void worker_loop() {
    t_in_parallel = true;
    uint64_t seen = state_.load(std::memory_order_acquire) >> 32;
    for (;;) {
      // spin for a new generation, then sleep
      auto t0 = std::chrono::steady_clock::now();
      uint64_t gen = seen;
      for (int i = 0;; ++i) {
        gen = state_.load(std::memory_order_acquire) >> 32;
        if (gen != seen || stopping_.load(std::memory_order_relaxed)) break;
        FASTLM_PAUSE();
        if ((i & 255) == 255 && std::chrono::steady_clock::now() - t0 > kSpin) {
          std::unique_lock<std::mutex> lk(sleep_mu_);
          sleep_cv_.wait(lk, [&] { return wake_gen_ != seen || stopping_.load(); });
          t0 = std::chrono::steady_clock::now();
        }
      }
      if (stopping_.load()) return;
      seen = gen;
      int64_t done = work(gen);
      if (done) completed_.fetch_add(done, std::memory_order_acq_rel);
    }
  }

  void start(int n_threads) {
    n_threads_ = n_threads < 1 ? 1 : n_threads;
    stopping_ = false;
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(sleep_mu_);
      stopping_ = true;
    }
    sleep_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // one parallel region at a time; other callers run serially
  std::atomic<const TaskRef*> job_{nullptr};
  std::atomic<int64_t> n_tasks_{0};
  std::atomic<uint64_t> state_{0};
  std::atomic<int64_t> completed_{0};
  std::atomic<bool> stopping_{false};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  uint64_t wake_gen_ = 0;
};

ThreadPool& pool() {
  static ThreadPool* p = new ThreadPool(default_num_threads());  // never destroyed: workers may
  return *p;                                                      // outlive static destructors
}

int count_allowed_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

}  // namespace

int physical_cores() {
  int allowed = count_allowed_cpus();
#if defined(__linux__)
  // count distinct (package, core) pairs among the CPUs this process may use
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    std::set<std::pair<int, int>> cores;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      std::ifstream core_f(base + "core_id"), pkg_f(base + "physical_package_id");
      int core = -1, pkg = -1;
      if (!(core_f >> core) || !(pkg_f >> pkg)) return allowed;
      cores.insert({pkg, core});
    }
    if (!cores.empty()) return int(cores.size());
  }
#endif
  return allowed;
}

int default_num_threads() {
  if (const char* env = std::getenv("FASTLM_NUM_THREADS")) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 1024) return int(n);
  }
  return physical_cores();
}

void parallel_for(int64_t n_tasks, TaskRef fn) { pool().run(n_tasks, fn); }
int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

namespace {
// the sum of p[0 .. n), in the widest loads the CPU has: the loads decide the bandwidth a core draws
// (16-byte loads read ~25% less than 32-byte ones on a Zen 3 here)
uint64_t sum_words(const uint64_t* p, int64_t n) {
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  for (; i < n; ++i) s[0] += p[i];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint64_t* p, int64_t n) { return sum_words(p, n); }
#endif

uint64_t sum_words_best(const uint64_t* p, int64_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (__builtin_cpu_supports("avx2")) return sum_words_avx2(p, n);
#endif
  return sum_words(p, n);
}
}  // namespace

double read_bandwidth(int64_t bytes, int repeats) {
  const int64_t n = std::max<int64_t>(bytes / 8, 1 << 20);
  std::vector<uint64_t> buf(size_t(n), 1);  // written once: every page backed before timing
  const int threads = num_threads();
  repeats = std::max(repeats, 1);
  std::vector<uint64_t> sums(size_t(threads) * 8, 0);  // one cache line per thread
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(threads, [&](int64_t t) {  // each thread one contiguous share
      const int64_t b = n * t / threads, e = n * (t + 1) / threads;
      sums[size_t(t) * 8] += sum_words_best(buf.data() + b, e - b);
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n) * 8.0 / dt);
  }
  uint64_t all = 0;
  for (uint64_t v : sums) all += v;
  if (all != uint64_t(n) * uint64_t(repeats)) throw std::logic_error("read_bandwidth: the sum is wrong");
  return best;
}

}  // namespace fastlm
