// how a packed GEMM is cut into tasks: blocks of mc rows of x (kept in L2) times groups of
// weight panels, a few tasks per thread so uneven progress balances out. shared by the fp32/bf16
// and int8 GEMMs; a header of plain integer arithmetic (no ISA code).
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastlm {

struct GemmTasks {
  int64_t mc, m_blocks, n_panels, per_group, groups;

  GemmTasks(int64_t M, int64_t n_panels_, int64_t mc_, int threads)
      : mc(mc_), m_blocks((M + mc_ - 1) / mc_), n_panels(n_panels_) {
    const int64_t want = int64_t(threads) * 6;
    int64_t g = std::max<int64_t>(1, std::min<int64_t>(n_panels, (want + m_blocks - 1) / m_blocks));
    per_group = (n_panels + g - 1) / g;
    groups = (n_panels + per_group - 1) / per_group;
  }
  int64_t count() const { return m_blocks * groups; }
  // task -> rows [m0, m1) and panels [p0, p1)
  void range(int64_t task, int64_t M, int64_t& m0, int64_t& m1, int64_t& p0, int64_t& p1) const {
    const int64_t mb = task / groups, g = task % groups;
    m0 = mb * mc;
    m1 = std::min(M, m0 + mc);
    p0 = g * per_group;
    p1 = std::min(n_panels, p0 + per_group);
  }
};

}  // namespace fastlm
