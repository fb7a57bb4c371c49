"""Evaluation protocols of the paper (§7, appendix D)."""
