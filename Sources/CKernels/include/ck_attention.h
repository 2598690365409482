/* ck_attention.h — multi-head attention with grouped-query heads.
 *
 * One call handles one KV head and its g query heads (a GQA group); callers loop or thread over
 * KV heads (and, for decode, over ranges of cached tokens, merging the partial results).
 *
 * Score functions, with x = scale * q.k:
 *   softmax:        w_t = exp(x_t - max x) / sum exp(x - max x)
 *   Power-Softmax:  w_t = (x_t / (M + delta))^p / (eps + sum_s (x_s / (M + delta))^p),  M = max_s |x_s|,
 *                   p even (default 4).
 * Partial state over a key range: m (max x, or max |x|), l (sum of unnormalised weights relative
 * to m), o[d] (unnormalised output). Partials over disjoint ranges merge exactly (up to rounding)
 * by rescaling to the largest m: factor exp(m_i - M) (softmax) or ((m_i + delta)/(M + delta))^p.
 *
 * Layouts: query rows are d floats; K/V rows of any ck_rtype at a byte stride (dense f32/f16 or
 * quantized KV caches). Decode can score with int8-quantized queries (ck_block_q8a) against
 * quantized keys, as the int8 KV path does.
 * Numerics: f32 accumulation; exp is a vectorised polynomial (< 2 ulp on [-87, 88]) in the SIMD
 * levels and libm expf in the serial reference.
 */
#ifndef CK_ATTENTION_H
#define CK_ATTENTION_H
#include "ck_common.h"
#include "ck_qmatmul.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef enum ck_score_fn { CK_SCORE_SOFTMAX = 0, CK_SCORE_POWER = 1 } ck_score_fn;

typedef struct ck_attention_params {
    ck_score_fn score;
    float scale; /**< multiplies q.k, usually 1/sqrt(d) */
    int power;   /**< Power-Softmax exponent p, even, >= 2 */
    float eps;   /**< Power-Softmax denominator epsilon */
    float delta; /**< Power-Softmax: scores are divided by (max|x| + delta); delta > 0 */
} ck_attention_params;

typedef struct ck_attention_kernels {
    const ck_qmatmul_kernels *rows; /**< row kernels of the same ISA level */
    /** max x (softmax) or max |x| (power) over s[0..len). */
    float (*row_max)(const ck_attention_params *p, const float *s, size_t len);
    /** Replaces s[0..len) by its unnormalised weights relative to m; returns their sum. */
    float (*row_weights)(const ck_attention_params *p, float *s, size_t len, float m);
    /** Scores of g queries (qs: g x d, already scaled) against one KIVI key group (32 tokens):
     *  s[j*lds + t] = sum_c qs[j][c] * (scale[c] * code[t][c] + min[c]), t < 32. qp: g x d floats
     *  of scratch. bits is 4 or 2. */
    void (*kivi_scores)(int bits, size_t d, const void *group, const float *qs, size_t g, float *qp, float *s,
                        size_t lds);
    /** The same scores with integer dot products: per query, qp = qs * scale is quantized to
     *  int8 with one f32 step S = max|qp| / 127 (round to nearest even), and
     *  s[j*lds + t] = S * sum_c qi[j][c] * code[t][c] + qs[j] . min, the sum exact in int32 (VNNI
     *  on AVX-512). scratch: g x d floats plus g x d bytes. */
    void (*kivi_scores_i8)(int bits, size_t d, const void *group, const float *qs, size_t g, void *scratch, float *s,
                           size_t lds);
} ck_attention_kernels;

const ck_attention_kernels *ck_attention_kernels_for(ck_isa level);

/** Bytes of scratch for ck_attention_decode_partial with T keys, g queries of dimension d. */
size_t ck_attention_decode_scratch_bytes(size_t T, size_t g, size_t d);

/** One query per head of a group (q: g x d) against T cached keys/values of one KV head.
 *  Row t of K is at (char*)k + t*kstride, of type kt (likewise V). int8_scores: quantize the
 *  scaled queries to int8 blocks and use integer dots (kt must be quantized, d % 32 == 0).
 *  Writes the partial state o (g x d), m (g), l (g). scratch: ck_attention_decode_scratch_bytes. */
ck_status ck_attention_decode_partial(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                                      size_t g, size_t d, ck_rtype kt, const void *k, size_t kstride, ck_rtype vt,
                                      const void *v, size_t vstride, size_t T, bool int8_scores, void *scratch,
                                      float *o, float *m, float *l);

/** Merges `parts` partial states (o: parts x g x d, m, l: parts x g) and normalises: out g x d. */
void ck_attention_merge(const ck_attention_params *p, size_t g, size_t d, size_t parts, const float *o, const float *m,
                        const float *l, float *out);

/** Query rows per block of the prefill kernel and keys per block. */
#define CK_ATTN_BQ 16
#define CK_ATTN_BK 64
/** Bytes of scratch for ck_attention_prefill with g query heads of dimension d. */
size_t ck_attention_prefill_scratch_bytes(size_t g, size_t d);

/** Causal prefill for one KV head and its g query heads, blocked with online normalisation.
 *  Query i (i < T) sits at position pos0 + i and attends keys 0..pos0+i. Query row i, head j is
 *  at q + i*ldq + j*d; key/value row t at k + t*ldk, v + t*ldv (f32); output row i head j at
 *  o + i*ldo + j*d. Rows [row0, row1) of the T queries are computed (for threading). */
ck_status ck_attention_prefill(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                               size_t ldq, size_t T, size_t row0, size_t row1, size_t g, size_t d, size_t pos0,
                               const float *k, size_t ldk, const float *v, size_t ldv, float *o, size_t ldo,
                               void *scratch);

/** KIVI key groups. Keys of one KV head are quantized per channel over groups of CK_KIVI_G
 *  consecutive tokens, asymmetric with b = 4 or 2 bits: k[t][c] ~= scale[c] * code[t][c] + min[c],
 *  code in [0, 2^b - 1]. A group is laid out as
 *    uint16 (IEEE half) scale[d], uint16 min[d],
 *    then the codes by channel quad (channels 4q .. 4q + 3, d % 4 == 0), quad after quad:
 *      b = 4: 64 bytes, byte 4i + k = channel 4q + k of token i (bits 0-3) and of token i + 16
 *             (bits 4-7), i < 16;
 *      b = 2: 32 bytes, byte 4i + k = channel 4q + k of tokens i, i + 8, i + 16, i + 24 at bits
 *             0, 2, 4, 6, i < 8.
 *  so one 32-bit lane holds 4 channels of one token: an integer dot (VNNI vpdpbusd, 4 bytes per
 *  lane) sums a channel quad of 16 tokens in one instruction, and a shift and mask give one
 *  channel of 16 (or 8) tokens for the f32 path; scores need no horizontal sums.
 *  Values of a KIVI cache are quantized per token (Q4_1 / Q2_1 rows: asymmetric blocks of 32
 *  channels), read by the row kernels. Quantization rounds to nearest against the stored (half)
 *  scale and minimum; a channel whose 32 values are equal gets scale 0 and codes 0. */
#define CK_KIVI_G 32
/** Bytes of one key group of d channels (0 if bits is not 4 or 2). */
size_t ck_kivi_group_bytes(int bits, size_t d);
/** Quantizes 32 key rows (row t at k + t*ldk floats, d values, all finite) into one group. */
ck_status ck_kivi_quantize_keys(int bits, size_t d, const float *k, size_t ldk, void *group);
/** Dequantizes one group into k (32 x d, row-major). */
ck_status ck_kivi_dequantize_keys(int bits, size_t d, const void *group, float *k);
/** Bytes of scratch for ck_attention_kivi_partial over `groups` groups. */
size_t ck_attention_kivi_scratch_bytes(size_t groups, size_t g, size_t d);
/** Like ck_attention_decode_partial over T = 32 * groups tokens whose keys are KIVI groups
 *  (consecutive, ck_kivi_group_bytes apart) and whose values are rows of type vt at vstride.
 *  int8_scores: scores by kivi_scores_i8 (int8 queries per group, integer dots). */
ck_status ck_attention_kivi_partial(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                                    size_t g, size_t d, int bits, const void *kgroups, size_t groups, ck_rtype vt,
                                    const void *v, size_t vstride, bool int8_scores, void *scratch, float *o, float *m,
                                    float *l);

/** Mixed precision over KIVI groups (MiKV, H2O). Positions 0 .. T-1 (T = 32 * groups) have
 *  low-precision keys (KIVI groups of `bits`, as ck_attention_kivi_partial) and values (rows of
 *  type vt); nh of them, at positions hpos[i] < T, also have a high-precision copy: key and value
 *  rows of type ht at hk + i*hstride, hv + i*hstride. Each position is attended once, through its
 *  high-precision copy if it has one (a position listed twice is a caller error). groups may be
 *  0: then only the nh high-precision rows are attended and hpos is not read (an eviction cache).
 *  Exact f32 scores (no int8 mode). Writes the partial state o, m, l like
 *  ck_attention_decode_partial, and leaves in scratch the unnormalised weights relative to m:
 *  g x T floats for the low-precision positions (0 where a high copy took over), then g x nh
 *  for the high-precision rows; ck_attention_weight_factors turns them into probabilities.
 *  scratch: ck_attention_mikv_scratch_bytes. */
size_t ck_attention_mikv_scratch_bytes(size_t groups, size_t nh, size_t g, size_t d);
ck_status ck_attention_mikv_partial(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                                    size_t g, size_t d, int bits, const void *kgroups, size_t groups, ck_rtype vt,
                                    const void *v, size_t vstride, ck_rtype ht, const void *hk, const void *hv,
                                    size_t hstride, const uint32_t *hpos, size_t nh, void *scratch, float *o, float *m,
                                    float *l);
/** For `parts` partial states (m, l: parts x g) of the same queries: f[j*g + i] such that a
 *  weight w of part j, query i, as the partial kernels leave it (unnormalised, relative to that
 *  part's m) is the probability w * f[j*g + i] of the merged attention. (ck_attention_decode_partial
 *  also leaves its g x T weights at the start of its scratch.) */
void ck_attention_weight_factors(const ck_attention_params *p, size_t g, size_t parts, const float *m, const float *l,
                                 float *f);

/** Polynomial-only Power-Softmax (the form an HE evaluator can run): with a public bound B on
 *  |x| (x = scale * q.k), w_t = (x_t / B)^p * r where r ~ 1 / (eps + sum_s (x_s / B)^p) comes
 *  from `iterations` Goldschmidt steps on a = (eps + sum) / (eps + len) in (0, 1]
 *  (y <- y (1 + e), e <- e^2, from y = 1, e = 1 - a), then r = y / (eps + len). Every operation
 *  is an addition, a multiplication, or a multiplication by a public constant (scale, 1/B,
 *  1/(eps + len)): no max, no exp, no division of data. Relative error of r: (1 - a)^(2^iterations),
 *  so iterations ~ log2(ln(1/tol) / a_min). The sum and the iteration run in double (a can be
 *  ~1e-12; CKKS-level precision), weights and outputs in f32.
 *  Requires |x| <= B (else a may exceed 1 and the iteration diverge for a >= 2). */
typedef struct ck_attention_poly_params {
    float scale;    /**< multiplies q.k */
    int power;      /**< even, >= 2 */
    float eps;      /**< >= 0 */
    float bound;    /**< B > 0, public bound on |scale * q.k| */
    int iterations; /**< Goldschmidt steps, >= 1 */
} ck_attention_poly_params;

/** One query (d values) against len keys/values (f32 rows at kstride/vstride floats): out (d).
 *  scratch: len floats. Serial reference (an evaluation mode, not a fast path). */
ck_status ck_attention_power_poly_row(const ck_attention_poly_params *p, const float *q, size_t d, const float *k,
                                      size_t kstride, const float *v, size_t vstride, size_t len, float *scratch,
                                      float *out);

#ifdef __cplusplus
}
#endif
#endif
