"""Deployment recipes: per-hardware flag files (read by rio_sglang/targets.py), recipe.sh, a memory
calculator, a smoke client.

`rio-sglang serve --target T` and `rio-sglang memory` from anywhere; `python -m launch.memory`
from the repository root; `launch/recipe.sh TARGET` anywhere.
"""
