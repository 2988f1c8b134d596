"""Measurements: speed over thread counts (bench), the chat path beside llama-bench (compare,
chat_timing), what the free confidence signals cost (signals), the page at rest and in a real
browser (page, page_speed), memory measured in a fresh process (memory), perplexity and KL
divergence (quality), and the page rehearsed on ARM (arm, arm_userland, arm_record).

May import: everything below it, up to research.page.
"""
