"""Reproduction tooling for the papers' tables; not part of the installed ``lt_jax`` package.

Run from the repository root: ``python -m experiments.reproduce --list``.
"""
