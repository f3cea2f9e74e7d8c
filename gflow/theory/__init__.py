"""The papers gflow reproduces, one module per paper: closed-form predictions and bounds, the
criteria of the verdict rows (pure functions of measurements, tested on wrong inputs) and the
experiments whose flows and measurements those rows read (`gflow.studies` composes them into
commands).

Formulas marked [R] in `../shared/science/` are reconstructions, and their docstrings say so.
"""
