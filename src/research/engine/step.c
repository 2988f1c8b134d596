// The decode steps of the kit's chat path in C: research.engine.native compiles this on the device
// against the installed llama.cpp (llama-cpp-python's own header and libllama) and the engine's
// loop calls kit_steps (at the end) for several tokens at a time, in place of three calls from
// Python a token (llama_decode, the sampler chain, the free signals in NumPy). Between two decodes
// llama.cpp's threads wait; the shorter the wait, the closer a chat answer comes to llama-bench's
// speed (issue 30).
//
// kit_step(ctx, chain, token, n_vocab, keep, want_signals, out, buf), one step:
//   decode `token` at the next position, sample the next token with `chain` (llama.cpp's own
//   sampler chain, exactly as llama_sampler_sample does, on the candidates that can survive its
//   first top-k: see below), and, if asked, the free signals of the sampled token under the
//   model's raw distribution: out[0] its log-probability, out[1] the distribution's entropy in
//   nats. out[2], out[3] and out[4] gain the seconds spent decoding, sampling and reading the
//   signals. `buf` holds n_vocab llama_token_data (the caller's: one per engine, so that engines
//   on other threads do not share it). Returns the next token, or -1 when llama_decode failed (its
//   code in out[5]), -2 when llama.cpp kept no logits or the chain selected no token.
//
// The candidates: llama_sampler_sample hands the chain every token of the vocabulary (49,152 for
// SmolLM2, 262,144 for Gemma 3) in token order, and the chain's first sampler keeps the `keep`
// highest (the kit's chains start with a top-k: research.engine.llama.LlamaBackend.sampler). Here
// the chain gets, in token order too, every token whose logit is within a margin of the largest,
// the smallest of MARGINS that holds at least `keep` tokens (all tokens if none does): the `keep`
// highest are among them, so the chain keeps the same tokens and samples the same one with the
// same random numbers. Where logits tie among the `keep` highest or across the
// cut, the chain's partial sort could order or keep tied tokens otherwise than over the whole
// vocabulary: then it gets the whole vocabulary, as from llama_sampler_sample.

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// exp(x) for x <= 0, to about 7e-6 relative: 2^(x log2 e) split into 2^i and a polynomial of the
// fraction. Written so that compilers vectorize the loops that call it (no libm call).
static inline float exp_neg(float x) {
    float t = fmaxf(x, -87.0f) * 1.44269504089f;
    float i = floorf(t);
    float f = t - i;  // [0, 1)
    float p = 1.53527021e-4f;
    p = p * f + 1.33988661e-3f;
    p = p * f + 9.61844013e-3f;
    p = p * f + 5.55036343e-2f;
    p = p * f + 2.40226507e-1f;
    p = p * f + 6.93147182e-1f;
    p = p * f + 1.0f;
    int32_t bits = ((int32_t)i + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// Margins below the largest logit, in nats, tried in turn for the candidates (see the header):
// the first that holds `keep` tokens is taken. SmolLM2's default chain keeps 104: about 100
// tokens lie within 8 nats of the largest, 1,200 within 12 and 7,400 within 16 (medians over a
// long answer), so the steps between 8 and 16 are fine; a model unsure of everything (a file of
// random weights) has thousands within 2, so the small steps.
#define N_MARGINS 16
static const float MARGINS[N_MARGINS] = {0.25f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                         8.0f,  9.0f, 10.0f, 11.0f, 12.0f, 14.0f, 16.0f, 32.0f};

static int descending(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

// Whether two of the `keep` highest of the k candidates' logits are equal, or the keep-th highest
// equals one below it. A copy of the logits is partitioned around the keep-th highest
// (quickselect), its top `keep` sorted and compared neighbour to neighbour. More candidates than
// the copy holds: answered yes, so that the caller takes the exact way.
#define TIE_ROOM 4096
int kit_ties_at_the_top(const llama_token_data *c, int32_t k, int32_t keep) {
    static _Thread_local float v[TIE_ROOM];
    if (k > TIE_ROOM) return 1;
    if (keep >= k) keep = k;
    for (int32_t i = 0; i < k; i++) v[i] = c[i].logit;
    int32_t lo = 0, hi = k - 1, nth = keep - 1;
    while (lo < hi) {  // v[0 .. nth] become the keep highest, v[nth] the keep-th highest
        const float pivot = v[(lo + hi) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                const float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (nth <= j) hi = j;
        else if (nth >= i) lo = i;
        else break;
    }
    const float cut = v[nth];
    for (int32_t i = nth + 1; i < k; i++) {
        if (v[i] >= cut) return 1;  // the keep-th highest has a twin below the cut
    }
    qsort(v, (size_t)keep, sizeof v[0], descending);
    for (int32_t i = 1; i < keep; i++) {
        if (v[i] == v[i - 1]) return 1;
    }
    return 0;
}

static int32_t kit_step(struct llama_context *ctx, struct llama_sampler *chain, int32_t token, int32_t n_vocab,
                        int32_t keep, int32_t want_signals, double *out, llama_token_data *buf) {
    double t0 = now();
    llama_token one = token;
    int32_t rc = llama_decode(ctx, llama_batch_get_one(&one, 1));
    double t1 = now();
    out[2] += t1 - t0;
    if (rc != 0) {
        out[5] = rc;
        return -1;
    }
    const float *x = llama_get_logits_ith(ctx, -1);
    if (x == NULL) {
        out[5] = -4;
        return -2;
    }

    float top = x[0];
    for (int32_t i = 1; i < n_vocab; i++) top = fmaxf(top, x[i]);
    // How many logits lie within each margin of the largest: sixteen counters in one pass, which
    // compilers vectorize (an array of counters they do not), each by the very comparison that
    // picks the candidates below (x >= floor), so that the count is exactly what is picked.
    float f[N_MARGINS];
    for (int m = 0; m < N_MARGINS; m++) f[m] = top - MARGINS[m];
    int32_t w0 = 0, w1 = 0, w2 = 0, w3 = 0, w4 = 0, w5 = 0, w6 = 0, w7 = 0;
    int32_t w8 = 0, w9 = 0, w10 = 0, w11 = 0, w12 = 0, w13 = 0, w14 = 0, w15 = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float v = x[i];
        w0 += v >= f[0];
        w1 += v >= f[1];
        w2 += v >= f[2];
        w3 += v >= f[3];
        w4 += v >= f[4];
        w5 += v >= f[5];
        w6 += v >= f[6];
        w7 += v >= f[7];
        w8 += v >= f[8];
        w9 += v >= f[9];
        w10 += v >= f[10];
        w11 += v >= f[11];
        w12 += v >= f[12];
        w13 += v >= f[13];
        w14 += v >= f[14];
        w15 += v >= f[15];
    }
    const int32_t within[N_MARGINS] = {w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15};
    float floor_ = -FLT_MAX;  // every finite logit (FLAGS assume finite logits: -ffinite-math-only)
    if (keep > 0) {
        for (int m = 0; m < N_MARGINS; m++) {
            if (within[m] >= keep) {
                floor_ = f[m];
                break;
            }
        }
    }
    // The candidates, in token order. Blocks of 16 logits whose largest is under the floor (most
    // of them) are passed over with one vector comparison.
    int32_t k = 0;
    const int32_t whole = n_vocab / 16 * 16;
    for (int32_t b = 0; b < whole; b += 16) {
        float most = x[b];
        for (int j = 1; j < 16; j++) most = fmaxf(most, x[b + j]);
        if (most < floor_) continue;
        for (int32_t i = b; i < b + 16; i++) {
            if (x[i] >= floor_) {
                buf[k].id = i;
                buf[k].logit = x[i];
                buf[k].p = 0.0f;
                k++;
            }
        }
    }
    for (int32_t i = whole; i < n_vocab; i++) {
        if (x[i] >= floor_) {
            buf[k].id = i;
            buf[k].logit = x[i];
            buf[k].p = 0.0f;
            k++;
        }
    }
    // The whole vocabulary instead, as llama_sampler_sample hands it: when fewer than `keep` were
    // picked (logits that are not finite numbers), and when logits tie among the `keep` highest or
    // across the cut, where the chain's partial sort may order or keep tied tokens otherwise.
    if (k < n_vocab && (k < keep || (keep > 1 && kit_ties_at_the_top(buf, k, keep)))) {
        for (int32_t i = 0; i < n_vocab; i++) {
            buf[i].id = i;
            buf[i].logit = x[i];
            buf[i].p = 0.0f;
        }
        k = n_vocab;
    }
    llama_token_data_array cur = {buf, (size_t)k, -1, false};
    llama_sampler_apply(chain, &cur);
    if (cur.selected < 0 || cur.selected >= (int64_t)cur.size) {
        out[5] = -3;
        return -2;
    }
    llama_token next = cur.data[cur.selected].id;
    llama_sampler_accept(chain, next);
    double t2 = now();
    out[3] += t2 - t1;

    if (want_signals) {
        // Summed in double: 49k-262k float terms summed in float drift by a few 1e-4.
        double sum = 0.0, weighted = 0.0;
        for (int32_t i = 0; i < n_vocab; i++) {
            float d = fmaxf(x[i] - top, -87.0f);  // below, e is 0 in float: e * d is too
            float e = exp_neg(d);
            sum += (double)e;
            weighted += (double)(e * d);
        }
        double lse = log(sum);
        out[0] = (double)(x[next] - top) - lse;
        out[1] = lse - weighted / sum;
        out[4] += now() - t2;
    }
    return next;
}

// Up to n_steps steps of kit_step in one call, so that the engine's Python runs once for several
// tokens instead of between every two decodes (where llama.cpp's threads wait): the sampled
// tokens go to tokens_out, their signals (log-probability, entropy) to signals_out in pairs. It
// stops after an end-of-generation token when stop_at_eog. Returns how many tokens it sampled,
// or kit_step's negative code (out[5] says more) when a step failed.
int32_t kit_steps(struct llama_context *ctx, struct llama_sampler *chain, int32_t token, int32_t n_vocab,
                  int32_t keep, int32_t want_signals, double *out, llama_token_data *buf, int32_t n_steps,
                  int32_t stop_at_eog, int32_t *tokens_out, double *signals_out) {
    const struct llama_vocab *vocab = llama_model_get_vocab(llama_get_model(ctx));
    for (int32_t s = 0; s < n_steps; s++) {
        const int32_t next = kit_step(ctx, chain, token, n_vocab, keep, want_signals, out, buf);
        if (next < 0) return next;
        tokens_out[s] = next;
        signals_out[2 * s] = out[0];
        signals_out[2 * s + 1] = out[1];
        token = next;
        if (stop_at_eog && llama_vocab_is_eog(vocab, next)) return s + 1;
    }
    return n_steps;
}
