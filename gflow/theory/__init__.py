"""Closed-form predictions and bounds from the papers gflow reproduces, one module per paper.

Formulas marked [R] in `../shared/science/` are reconstructions, and their docstrings say so.
"""
