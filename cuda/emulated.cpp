// The CUDA sources compiled for the host under the SIMT emulation (simt.h) into fastlm::cuda_emu:
// the tests run every kernel this way where no GPU is lent (see cuda/README.md).
#define FASTLM_SIMT 1
#define FASTLM_GPU_NS cuda_emu

#include "kernels.cu"
#include "gemm.cu"
#include "attention.cu"
#include "model.cpp"
#include "simt_selftest.cu"

#if defined(FASTLM_SIMT_FAST_SWITCH)
// void fastlm_simt_switch(void** save_sp, void* load_sp): push the callee-saved registers, save
// the stack pointer, load the other fiber's, pop its registers and return into it (a fresh
// fiber's stack, made by simt::make_context, returns into its entry function)
asm(R"(
  .pushsection .text
  .globl fastlm_simt_switch
  .hidden fastlm_simt_switch
  .type fastlm_simt_switch, @function
fastlm_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fastlm_simt_switch, .-fastlm_simt_switch
  .popsection
)");
#endif
