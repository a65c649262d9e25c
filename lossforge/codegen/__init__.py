"""Code generation: SymPy printers for NumPy and PyTorch, and the Jinja renderer."""
