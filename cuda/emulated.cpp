// The CUDA sources compiled for the host under the SIMT emulation (simt.h) into fastlm::cuda_emu:
// the tests run every kernel this way where no GPU is lent (see cuda/README.md).
#define FASTLM_SIMT 1
#define FASTLM_GPU_NS cuda_emu

#include "kernels.cu"
#include "gemm.cu"
#include "attention.cu"
#include "model.cpp"
