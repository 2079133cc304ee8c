"""One comparison of every method on the same behaviour: the standard LoRA baseline, near-miss
prompts, capability cost, answer quality, an optional LLM judge and the table (``table.py``)."""
