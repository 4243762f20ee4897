// element types, one enum for every layer: weights (f32 / bf16), device arrays, NumPy arguments
#pragma once

#include <cstddef>

namespace fastlm {

enum class DType : int { kF32 = 0, kBF16, kF16, kI8, kU8, kI32, kI64 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kBF16: case DType::kF16: return 2;
    case DType::kI8: case DType::kU8: return 1;
    case DType::kI64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
    case DType::kI8: return "int8";
    case DType::kU8: return "uint8";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
  }
  return "?";
}

}  // namespace fastlm
