#include "model/slots.h"

#include <stdexcept>
#include <string>

namespace fastlm {

void check_slot_count(int64_t n) {
  if (n < 0 || n > kMaxSlots)
    throw std::invalid_argument("slots must be in [0, " + std::to_string(kMaxSlots) + "], got " + std::to_string(n));
}

void check_slot_index(int64_t slot, size_t n_slots) {
  if (slot < 0 || slot >= int64_t(n_slots))
    throw std::invalid_argument("slot " + std::to_string(slot) + " does not exist (" + std::to_string(n_slots) +
                                " slots)");
}

void check_truncate(int64_t have, int64_t len) {
  if (len < 0 || len > have)
    throw std::invalid_argument("cannot truncate a sequence of " + std::to_string(have) + " positions to " +
                                std::to_string(len));
}

void check_copy(int64_t have, int64_t len) {
  if (len < 0 || len > have)
    throw std::invalid_argument("cannot copy " + std::to_string(len) + " positions of a sequence of " +
                                std::to_string(have));
}

void check_prefill_room(int64_t have, int64_t T, int64_t max_seq) {
  if (T <= 0) throw std::invalid_argument("prefill needs at least one token");
  if (have + T > max_seq)
    throw std::invalid_argument("the sequence would hold " + std::to_string(have + T) + " tokens, more than the context (" +
                                std::to_string(max_seq) + ")");
}

void check_decode_slots(const int64_t* slots, const int64_t* lens, int64_t B, int64_t max_seq) {
  if (B <= 0) throw std::invalid_argument("decode needs at least one sequence");
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < b; ++c)
      if (slots[c] == slots[b]) throw std::invalid_argument("decode got slot " + std::to_string(slots[b]) + " twice");
    if (lens[b] + 1 > max_seq)
      throw std::invalid_argument("sequence in slot " + std::to_string(slots[b]) + " is full (" +
                                  std::to_string(max_seq) + " tokens)");
  }
}

}  // namespace fastlm
