"""Analyses of a derivation: hazards (check), stable rewrites (stabilize), properties."""
