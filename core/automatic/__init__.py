"""Automatic mask generation (paper §4, appendix B): grids, candidates, filters, NMS."""
