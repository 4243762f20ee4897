#pragma once

#include <pybind11/pybind11.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "kernels/kernels.h"

namespace fastlm {

// a weight (N, K) packed once into the current ISA's GEMM panels; keeps its dtype (bf16 stays bf16)
class PackedWeight {
 public:
  explicit PackedWeight(const pybind11::object& w);
  int64_t N() const { return N_; }
  int64_t K() const { return K_; }
  int nr() const { return nr_; }
  DType wtype() const { return wtype_; }
  const std::string& isa() const { return isa_; }
  std::string dtype() const;
  size_t nbytes() const;
  const void* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  int64_t N_ = 0, K_ = 0;
  int nr_ = 0;
  DType wtype_ = DType::kF32;
  std::string isa_;
};

// defines the kernel functions on module m, dispatching through table() at each call;
// with_packed adds PackedWeight and pack()
void register_kernels(pybind11::module_& m, const KernelTable& (*table)(), bool with_packed);

}  // namespace fastlm
