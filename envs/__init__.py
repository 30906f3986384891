"""worldsim.envs (to come; see DESIGN.md)."""
