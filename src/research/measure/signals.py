"""What the free confidence signals cost: the same greedy answers decoded with and without them."""

from __future__ import annotations

from collections.abc import Sequence


def signal_cost(model, config, questions: Sequence[str], max_tokens: int = 64, rounds: int = 2) -> dict:
    """What the free signals cost: the same greedy answers decoded with them on and off, side by
    side in one process (alternating which goes first), so both see the same machine load.

    Each answer is `max_tokens` tokens long (the end-of-answer token ignored) after a reset cache.
    Returns the decode seconds and tokens of each, the overhead (on / off - 1), the seconds the
    signals' own timer counted, and what the question-side signals add to prompt evaluation (the
    rows of logits llama.cpp computes for the question's tokens, and their log-softmax): in
    milliseconds a question ("question_ms") and as a share of a whole answer's time without any
    signal ("question_share").
    """
    from dataclasses import replace

    from research.engine import Engine, Sampling, conversation

    engines = {k: Engine.load(model, replace(config, token_signals=k == "on")) for k in ("on", "off")}
    sampling = Sampling(temperature=0, max_tokens=max_tokens, ignore_eos=True, seed=0)
    spent = {
        k: {"decode_s": 0.0, "tokens": 0, "signal_s": 0.0, "prompt_s": 0.0, "answer_s": 0.0} for k in engines
    }
    for r in range(rounds):
        for i, q in enumerate(questions):
            for k in ("on", "off") if (r + i) % 2 == 0 else ("off", "on"):
                engines[k].reset()
                _, s = engines[k].answer(conversation(q), sampling)
                spent[k]["decode_s"] += s.total_s - s.ttft_s
                spent[k]["tokens"] += s.completion_tokens
                spent[k]["signal_s"] += s.signal_s
                spent[k]["prompt_s"] += s.prompt_eval_s  # the question-side signals' rows are read here
                spent[k]["answer_s"] += s.total_s
    for e in engines.values():
        e.close()
    on, off = spent["on"], spent["off"]
    overhead = (on["decode_s"] / on["tokens"]) / (off["decode_s"] / off["tokens"]) - 1
    question = (on["prompt_s"] - off["prompt_s"]) / off["answer_s"]
    return {
        "on": on,
        "off": off,
        "overhead": overhead,
        "timer_share": on["signal_s"] / on["decode_s"],
        "question_share": question,
        "question_ms": (on["prompt_s"] - off["prompt_s"]) * 1e3 / (rounds * len(questions)),
    }
