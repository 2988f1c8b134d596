"""Measurements: speed over thread counts (bench), the chat path beside llama-bench (compare,
chat_timing), the page at rest and in a real browser (page, page_speed), memory measured in a fresh
process (memory), perplexity and KL divergence (quality), and the page rehearsed on ARM (arm).

May import: everything below it, up to research.page.
"""
