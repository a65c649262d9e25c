"""Jinja templates of generated code (shipped inside the wheel as lossforge.templates)."""
