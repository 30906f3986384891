"""Training loops (tokenizer now; dynamics and reasoner to follow) on a shared harness."""
