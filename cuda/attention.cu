// Attention kernels (see kernels.h).
//
// attention(): fp32 over a KV cache, for the device decoder; any number of queries. A block per
// (query, head, key chunk): each warp scores keys (lanes split the head dimension), the block
// takes the chunk's max and sum, then each thread accumulates one output column. With more than
// one chunk (split-KV, so short decode steps still fill the GPU), a second kernel merges the
// chunks' (max, sum, partial output) triples.
//
// flash_attention(): FlashAttention-2 on tensor cores for bf16 / f16. A block of 4 warps owns 64
// queries of one head (16 per warp, Q fragments kept in registers) or 128 (32 per warp, Q reread
// from shared memory); K and V move through shared memory in 64-key tiles (32-key at D = 128 with
// 32 queries a warp, for registers), double buffered with cp.async; S = Q K^T and O += P V are
// m16n8k16 mma's; the softmax is online, in registers, in base 2; P goes from the S accumulators
// straight into A fragments.
#include <type_traits>

#include "common.cuh"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace detail;
namespace {

constexpr int kAttnThreads = 128, kChunk = 512;  // keys per block at most

// where a query row's keys lie. One sequence for every row: k and v (rows kv_stride apart); query t
// sees S - T + t + 1 keys when causal, else S
__device__ __forceinline__ float kv_load(const float* p) { return *p; }
__device__ __forceinline__ float kv_load(const uint16_t* p) { return bf16_to_f32(*p); }  // a bf16 cache

struct SharedKeys {
  using Elem = float;
  const float *k, *v;
  int64_t T, S;
  bool causal;
  __device__ __forceinline__ int64_t visible(int64_t t) const { return causal ? S - T + t + 1 : S; }
  __device__ __forceinline__ const float* keys(int64_t) const { return k; }
  __device__ __forceinline__ const float* values(int64_t) const { return v; }
};

// the decoder's: each row its own sequence's cache (a device array of pointers, plus one layer's
// offset) and position, both read on the device, so a captured step replays at any length
// (caches of fp32 or bf16 elements)
template <class T>
struct CachedKeys {
  using Elem = T;
  const void* const* caches;
  int64_t offset, v_offset;
  const int32_t* pos;
  __device__ __forceinline__ int64_t visible(int64_t t) const { return int64_t(pos[t]) + 1; }
  __device__ __forceinline__ const T* keys(int64_t t) const { return static_cast<const T*>(caches[t]) + offset; }
  __device__ __forceinline__ const T* values(int64_t t) const { return keys(t) + v_offset; }
};

__device__ __forceinline__ float4 kv_load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 kv_load4(const uint16_t* p) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);  // four bf16, low half first
  return make_float4(bf16_to_f32(uint16_t(u.x)), bf16_to_f32(uint16_t(u.x >> 16)), bf16_to_f32(uint16_t(u.y)),
                     bf16_to_f32(uint16_t(u.y >> 16)));
}

// A block per (query, head, key chunk). Where rows allow 16-byte loads (D % 32 == 0, aligned
// rows), a warp scores four keys at a time, eight lanes a key (D / 8 elements each, three
// shuffles), and P V is split over groups of D / 4 threads (a float4 of columns each) whose
// partial sums meet in shared memory; otherwise a warp scores one key (lanes across D) and a
// thread sums one column over the chunk
template <class Keys>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(const float* q, int64_t q_stride, Keys keys,
                                                                 int64_t kv_stride, float* out, float* ws, int64_t H,
                                                                 int64_t group, int64_t D, float scale, int splits) {
  using Elem = typename Keys::Elem;
  __shared__ __align__(16) float p[kChunk];
  __shared__ __align__(16) float qs[256];
  __shared__ __align__(16) float part[4 * kAttnThreads];  // P V partials: groups x D <= 4 x threads
  // 32-bit division (grid.x < 2^31): a 64-bit one is a call, around which sm_80 code spills
  const unsigned heads = unsigned(H);
  const int64_t t = blockIdx.x / heads, h = blockIdx.x % heads, kvh = unsigned(h) / unsigned(group);
  const int split = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t visible = keys.visible(t);
  const int64_t k0 = int64_t(split) * kChunk;
  const int64_t k1 = k0 + kChunk < visible ? k0 + kChunk : visible;
  const Elem* k = keys.keys(t) + kvh * D;
  const Elem* v = keys.values(t) + kvh * D;
  constexpr int kAlign = 16 / int(sizeof(Elem));  // elements in 16 bytes
  const bool vec = D % 32 == 0 && kv_stride % kAlign == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(v) % 16 == 0;  // the same for the whole block
  const float* qr = q + t * q_stride + h * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qr[d] * scale;
  __syncthreads();
  if (vec) {
    const int sub = lane & 7, per = int(D / 8);  // this lane's elements of its key: [sub * per, + per)
    for (int64_t j0 = k0 + 4 * warp; j0 < k1; j0 += 4 * warps) {
      const int64_t j = j0 + (lane >> 3);
      float s = 0.0f;
      if (j < k1) {
        const Elem* kr = k + j * kv_stride + sub * per;
        for (int c = 0; c < per; c += 4) {
          const float4 a = kv_load4(kr + c), b = *reinterpret_cast<const float4*>(qs + sub * per + c);
          s = fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, s))));
        }
      }
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      s += __shfl_xor_sync(0xffffffffu, s, 4);
      if (sub == 0 && j < k1) p[j - k0] = s;
    }
  } else {
    for (int64_t j = k0 + warp; j < k1; j += warps) {
      const Elem* kr = k + j * kv_stride;
      float s = 0.0f;
      for (int64_t d = lane; d < D; d += 32) s = fmaf(qs[d], kv_load(kr + d), s);
      s = warp_sum(s);
      if (lane == 0) p[j - k0] = s;
    }
  }
  __syncthreads();
  float m = -INFINITY;
  for (int64_t j = k0 + threadIdx.x; j < k1; j += blockDim.x) m = fmaxf(m, p[j - k0]);
  m = block_reduce<true>(m);
  float l = 0.0f;
  for (int64_t j = k0 + threadIdx.x; j < k1; j += blockDim.x) {
    const float e = __expf(p[j - k0] - m);
    p[j - k0] = e;
    l += e;
  }
  l = block_reduce<false>(l);  // its barriers also publish p[]
  const int cols4 = int(D / 4), groups = vec ? int(blockDim.x) / cols4 : 0;
  if (vec) {
    const int c4 = int(threadIdx.x) % cols4, grp = int(threadIdx.x) / cols4;
    if (grp < groups) {
      float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int64_t j = k0 + grp; j < k1; j += groups) {
        const float pj = p[j - k0];
        const float4 x = kv_load4(v + j * kv_stride + 4 * c4);
        o.x = fmaf(pj, x.x, o.x), o.y = fmaf(pj, x.y, o.y), o.z = fmaf(pj, x.z, o.z), o.w = fmaf(pj, x.w, o.w);
      }
      *reinterpret_cast<float4*>(part + grp * D + 4 * c4) = o;
    }
    __syncthreads();
  }
  const int64_t row = t * H + h;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    if (vec)
      for (int g = 0; g < groups; ++g) o += part[g * D + d];
    else
      for (int64_t j = k0; j < k1; ++j) o = fmaf(p[j - k0], kv_load(v + j * kv_stride + d), o);
    if (splits == 1) {
      out[row * D + d] = o / l;
    } else {
      float* w = ws + (row * splits + split) * (D + 2);
      w[2 + d] = o;
      if (d == 0) w[0] = k1 > k0 ? m : -INFINITY, w[1] = k1 > k0 ? l : 0.0f;
    }
  }
}

__global__ void attention_merge_kernel(const float* ws, float* out, int64_t D, int splits) {
  const int64_t row = blockIdx.x;
  const float* w = ws + row * splits * (D + 2);
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, w[s * (D + 2)]);
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = w[s * (D + 2)];
    if (ms != -INFINITY) l += __expf(ms - m) * w[s * (D + 2) + 1];
  }
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = w[s * (D + 2)];
      if (ms != -INFINITY) o += __expf(ms - m) * w[s * (D + 2) + 2 + d];
    }
    out[row * D + d] = o / l;
  }
}

template <class Keys>
void run_attention(const float* q, int64_t q_stride, Keys keys, int64_t kv_stride, float* out, int64_t T,
                   int64_t max_keys, int64_t H, int64_t Hkv, int64_t D, float scale, float* ws) {
  if (D > 256) throw std::invalid_argument("attention: head_dim above 256");
  const int splits = attention_splits(max_keys);
  if (splits > 1 && !ws) throw std::invalid_argument("attention: workspace needed for more than 512 keys");
  launch("attention", dim3(unsigned(T * H), unsigned(splits)), dim3(kAttnThreads), 0, attention_kernel<Keys>, q,
         q_stride, keys, kv_stride, out, ws, H, H / Hkv, D, scale, splits);
  if (splits > 1) launch("attention merge", dim3(unsigned(T * H)), dim3(128), 0, attention_merge_kernel, ws, out, D, splits);
}

// a step's k|v rows into their caches: row t to caches[t] + offset + pos[t] * kv_stride (elements
// of the cache's type)
__global__ void store_kv_kernel(const float* src, int64_t src_stride, void* const* caches, DType dt, int64_t offset,
                                int64_t kv_stride, const int32_t* pos, int64_t cols) {
  const int64_t t = blockIdx.x;
  const float* s = src + t * src_stride;
  const int64_t row = offset + int64_t(pos[t]) * kv_stride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) store_from_float(caches[t], row + c, dt, s[c]);
}

// ---- FlashAttention-2 ----

constexpr int kFaThreads = 128;  // 4 warps

// keys per K / V tile: 64, or 32 where 64 would not leave the registers for the accumulators (32
// queries a warp at D = 128: O alone is 128 floats a thread)
template <int D, int MT>
constexpr int kFaKeys = D == 128 && MT == 2 ? 32 : 64;

struct Bf16Elem {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_bf16(lo, hi); }
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_bf16(d, a, b); }
};
struct F16Elem {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half a = __float2half(lo), b = __float2half(hi);
    return uint32_t(*reinterpret_cast<const uint16_t*>(&a)) | (uint32_t(*reinterpret_cast<const uint16_t*>(&b)) << 16);
  }
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_f16(d, a, b); }
};

// a tile of D 16-bit elements a row: row r, 16-byte chunk c stored at chunk c ^ (r % 8)
template <int D>
__device__ __forceinline__ int fa_swz(int row, int chunk) {
  return row * D * 2 + ((chunk ^ (row & 7)) << 4);
}

template <int D, int kRows>
__device__ __forceinline__ void fa_load_tile(unsigned char* dst, const unsigned char* src, int64_t row0, int64_t rows,
                                             int64_t row_stride_bytes) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < kRows * kChunks; c += kFaThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const bool valid = row0 + r < rows;
    ptx::cp_async16(dst + fa_swz<D>(r, ch), valid ? src + (row0 + r) * row_stride_bytes + ch * 16 : src, valid);
  }
}

// a warp's normalized O tiles to out (T, H, D): row row0 + 16 mt (+ 8), as kOut
template <DType kOut, int D, int MT>
__device__ __forceinline__ void fa_store(void* out, const float (&o)[MT][D / 8][4], int64_t row0, int t4, int64_t T,
                                         int64_t H, int64_t h) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = row0 + mt * 16 + (e >> 1) * 8;
        if (row < T) store_from_float(out, (row * H + h) * D + i * 8 + 2 * t4 + (e & 1), kOut, o[mt][i][e]);
      }
}

// MT m-tiles of 16 queries a warp, 64 MT queries a block. MT 1 keeps the warp's Q fragments in
// registers; MT 2 (as FlashAttention-2 does for these head sizes) reloads them from shared memory
// at each key tile, but every K and V fragment it loads then feeds two MMAs instead of one: 26
// instead of 16 FLOP per byte of shared memory read at D = 128
template <int D, int MT, class E>
__global__ void __launch_bounds__(kFaThreads) flash_attention_kernel(const unsigned char* q, int64_t q_stride,
                                                                     const unsigned char* k, const unsigned char* v,
                                                                     int64_t kv_stride, void* out, DType out_dt,
                                                                     int64_t T, int64_t S, int64_t H, int64_t group,
                                                                     float scale_log2, bool causal) {
  constexpr int kRows = 16 * MT * 4;  // queries per block
  constexpr int kKeys = kFaKeys<D, MT>;
  constexpr int kTile = kKeys * D * 2;  // bytes of one K or V tile
  FASTLM_DYNAMIC_SMEM(unsigned char, smem);
  unsigned char* Qs = smem;
  unsigned char* Ks = smem + kRows * D * 2;  // 2 stages
  unsigned char* Vs = Ks + 2 * kTile;        // 2 stages
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  // causal blocks near the end of the sequence have the most key tiles: they start first
  const int64_t q_tile = causal ? int64_t(gridDim.x) - 1 - blockIdx.x : int64_t(blockIdx.x);
  const int64_t q0 = q_tile * kRows, h = blockIdx.y, kvh = h / group;
  const int wrow = warp * 16 * MT;  // the warp's first query row in the block
  const unsigned char* kbase = k + kvh * D * 2;
  const unsigned char* vbase = v + kvh * D * 2;

  // the key tiles this block needs: causal, its last query (position S - T + q0 + kRows - 1) bounds them
  int64_t n_tiles = (S + kKeys - 1) / kKeys;
  if (causal) {
    const int64_t last = S - T + q0 + kRows - 1;
    const int64_t need = last < 0 ? 0 : last / kKeys + 1;
    n_tiles = need < n_tiles ? need : n_tiles;
  }

  fa_load_tile<D, kRows>(Qs, q + h * D * 2, q0, T, q_stride);
  if (n_tiles > 0) {
    fa_load_tile<D, kKeys>(Ks, kbase, 0, S, kv_stride);
    fa_load_tile<D, kKeys>(Vs, vbase, 0, S, kv_stride);
  }
  ptx::cp_async_commit();
  ptx::cp_async_wait<0>();
  __syncthreads();

  uint32_t qf[MT == 1 ? D / 16 : 1][4];  // MT 1: the warp's Q fragments, loaded once
  if constexpr (MT == 1) {
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
      ptx::ldmatrix_x4(qf[ks], Qs + fa_swz<D>(wrow + (lane & 15), ks * 2 + (lane >> 4)));
  }

  float o[MT][D / 8][4];
  float m_run[MT][2], l_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.0f;
  }
  const int64_t qpos0 = S - T + q0 + wrow + g;  // position of this thread's row g of m-tile 0

  for (int64_t j = 0; j < n_tiles; ++j) {
    if (j > 0) {
      ptx::cp_async_wait<0>();
      __syncthreads();
    }
    if (j + 1 < n_tiles) {  // the next tile into the other stage, while this one computes
      const int ns = int((j + 1) & 1);
      fa_load_tile<D, kKeys>(Ks + ns * kTile, kbase, (j + 1) * kKeys, S, kv_stride);
      fa_load_tile<D, kKeys>(Vs + ns * kTile, vbase, (j + 1) * kKeys, S, kv_stride);
    }
    ptx::cp_async_commit();
    const unsigned char* Kt = Ks + int(j & 1) * kTile;
    const unsigned char* Vt = Vs + int(j & 1) * kTile;

    float s[MT][kKeys / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < kKeys / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (MT == 1) {
          qa[mt][0] = qf[ks][0], qa[mt][1] = qf[ks][1], qa[mt][2] = qf[ks][2], qa[mt][3] = qf[ks][3];
        } else {
          ptx::ldmatrix_x4(qa[mt], Qs + fa_swz<D>(wrow + mt * 16 + (lane & 15), ks * 2 + (lane >> 4)));
        }
      }
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        uint32_t r[4];
        ptx::ldmatrix_x4(r, Kt + fa_swz<D>(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          E::mma(s[mt][2 * np], qa[mt], b0);
          E::mma(s[mt][2 * np + 1], qa[mt], b1);
        }
      }
    }

    // scale into base 2, mask, and the online softmax of rows g (e < 2) and g + 8 (e >= 2) of each
    // m-tile; only a tile that crosses this warp's diagonal or the end of the keys needs the mask
    const int64_t tile_end = (j + 1) * kKeys - 1;
    const bool masked = tile_end >= S || (causal && tile_end > S - T + q0 + wrow);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float m_new[2] = {m_run[mt][0], m_run[mt][1]};
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t key = j * kKeys + nt * 8 + 2 * t4 + (e & 1);
          const int64_t qp = qpos0 + mt * 16 + (e >> 1) * 8;
          float x = s[mt][nt][e] * scale_log2;
          if (masked && (key >= S || (causal && key > qp))) x = -INFINITY;
          s[mt][nt][e] = x;
          m_new[e >> 1] = fmaxf(m_new[e >> 1], x);
        }
      float corr[2], base[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        m_new[r] = fmaxf(m_new[r], __shfl_xor_sync(0xffffffffu, m_new[r], 1));
        m_new[r] = fmaxf(m_new[r], __shfl_xor_sync(0xffffffffu, m_new[r], 2));
        base[r] = m_new[r] == -INFINITY ? 0.0f : m_new[r];
        corr[r] = exp2f(m_run[mt][r] - base[r]);  // 0 while nothing was visible
        m_run[mt][r] = m_new[r];
        l_run[mt][r] *= corr[r];
      }
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float pv = exp2f(s[mt][nt][e] - base[e >> 1]);
          s[mt][nt][e] = pv;
          l_run[mt][e >> 1] += pv;
        }
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[mt][i][0] *= corr[0], o[mt][i][1] *= corr[0];
        o[mt][i][2] *= corr[1], o[mt][i][3] *= corr[1];
      }
    }

    // O += P V, P from the S accumulators: keys 16 kk .. 16 kk + 15 are n-tiles 2 kk and 2 kk + 1
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = E::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = E::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = E::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = E::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t r[4];
        ptx::ldmatrix_x4_trans(r, Vt + fa_swz<D>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), dp * 2 + (lane >> 4)));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          E::mma(o[mt][2 * dp], pa[mt], b0);
          E::mma(o[mt][2 * dp + 1], pa[mt], b1);
        }
      }
    }
  }
  ptx::cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[mt][r] += __shfl_xor_sync(0xffffffffu, l_run[mt][r], 1);
      l_run[mt][r] += __shfl_xor_sync(0xffffffffu, l_run[mt][r], 2);
      l_run[mt][r] = l_run[mt][r] > 0.0f ? 1.0f / l_run[mt][r] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][i][e] *= l_run[mt][e >> 1];
  }
  // the output type chosen once: a conversion switch per element keeps the loops from unrolling,
  // and O (128 floats a thread at D = 128, 32 queries a warp) would go to local memory
  const int64_t row0 = q0 + wrow + g;
  switch (out_dt) {
    case DType::kBF16: fa_store<DType::kBF16, D, MT>(out, o, row0, t4, T, H, h); break;
    case DType::kF16: fa_store<DType::kF16, D, MT>(out, o, row0, t4, T, H, h); break;
    default: fa_store<DType::kF32, D, MT>(out, o, row0, t4, T, H, h);
  }
}

template <int D, int MT, class E>
void run_flash(const void* q, int64_t q_stride, const void* k, const void* v, int64_t kv_stride, void* out,
               DType out_dt, int64_t T, int64_t S, int64_t H, int64_t Hkv, float scale, bool causal) {
  constexpr int kRows = 64 * MT;
  const dim3 grid(unsigned((T + kRows - 1) / kRows), unsigned(H));
  launch("flash_attention", grid, dim3(kFaThreads), size_t(kRows + 4 * kFaKeys<D, MT>) * D * 2,
         flash_attention_kernel<D, MT, E>, static_cast<const unsigned char*>(q), q_stride * 2,
         static_cast<const unsigned char*>(k), static_cast<const unsigned char*>(v), kv_stride * 2, out, out_dt, T, S,
         H, H / Hkv, scale * 1.4426950408889634f, causal);
}

}  // namespace

int attention_splits(int64_t keys) { return keys > kChunk ? int((keys + kChunk - 1) / kChunk) : 1; }

size_t attention_workspace(int64_t T, int64_t H, int64_t D, int64_t S) {
  const int splits = attention_splits(S);
  return splits > 1 ? size_t(T * H * splits * (D + 2)) : 0;
}

void attention(const float* q, int64_t q_stride, const float* k, const float* v, int64_t kv_stride, float* out,
               int64_t T, int64_t S, int64_t H, int64_t Hkv, int64_t D, float scale, bool causal, float* ws) {
  run_attention(q, q_stride, SharedKeys{k, v, T, S, causal}, kv_stride, out, T, S, H, Hkv, D, scale, ws);
}

void cached_attention(const float* q, int64_t q_stride, const void* const* caches, DType cache_dt, int64_t offset,
                      int64_t v_offset, int64_t kv_stride, const int32_t* pos, float* out, int64_t T, int64_t max_keys,
                      int64_t H, int64_t Hkv, int64_t D, float scale, float* ws) {
  if (cache_dt == DType::kBF16)
    run_attention(q, q_stride, CachedKeys<uint16_t>{caches, offset, v_offset, pos}, kv_stride, out, T, max_keys, H,
                  Hkv, D, scale, ws);
  else if (cache_dt == DType::kF32)
    run_attention(q, q_stride, CachedKeys<float>{caches, offset, v_offset, pos}, kv_stride, out, T, max_keys, H, Hkv,
                  D, scale, ws);
  else
    throw std::invalid_argument("cached_attention: the cache holds float32 or bfloat16");
}

void store_kv(const float* src, int64_t src_stride, void* const* caches, DType cache_dt, int64_t offset,
              int64_t kv_stride, const int32_t* pos, int64_t T, int64_t cols) {
  if (cache_dt != DType::kBF16 && cache_dt != DType::kF32)
    throw std::invalid_argument("store_kv: the cache holds float32 or bfloat16");
  if (T > 0) launch("store_kv", dim3(unsigned(T)), dim3(128), 0, store_kv_kernel, src, src_stride, caches, cache_dt,
                    offset, kv_stride, pos, cols);
}

void flash_attention(const void* q, int64_t q_stride, const void* k, const void* v, int64_t kv_stride, void* out,
                     DType out_dt, DType dt, int64_t T, int64_t S, int64_t H, int64_t Hkv, int64_t D, float scale,
                     bool causal, int block_rows) {
  if (dt != DType::kBF16 && dt != DType::kF16) throw std::invalid_argument("flash_attention takes bf16 or f16");
  if (out_dt != DType::kBF16 && out_dt != DType::kF16 && out_dt != DType::kF32)
    throw std::invalid_argument("flash_attention writes bf16, f16 or f32");
  if (D != 64 && D != 128) throw std::invalid_argument("flash_attention supports head_dim 64 or 128");
  if (q_stride % 8 || kv_stride % 8) throw std::invalid_argument("flash_attention row strides must be multiples of 8");
  if (block_rows == 0) block_rows = T >= 128 ? 128 : 64;
  if (block_rows != 64 && block_rows != 128) throw std::invalid_argument("flash_attention block_rows: 64 or 128");
  need_aligned16(q, "flash_attention q");
  need_aligned16(k, "flash_attention k");
  need_aligned16(v, "flash_attention v");
  auto run = [&](auto d, auto elem) {
    constexpr int kD = decltype(d)::value;
    using E = decltype(elem);
    if (block_rows == 128)
      run_flash<kD, 2, E>(q, q_stride, k, v, kv_stride, out, out_dt, T, S, H, Hkv, scale, causal);
    else
      run_flash<kD, 1, E>(q, q_stride, k, v, kv_stride, out, out_dt, T, S, H, Hkv, scale, causal);
  };
  if (dt == DType::kBF16)
    D == 64 ? run(std::integral_constant<int, 64>(), Bf16Elem()) : run(std::integral_constant<int, 128>(), Bf16Elem());
  else
    D == 64 ? run(std::integral_constant<int, 64>(), F16Elem()) : run(std::integral_constant<int, 128>(), F16Elem());
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
