"""Deployment recipes: per-hardware flag files, the launcher, a memory calculator, a smoke client.

Run from the repository root (`python -m launch.memory ...`); `launch/recipe.sh TARGET` anywhere.
"""
