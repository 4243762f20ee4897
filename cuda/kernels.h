// CUDA variants of the kernels: plain C++ declarations over device pointers (no CUDA types), so
// the bindings compile with the host compiler. Every function launches on the default stream,
// checks the launch, and throws std::runtime_error with CUDA's message on failure. Shapes follow
// the CPU kernels (csrc/kernels/kernels.h): row-major, float32.
#pragma once

#include <cstdint>
#include <string>

namespace fastlm {
namespace cuda {

int device_count();                 // 0 when no device or no driver is visible (never throws)
std::string device_name(int device);
std::string runtime_version();      // "13.0"
std::string compiled_archs();       // "sm_80 sm_90"

void* device_alloc(size_t bytes);
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void synchronize();

// y = x @ W^T (+ b): x (M, K), W (N, K), y (M, N); shared-memory tiles, register blocking, fp32 FMA
void sgemm(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps);
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t cols, float eps);
void softmax(const float* x, float* y, int64_t rows, int64_t cols);
void add(const float* a, const float* b, float* y, int64_t n);
void silu_mul(const float* gate, const float* up, float* y, int64_t n);
void gelu_tanh(const float* x, float* y, int64_t n);

}  // namespace cuda
}  // namespace fastlm
