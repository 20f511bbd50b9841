// Fused CPU decoder-layer ops for the 4-bit fast path (specdec/models/fused.py drives them).
//
// Why C++: a 135M model's decode token is ~4 ms of 4-bit matmuls, and the eager PyTorch
// around them (casts, RoPE, the KV write, per-row attention, norms: ~200 aten calls and
// their Python per layer) cost as much again. Here a layer is 4 calls to torch's own
// int4 kernel plus a few tight loops, and `forward_rows` runs all layers in one call.
//
// Exactness contract (greedy speculation == plain decoding, bit for bit): every output row
// is computed from its own input row, its own keys and nothing else, by the same code
// whatever the number of rows. Reductions (norm statistics, dot products, softmax sums)
// run in a fixed order over fixed 8-lane vectors; attention tasks are split per (row, KV
// head), never inside a row, so threading does not change a single bit.
//
// Layouts: activations [T, H] float32 (residual) / bfloat16 (matmul inputs, as torch's
// x86 int4 kernel wants); KV caches [blocks, block_size, Hkv, D] float32.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <cstring>
#include <vector>

namespace {

typedef float v8f __attribute__((vector_size(32)));
using bf16 = c10::BFloat16;

inline v8f load8(const float* p) { v8f v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }
inline v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }
inline float hsum8(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// dot product of length n (multiple of 8), fixed lane order
inline float dot(const float* a, const float* b, int64_t n) {
  v8f acc0 = splat(0.f), acc1 = splat(0.f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 += load8(a + i) * load8(b + i);
    acc1 += load8(a + i + 8) * load8(b + i + 8);
  }
  for (; i < n; i += 8) acc0 += load8(a + i) * load8(b + i);
  return hsum8(acc0 + acc1);
}

// exp on 8 lanes: Cody-Waite range reduction + degree-6 polynomial (relative error ~2e-7).
// Inputs are clamped to [-87.3, 88]: tiny and huge, never inf, NaN or a wrapped exponent.
typedef int v8i __attribute__((vector_size(32)));
typedef unsigned short v8u16 __attribute__((vector_size(16)));
typedef unsigned int v8u32 __attribute__((vector_size(32)));

inline v8f load8_bf16(const bf16* p) {   // bf16 -> float is a 16-bit shift
  v8u16 h; std::memcpy(&h, p, sizeof(h));
  v8u32 w = __builtin_convertvector(h, v8u32) << 16;
  v8f f; std::memcpy(&f, &w, sizeof(f));
  return f;
}

inline v8f exp8(v8f x) {
  const v8f lo = splat(-87.3f), hi = splat(88.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  v8f t = x * splat(1.44269504088896341f) + splat(0.5f);
  v8f n = __builtin_convertvector(__builtin_convertvector(t, v8i), v8f);  // trunc
  n = n > t ? n - splat(1.0f) : n;                                          // -> floor
  v8f r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale; std::memcpy(&scale, &e, sizeof(scale));
  return p * scale;
}

// softmax over p[0:n] in place (p[n:n8] is scratch), returning 1 / sum
inline float softmax_unnormalized(float* p, int64_t n, float m) {
  const int64_t n8 = (n + 7) / 8 * 8;
  for (int64_t j = n; j < n8; ++j) p[j] = m;
  for (int64_t j = 0; j < n8; j += 8) store8(p + j, exp8(load8(p + j) - splat(m)));
  for (int64_t j = n; j < n8; ++j) p[j] = 0.f;
  v8f sum = splat(0.f);
  for (int64_t j = 0; j < n8; j += 8) sum += load8(p + j);
  return 1.0f / hsum8(sum);
}

// one query head over its n keys: o = softmax(q.K^T * scale) V, D a compile-time size
template <int D>
void attend_head(const float* q, const float* kc, const float* vc, const int64_t* slots, int64_t n,
                 int64_t Hkv, int64_t g, float scale, float* p, bf16* o) {
  constexpr int C = D / 8;
  v8f qv[C];
  for (int c = 0; c < C; ++c) qv[c] = load8(q + 8 * c);
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    const float* k = kc + (slots[j] * Hkv + g) * D;
    v8f a0 = qv[0] * load8(k), a1 = qv[1] * load8(k + 8);
    for (int c = 2; c < C; c += 2) {
      a0 += qv[c] * load8(k + 8 * c);
      a1 += qv[c + 1] * load8(k + 8 * c + 8);
    }
    p[j] = hsum8(a0 + a1) * scale;
    m = p[j] > m ? p[j] : m;
  }
  const float inv = softmax_unnormalized(p, n, m);
  v8f acc[C];
  for (int c = 0; c < C; ++c) acc[c] = splat(0.f);
  for (int64_t j = 0; j < n; ++j) {
    const float* v = vc + (slots[j] * Hkv + g) * D;
    const v8f pj = splat(p[j]);
    for (int c = 0; c < C; ++c) acc[c] += pj * load8(v + 8 * c);
  }
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < 8; ++i) o[8 * c + i] = bf16(acc[c][i] * inv);
}

void attend_head_any(const float* q, const float* kc, const float* vc, const int64_t* slots, int64_t n,
                     int64_t Hkv, int64_t g, int64_t D, float scale, float* p, bf16* o) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    p[j] = dot(q, kc + (slots[j] * Hkv + g) * D, D) * scale;
    m = p[j] > m ? p[j] : m;
  }
  const float inv = softmax_unnormalized(p, n, m);
  std::vector<float> acc(D, 0.f);
  for (int64_t j = 0; j < n; ++j) {
    const float* v = vc + (slots[j] * Hkv + g) * D;
    const v8f pj = splat(p[j]);
    for (int64_t d = 0; d < D; d += 8) store8(&acc[d], load8(&acc[d]) + pj * load8(v + d));
  }
  for (int64_t d = 0; d < D; ++d) o[d] = bf16(acc[d] * inv);
}

void check_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous(), name, " must be contiguous float32");
}
void check_bf16(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous(), name, " must be contiguous bfloat16");
}

// x[i] += y[i] for n elements (the residual add of a bf16 matmul output)
inline void add_bf16_into(float* x, const bf16* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += (float)y[i];
}

// out[t] = bf16(x[t] * rsqrt(mean(x[t]^2) + eps) * w)
void rms_norm_row(const float* x, const float* w, bf16* out, int64_t H, float eps) {
  float ss = dot(x, x, H);
  float r = 1.0f / std::sqrt(ss / (float)H + eps);
  for (int64_t i = 0; i < H; ++i) out[i] = bf16(x[i] * r * w[i]);
}

}  // namespace

// ---- elementwise ops ------------------------------------------------------------------

at::Tensor rms_norm_bf16(const at::Tensor& x, const at::Tensor& w, double eps) {
  RECORD_FUNCTION("specdec::rms_norm_bf16", std::vector<c10::IValue>());
  check_f32(x, "x"); check_f32(w, "w");
  const int64_t T = x.size(0), H = x.size(1);
  TORCH_CHECK(H % 8 == 0, "hidden size must be a multiple of 8");
  auto out = at::empty({T, H}, x.options().dtype(at::kBFloat16));
  const float* xp = x.data_ptr<float>();
  bf16* op = out.data_ptr<bf16>();
  for (int64_t t = 0; t < T; ++t) rms_norm_row(xp + t * H, w.data_ptr<float>(), op + t * H, H, (float)eps);
  return out;
}

// x += y (in place, y bf16), then rms_norm_bf16(x)
at::Tensor add_rms_norm_bf16(at::Tensor& x, const at::Tensor& y, const at::Tensor& w, double eps) {
  RECORD_FUNCTION("specdec::add_rms_norm_bf16", std::vector<c10::IValue>());
  check_f32(x, "x"); check_bf16(y, "y"); check_f32(w, "w");
  const int64_t T = x.size(0), H = x.size(1);
  TORCH_CHECK(y.size(0) == T && y.size(1) == H, "x and y shapes differ");
  auto out = at::empty({T, H}, x.options().dtype(at::kBFloat16));
  float* xp = x.data_ptr<float>();
  add_bf16_into(xp, y.data_ptr<bf16>(), T * H);
  for (int64_t t = 0; t < T; ++t)
    rms_norm_row(xp + t * H, w.data_ptr<float>(), out.data_ptr<bf16>() + t * H, H, (float)eps);
  return out;
}

// x += y (in place, y bf16)
void add_bf16_(at::Tensor& x, const at::Tensor& y) {
  RECORD_FUNCTION("specdec::add_bf16_", std::vector<c10::IValue>());
  check_f32(x, "x"); check_bf16(y, "y");
  TORCH_CHECK(x.numel() == y.numel(), "x and y sizes differ");
  add_bf16_into(x.data_ptr<float>(), y.data_ptr<bf16>(), x.numel());
}

// gu: [T, 2I] bf16 (gate | up) -> bf16(silu(gate) * up): [T, I]
at::Tensor silu_mul_bf16(const at::Tensor& gu) {
  RECORD_FUNCTION("specdec::silu_mul_bf16", std::vector<c10::IValue>());
  check_bf16(gu, "gu");
  const int64_t T = gu.size(0), I = gu.size(1) / 2;
  auto out = at::empty({T, I}, gu.options());
  const bf16* g = gu.data_ptr<bf16>();
  bf16* o = out.data_ptr<bf16>();
  for (int64_t t = 0; t < T; ++t) {
    const bf16* gate = g + t * 2 * I;
    const bf16* up = gate + I;
    int64_t i = 0;
    for (; i + 8 <= I; i += 8) {          // silu(a) = a / (1 + exp(-a)), 8 lanes at a time
      const v8f a = load8_bf16(gate + i), b = load8_bf16(up + i);
      const v8f y = a / (splat(1.0f) + exp8(-a)) * b;
      for (int k = 0; k < 8; ++k) o[t * I + i + k] = bf16(y[k]);
    }
    for (; i < I; ++i) {
      const float a = (float)gate[i], b = (float)up[i];
      o[t * I + i] = bf16(a / (1.0f + std::exp(-a)) * b);
    }
  }
  return out;
}

// qkv: [T, (Hq + 2 Hkv) D] bf16 -> q [T, Hq, D] float32 rotated; rotated k and v are written
// to the caches at `slots` (negative slots are skipped). cos/sin: [P, D] float32 tables.
at::Tensor rope_store(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& positions, at::Tensor& k_cache, at::Tensor& v_cache,
                      const at::Tensor& slots, int64_t Hq, int64_t Hkv) {
  RECORD_FUNCTION("specdec::rope_store", std::vector<c10::IValue>());
  check_bf16(qkv, "qkv"); check_f32(cos, "cos"); check_f32(sin, "sin");
  check_f32(k_cache, "k_cache"); check_f32(v_cache, "v_cache");
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong, "int64 indices");
  const int64_t T = qkv.size(0), D = cos.size(1), half = D / 2;
  TORCH_CHECK(qkv.size(1) == (Hq + 2 * Hkv) * D, "qkv width mismatch");
  const int64_t num_slots = k_cache.numel() / (Hkv * D);
  auto q = at::empty({T, Hq, D}, qkv.options().dtype(at::kFloat));
  const bf16* src = qkv.data_ptr<bf16>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  const int64_t* sl = slots.data_ptr<int64_t>();
  float* qo = q.data_ptr<float>();
  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  std::vector<float> xf(D);
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos.data_ptr<float>() + pos[t] * D;
    const float* s = sin.data_ptr<float>() + pos[t] * D;
    const bf16* row = src + t * (Hq + 2 * Hkv) * D;
    const int64_t slot = sl[t];
    TORCH_CHECK(slot < num_slots, "slot out of range");
    for (int64_t h = 0; h < Hq + Hkv; ++h) {
      for (int64_t i = 0; i < D; ++i) xf[i] = (float)row[h * D + i];
      float* dst = h < Hq ? qo + (t * Hq + h) * D : (slot >= 0 ? kc + (slot * Hkv + h - Hq) * D : nullptr);
      if (!dst) continue;
      for (int64_t i = 0; i < half; ++i) {
        dst[i] = xf[i] * c[i] - xf[i + half] * s[i];
        dst[i + half] = xf[i + half] * c[i + half] + xf[i] * s[i + half];
      }
    }
    if (slot >= 0) {
      const bf16* v = row + (Hq + Hkv) * D;
      float* vd = vc + slot * Hkv * D;
      for (int64_t i = 0; i < Hkv * D; ++i) vd[i] = (float)v[i];
    }
  }
  return q;
}

// ---- attention ------------------------------------------------------------------------

// q: [R, Hq, D] float32; row r attends to the keys at key_slots[r, :lengths[r]] (in position
// order). Returns [R, Hq * D] bfloat16 (the o-projection's input).
at::Tensor row_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                         const at::Tensor& key_slots, const at::Tensor& lengths, double scale) {
  RECORD_FUNCTION("specdec::row_attention", std::vector<c10::IValue>());
  check_f32(q, "q"); check_f32(k_cache, "k_cache"); check_f32(v_cache, "v_cache");
  TORCH_CHECK(key_slots.scalar_type() == at::kLong && key_slots.is_contiguous(), "key_slots int64");
  TORCH_CHECK(lengths.scalar_type() == at::kLong, "lengths int64");
  const int64_t R = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t Hkv = k_cache.size(2), G = Hq / Hkv, S = key_slots.size(1);
  TORCH_CHECK(D % 8 == 0 && Hq % Hkv == 0 && k_cache.size(3) == D, "bad head layout");
  const int64_t num_slots = k_cache.numel() / (Hkv * D);
  auto out = at::empty({R, Hq * D}, q.options().dtype(at::kBFloat16));
  const float* qp = q.data_ptr<float>();
  const float* kc = k_cache.data_ptr<float>();
  const float* vc = v_cache.data_ptr<float>();
  const int64_t* ks = key_slots.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  bf16* op = out.data_ptr<bf16>();
  for (int64_t r = 0; r < R; ++r) {
    TORCH_CHECK(len[r] >= 1 && len[r] <= S, "a row needs 1..S keys");
    for (int64_t j = 0; j < len[r]; ++j)
      TORCH_CHECK(ks[r * S + j] >= 0 && ks[r * S + j] < num_slots, "key slot out of range");
  }
  const float sc = (float)scale;
  // one task per (row, kv head): a row's arithmetic never depends on how tasks are split
  at::parallel_for(0, R * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(S + 8);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / Hkv, g = task % Hkv;
      const int64_t* slots = ks + r * S;
      for (int64_t h = 0; h < G; ++h) {
        const float* qh = qp + (r * Hq + g * G + h) * D;
        bf16* o = op + r * Hq * D + (g * G + h) * D;
        switch (D) {  // head sizes with accumulators in registers; any multiple of 8 otherwise
          case 64: attend_head<64>(qh, kc, vc, slots, len[r], Hkv, g, sc, p.data(), o); break;
          case 128: attend_head<128>(qh, kc, vc, slots, len[r], Hkv, g, sc, p.data(), o); break;
          default: attend_head_any(qh, kc, vc, slots, len[r], Hkv, g, D, sc, p.data(), o);
        }
      }
    }
  });
  return out;
}

// ---- Q8_0 linear (the tied LM head) ---------------------------------------------------

// x [M, K] float32 or bfloat16; w [N, K] int8 with one float32 scale per 32 weights along K
// (GGUF Q8_0, exactly). Like llama.cpp's q8_0 x q8_0 dot: each row of x is quantized to
// int8 in blocks of 32 (scale max|x| / 127, round to nearest), integer dot products per
// block, float accumulation over blocks in order. Returns [M, N] float32. Each output is a
// function of its own row of x and row of w only (threads split N), so rows are invariant.
#if defined(__AVX2__) && defined(__FMA__)
// Q8_0 rows n0..n1 with AVX512-VNNI (256-bit `vpdpbusd`, no sign tricks): w + 128 is unsigned,
// so dpbusd(-128 * sum(x), w + 128, x) is the exact integer dot of each 4-byte lane group --
// the same int32 lanes the AVX2 path's maddubs/madd produce, then the same float steps, so the
// two paths agree bit for bit. Rows go in tiles of 4 sharing each weight block's load.
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
void q8_rows_vnni(const int8_t* wp, const float* sp, const int8_t* xq, const float* xd, const int32_t* xcorr,
                  float* op, int64_t M, int64_t N, int64_t K, int64_t n0, int64_t n1) {
  const int64_t B = K / 32;
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* wr = wp + n * K;
    const float* sr = sp + n * B;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, M - m0);
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t b = 0; b < B; ++b) {
        const __m256i wu = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(wr + b * 32)), flip);
        for (int64_t j = 0; j < mt; ++j) {
          const int64_t m = m0 + j;
          const __m256i xv = _mm256_loadu_si256((const __m256i*)(xq + m * K + b * 32));
          const __m256i c = _mm256_loadu_si256((const __m256i*)(xcorr + (m * B + b) * 8));
          const __m256 pf = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(c, wu, xv));
          acc[j] = _mm256_fmadd_ps(pf, _mm256_set1_ps(sr[b] * xd[m * B + b]), acc[j]);
        }
      }
      for (int64_t j = 0; j < mt; ++j) {
        v8f a; std::memcpy(&a, &acc[j], sizeof(a));
        op[(m0 + j) * N + n] = hsum8(a);
      }
    }
  }
}
#endif

bool cpu_has_vnni() {
#if defined(__AVX2__) && defined(__FMA__) && defined(__GNUC__)
  // libgcc checks the OS enabled the AVX512 state (XCR0), not only the CPUID bit
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

// y = x @ W^T for Q8_0 W; x quantized per 32-block to int8 (llama.cpp's Q8_0 x Q8_0 dot).
// isa: -1 = best available, 0 = AVX2 / portable, 1 = AVX512-VNNI (error if unavailable).
at::Tensor q8_linear(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& scales, int64_t isa) {
  RECORD_FUNCTION("specdec::q8_linear", std::vector<c10::IValue>());
  TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous(), "w must be contiguous int8");
  check_f32(scales, "scales");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0), B = K / 32;
  TORCH_CHECK(K % 32 == 0 && w.size(1) == K && scales.size(0) == N && scales.size(1) == B, "bad Q8_0 shapes");
  const bool vnni = isa < 0 ? cpu_has_vnni() : isa == 1;
  TORCH_CHECK(!vnni || cpu_has_vnni(), "AVX512-VNNI is not available on this CPU");
  std::vector<int8_t> xq(M * K);
  std::vector<float> xd(M * B);
  std::vector<int32_t> xcorr(vnni ? M * B * 8 : 0);
  const float* xp = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < B; ++b) {
      const float* src = xp + m * K + b * 32;
      float amax = 0.f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(src[i]));
      const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
      xd[m * B + b] = d;
      int8_t* q = xq.data() + m * K + b * 32;
      for (int i = 0; i < 32; ++i) q[i] = (int8_t)std::nearbyint(src[i] * id);
      if (vnni)
        for (int l = 0; l < 8; ++l)
          xcorr[(m * B + b) * 8 + l] = -128 * ((int32_t)q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3]);
    }
  auto out = at::empty({M, N}, x.options());
  float* op = out.data_ptr<float>();
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = scales.data_ptr<float>();
#if defined(__AVX2__) && defined(__FMA__)
  if (vnni) {
    at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
      q8_rows_vnni(wp, sp, xq.data(), xd.data(), xcorr.data(), op, M, N, K, n0, n1);
    });
    return out;
  }
#endif
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* wr = wp + n * K;
      const float* sr = sp + n * B;
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xr = xq.data() + m * K;
        const float* dr = xd.data() + m * B;
#if defined(__AVX2__) && defined(__FMA__)
        __m256 acc = _mm256_setzero_ps();
        const __m256i ones = _mm256_set1_epi16(1);
        for (int64_t b = 0; b < B; ++b) {
          const __m256i wv = _mm256_loadu_si256((const __m256i*)(wr + b * 32));
          const __m256i xv = _mm256_loadu_si256((const __m256i*)(xr + b * 32));
          const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(xv, xv), _mm256_sign_epi8(wv, xv));
          const __m256 pf = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
          acc = _mm256_fmadd_ps(pf, _mm256_set1_ps(sr[b] * dr[b]), acc);
        }
        v8f a; std::memcpy(&a, &acc, sizeof(a));
        op[m * N + n] = hsum8(a);
#else
        v8f acc = splat(0.f);
        for (int64_t b = 0; b < B; ++b) {
          int32_t lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          for (int i = 0; i < 32; ++i) lane[(i / 4) % 8] += (int32_t)wr[b * 32 + i] * xr[b * 32 + i];
          v8f pf{(float)lane[0], (float)lane[1], (float)lane[2], (float)lane[3],
                 (float)lane[4], (float)lane[5], (float)lane[6], (float)lane[7]};
          acc += pf * splat(sr[b] * dr[b]);
        }
        op[m * N + n] = hsum8(acc);
#endif
      }
    }
  });
  return out;
}

// ---- whole layers ---------------------------------------------------------------------

at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& packed, int64_t group, const at::Tensor& sz) {
  return at::_weight_int4pack_mm_for_cpu(x, packed, group, sz);
}

// A decoder layer in two halves around attention, so that the all-rows step (forward_rows)
// and the layer-by-layer step with a prefill chunk (specdec/models/fused.py) run the same
// code. w: the layer's 10 tensors: ln1, qkv packed, qkv scale/zero, o packed, o sz, ln2,
// gate_up packed, gate_up sz, down packed, down sz.

// norm -> qkv matmul -> RoPE; k and v are written to the caches. Returns q [T, Hq, D].
at::Tensor layer_qkv(const at::Tensor& x, const std::vector<at::Tensor>& w, const at::Tensor& cos,
                     const at::Tensor& sin, const at::Tensor& positions, at::Tensor& k_cache,
                     at::Tensor& v_cache, const at::Tensor& slots, int64_t group, double eps,
                     int64_t Hq, int64_t Hkv) {
  TORCH_CHECK(w.size() == 10, "expected 10 weights per layer");
  at::Tensor h = rms_norm_bf16(x, w[0], eps);
  return rope_store(int4_mm(h, w[1], group, w[2]), cos, sin, positions, k_cache, v_cache, slots, Hq, Hkv);
}

// x += o_proj(a); x += down(silu(gate) * up) of norm(x). a: attention output [T, Hq*D] bf16.
void layer_out(at::Tensor& x, const at::Tensor& a, const std::vector<at::Tensor>& w, int64_t group,
               double eps) {
  TORCH_CHECK(w.size() == 10, "expected 10 weights per layer");
  at::Tensor h = add_rms_norm_bf16(x, int4_mm(a, w[3], group, w[4]), w[5], eps);
  at::Tensor m = silu_mul_bf16(int4_mm(h, w[6], group, w[7]));
  add_bf16_(x, int4_mm(m, w[8], group, w[9]));
}

// ---- the EAGLE draft head (drafts/eagle_head.py) on the same ops ------------------------

// g = fc(cat(norm_i(feature_i))): features [T, n*H] float32, norms: n weights [H].
at::Tensor eagle_fuse(const at::Tensor& features, const std::vector<at::Tensor>& norms,
                      const at::Tensor& fc, const at::Tensor& fc_sz, int64_t group, double eps) {
  RECORD_FUNCTION("specdec::eagle_fuse", std::vector<c10::IValue>());
  const at::Tensor f = features.to(at::kFloat).contiguous();
  const int64_t n = (int64_t)norms.size(), H = f.size(1) / n;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n; ++i)
    parts.push_back(rms_norm_bf16(f.narrow(1, i * H, H).contiguous(), norms[i], eps));
  return int4_mm(at::cat(parts, 1), fc, group, fc_sz).to(at::kFloat);
}

// The head's decoder layer over rows that all take the row path: q/k/v from
// cat(hidden_norm(hidden), input_norm(emb)), RoPE + the K/V write into the head's pool layer,
// row attention, then o_proj, the residual on `hidden`, the MLP (layer_out). Returns a [T, H].
// w: hidden_norm, input_norm, qkv (packed, sz), o (packed, sz), post_norm, gate_up (packed, sz),
// down (packed, sz).
at::Tensor eagle_layer(const at::Tensor& hidden, const at::Tensor& emb, const std::vector<at::Tensor>& w,
                       const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions,
                       at::Tensor k_cache, at::Tensor v_cache, const at::Tensor& slots,
                       const at::Tensor& key_slots, const at::Tensor& lengths, int64_t group, double eps,
                       double scale, int64_t Hq, int64_t Hkv) {
  RECORD_FUNCTION("specdec::eagle_layer", std::vector<c10::IValue>());
  TORCH_CHECK(w.size() == 11, "expected 11 head weights");
  check_f32(hidden, "hidden"); check_f32(emb, "emb");
  at::Tensor h = at::cat({rms_norm_bf16(hidden, w[0], eps), rms_norm_bf16(emb, w[1], eps)}, 1);
  at::Tensor q = rope_store(int4_mm(h, w[2], group, w[3]), cos, sin, positions, k_cache, v_cache, slots, Hq, Hkv);
  at::Tensor x = hidden.clone();
  const std::vector<at::Tensor> lw = {w[0], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10]};
  layer_out(x, row_attention(q, k_cache, v_cache, key_slots, lengths, scale), lw, group, eps);
  return x;
}

// All decoder layers for a step whose every query row takes the row path (decode tokens,
// draft trees), in one call. x: [T, H] float32 residual stream, updated in place.
// layers: 10 tensors per layer (see layer_qkv). kv: [L, 2, blocks, block_size, Hkv, D].
// capture: layers (ascending) whose incoming residual stream is also returned (EAGLE's
// features; empty for plain steps). Returns [x, captured...].
std::vector<at::Tensor> forward_rows(at::Tensor x, const at::Tensor& positions, const at::Tensor& cos,
                                     const at::Tensor& sin, at::Tensor kv, const at::Tensor& slots,
                                     const at::Tensor& key_slots, const at::Tensor& lengths,
                                     const std::vector<std::vector<at::Tensor>>& layers,
                                     const std::vector<int64_t>& capture, int64_t group, double eps,
                                     double scale, int64_t Hq, int64_t Hkv) {
  RECORD_FUNCTION("specdec::forward_rows", std::vector<c10::IValue>());
  check_f32(x, "x"); check_f32(kv, "kv");
  TORCH_CHECK((int64_t)layers.size() == kv.size(0), "one weight list per layer");
  std::vector<at::Tensor> out = {x};
  size_t c = 0;
  for (int64_t l = 0; l < kv.size(0); ++l) {
    if (c < capture.size() && capture[c] == l) { out.push_back(x.clone()); ++c; }
    at::Tensor kc = kv[l][0], vc = kv[l][1];
    at::Tensor q = layer_qkv(x, layers[l], cos, sin, positions, kc, vc, slots, group, eps, Hq, Hkv);
    layer_out(x, row_attention(q, kc, vc, key_slots, lengths, scale), layers[l], group, eps);
  }
  TORCH_CHECK(c == capture.size(), "capture layers must be ascending and < the layer count");
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm_bf16", &rms_norm_bf16);
  m.def("add_rms_norm_bf16", &add_rms_norm_bf16);
  m.def("add_bf16_", &add_bf16_);
  m.def("silu_mul_bf16", &silu_mul_bf16);
  m.def("rope_store", &rope_store);
  m.def("row_attention", &row_attention);
  m.def("layer_qkv", &layer_qkv);
  m.def("layer_out", &layer_out);
  m.def("forward_rows", &forward_rows);
  m.def("q8_linear", &q8_linear, py::arg("x"), py::arg("w"), py::arg("scales"), py::arg("isa") = -1);
  m.def("cpu_has_vnni", &cpu_has_vnni);
  m.def("eagle_fuse", &eagle_fuse);
  m.def("eagle_layer", &eagle_layer);
}
