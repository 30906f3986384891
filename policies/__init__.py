"""worldsim.policies (to come; see DESIGN.md)."""
