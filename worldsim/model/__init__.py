"""worldsim models: tokenizer (pixels <-> latent tokens); dynamics and reasoner to come."""
