// what the emulation's self-test kernels observed (cuda/simt_selftest.cu; emulation only)
#pragma once

#include <string>
#include <vector>

#ifndef FASTLM_GPU_NS
#define FASTLM_GPU_NS cuda_emu
#endif

namespace fastlm {
namespace FASTLM_GPU_NS {

struct SimtSelfTest {
  std::string deadlock;                  // a divergent barrier: the error raised
  std::vector<float> cp_async_before_wait, cp_async_after_wait;  // a tile before / after cp.async's wait
  std::vector<float> shuffle;            // lanes exchanged by __shfl_xor_sync, plus 100 x the warp sum
  std::string wgmma_race, ldmatrix_race;  // the errors the race checks raised ("not raised" if none)
  std::string copy_while_capturing;      // a copy inside a graph capture: the error
  std::vector<float> graph_before_replay, graph_after_replay;
};

SimtSelfTest simt_self_test();

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
