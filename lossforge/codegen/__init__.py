"""Code generation: SymPy printers for NumPy, PyTorch and JAX, and the Jinja renderer."""
