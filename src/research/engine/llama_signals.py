"""The confidence signals the llama.cpp backend reads from the model's own logits: a mixin of
research.engine.llama.LlamaBackend, kept apart so the decode loop's module stays readable.

Per decoded token, the log-probability of the token and the entropy of its distribution
(_token_signal: the free signals); while a prompt is evaluated, the log-probabilities of the
question's own tokens (_eval_watching: the question-side signals, research.engine.signals).
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Sequence


def log_sum_exp(x, work) -> float:
    """log(sum(exp(x))) of a vocabulary's logits `x`, computed stably in `work` (a float32 buffer
    of the same size; `x` is left as it is)."""
    import numpy as np

    top = float(x.max())
    np.subtract(x, top, out=work)
    np.exp(work, out=work)
    return top + math.log(float(work.sum()))


class SignalReader:
    """Reads the signals from the logits llama.cpp keeps in the context. Expects of its class:
    llm (llama_cpp.Llama), n_vocab, _logits_ith, _e and _z (vocabulary-sized float32 buffers),
    _views (a dict), trace, signal_s, question_trace, question_s."""

    def _eval_watching(self, llm, tokens: Sequence[int], keep: int, span: tuple[int, int]) -> None:
        """llm.eval(tokens[keep:]), also keeping the log-probability of each token in `span` (those
        whose predicting row is evaluated now) in question_trace.

        llama.cpp computes output rows only for the batch entries flagged for logits: here the
        last one (for the sampler) and the row before each watched token. A row costs the output
        layer's work for one token (49k x 576 multiply-adds for SmolLM2), and its log-softmax the
        same NumPy pass as a decoded token's signal. The KV cache's copy of the question is not
        reused (_generate evaluates from the row before it), so a question asked again reads the
        same signals. With several rows the last layers take another kernel path: on F16 files the
        sampler's row moved by up to 1e-3 (a greedy answer could differ at a near tie); on Q4_0,
        Q4_1 and Q8_0 it was bitwise the same.
        """
        import numpy as np

        wanted = range(max(span[0], keep + 1, 1), min(span[1], len(tokens)))
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        rest, batch, ctx = tokens[keep:], llm._batch, llm._ctx.ctx
        for i in range(0, len(rest), llm.n_batch):
            chunk = rest[i : i + llm.n_batch]
            n_past = llm.n_tokens
            batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
            rows = [j for j in range(len(chunk)) if n_past + j + 1 in wanted]
            for j in rows:  # row j predicts the token after it
                batch.batch.logits[j] = True
            llm._ctx.decode(batch)
            llm.input_ids[n_past : n_past + len(chunk)] = chunk
            llm.n_tokens += len(chunk)
            t = time.perf_counter()
            for j in rows:
                x = np.ctypeslib.as_array(self._logits_ith(ctx, j), shape=(self.n_vocab,))
                self.question_trace.append(float(x[tokens[n_past + j + 1]]) - log_sum_exp(x, self._z))
            self.question_s += time.perf_counter() - t

    def _token_signal(self, token: int) -> None:
        """Append `token`'s log-probability and the entropy of its distribution to `trace`.

        A log-softmax over the vocabulary in NumPy, on the logits llama.cpp keeps in the context
        (the sampler has read them: the next decode step overwrites them). They are shifted by
        their maximum in place, which changes no log-softmax (next_logprobs reads them after), and
        the one work buffer holds the exponentials: two vocabulary-sized arrays touched instead of
        three, and no NumPy view made anew each token (logits_view). About 0.05 ms for SmolLM2's
        49,152 tokens with warm caches, 0.1-0.2 ms between decode steps.
        """
        import numpy as np

        t = time.perf_counter()
        x = self.logits_view()
        np.subtract(x, x.max(), out=x)
        e = self._e
        np.exp(x, out=e)
        total = float(e.sum())
        lse = math.log(total)
        self.trace.append((float(x[token]) - lse, lse - float(np.dot(e, x)) / total))
        self.signal_s += time.perf_counter() - t

    def logits_view(self):
        """The last output row of logits in the context, as a NumPy array over llama.cpp's own
        memory; the view is kept per address (a decode step writes the same row every time), so
        that making it costs nothing after the first token."""
        import numpy as np

        ptr = self._logits_ith(self.llm._ctx.ctx, -1)
        address = ctypes.cast(ptr, ctypes.c_void_p).value
        view = self._views.get(address)
        if view is None:
            if len(self._views) > 8:  # buffers llama.cpp has since moved: forget them
                self._views.clear()
            view = self._views[address] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return view
