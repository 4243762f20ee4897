// the sequence slots of an executor, each a KV cache made on demand, with the bookkeeping and
// checks both executors share. Slot is the executor's own (its cache memory) and has a `len`:
// the positions it holds. each check throws std::invalid_argument naming what is wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace fastlm {

constexpr int64_t kMaxSlots = 4096;  // sequences one executor holds at once
void check_slot_count(int64_t n);  // 0 <= n <= kMaxSlots
void check_slot_index(int64_t slot, size_t n_slots);
void check_truncate(int64_t have, int64_t len);  // keep len of have positions
void check_copy(int64_t have, int64_t len);      // copy len of have positions
void check_prefill_room(int64_t have, int64_t T, int64_t max_seq);  // T more tokens fit the context
// B > 0 slots, none twice, each with room for one more position (lens[b]: what slot b holds)
void check_decode_slots(const int64_t* slots, const int64_t* lens, int64_t B, int64_t max_seq);

template <class Slot>
class SlotList {
 public:
  // the executor's lock: one step or slot change at a time (callers may come from several
  // threads). the *_locked forms below take it; prefill and decode hold it for a whole step
  std::mutex& mutex() { return mu_; }
  void truncate_locked(int64_t slot, int64_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    truncate(slot, len);
  }
  template <class Make>
  void ensure_locked(int64_t n, Make make) {
    std::lock_guard<std::mutex> lock(mu_);
    ensure(n, make);
  }
  template <class Move>
  void copy_locked(int64_t src, int64_t dst, int64_t len, Move move) {
    std::lock_guard<std::mutex> lock(mu_);
    copy(src, dst, len, move);
  }

  int64_t size() const { return int64_t(slots_.size()); }
  bool empty() const { return slots_.empty(); }
  // at least n slots; make() returns a new std::unique_ptr<Slot>
  template <class Make>
  void ensure(int64_t n, Make make) {
    check_slot_count(n);
    while (size() < n) slots_.push_back(make());
  }
  Slot& at(int64_t slot) {
    check_slot_index(slot, slots_.size());
    return *slots_[size_t(slot)];
  }
  const Slot& at(int64_t slot) const {
    check_slot_index(slot, slots_.size());
    return *slots_[size_t(slot)];
  }
  int64_t len(int64_t slot) const { return at(slot).len; }
  void truncate(int64_t slot, int64_t len) {  // keep the first len positions (prompt reuse)
    Slot& s = at(slot);
    check_truncate(s.len, len);
    s.len = len;
  }
  void check_prefill(int64_t slot, int64_t T, int64_t max_seq) const { check_prefill_room(len(slot), T, max_seq); }
  void check_decode(const int64_t* slots, int64_t B, int64_t max_seq) const {
    std::vector<int64_t> lens(size_t(B > 0 ? B : 0));
    for (int64_t b = 0; b < B; ++b) lens[size_t(b)] = len(slots[b]);
    check_decode_slots(slots, lens.data(), B, max_seq);
  }
  // dst holds the first len positions of src afterwards; move(src, dst) copies the cache memory
  // (called only when there is something to move)
  template <class Move>
  void copy(int64_t src, int64_t dst, int64_t len, Move move) {
    const Slot& a = at(src);
    Slot& b = at(dst);
    check_copy(a.len, len);
    if (src != dst && len > 0) move(a, b);
    b.len = len;
  }

 private:
  std::vector<std::unique_ptr<Slot>> slots_;
  std::mutex mu_;
};

}  // namespace fastlm
