"""worldsim.kernels (to come; see DESIGN.md)."""
