// fastlm._C.cuda_emulated: the GPU bindings (gpu_*.cpp) over the CUDA sources compiled for the
// host under the SIMT emulation (cuda/simt.h), always built: the tests check the kernels'
// arithmetic with it where no GPU is lent. Device memory is host memory; arrays go in through
// __array_interface__ (NumPy) or DLPack (torch CPU tensors). It is a checking tool, not a fast path.
#include "bindings/cuda.h"

#define FASTLM_GPU_NS cuda_emu
#include "bindings/gpu_arrays.h"
#include "cuda/simt_selftest.h"

namespace fastlm {

void register_cuda_emulated(pybind11::module_& m) {
  namespace py = pybind11;
  cuda_emu::register_backend(m);
  m.def("_self_test", [] {
    const cuda_emu::SimtSelfTest t = cuda_emu::simt_self_test();
    py::dict r;
    r["deadlock"] = t.deadlock;
    r["cp_async_before_wait"] = t.cp_async_before_wait;
    r["cp_async_after_wait"] = t.cp_async_after_wait;
    r["shuffle"] = t.shuffle;
    r["wgmma_race"] = t.wgmma_race;
    r["ldmatrix_race"] = t.ldmatrix_race;
    r["copy_while_capturing"] = t.copy_while_capturing;
    r["graph_before_replay"] = t.graph_before_replay;
    r["graph_after_replay"] = t.graph_after_replay;
    return r;
  }, "the emulation's own semantics: a divergent barrier raises, cp.async lands at its wait, warp shuffles "
     "exchange lanes, a captured graph runs at its replay, cp.async into an unfinished wgmma's operands or into "
     "bytes another warp read since the last barrier raises");
}

}  // namespace fastlm
