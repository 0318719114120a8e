"""Tools around a trained checkpoint that belong to this project's teaching purpose, not to the template a
user copies: the NumPy reference and its crosscheck, the visual report, and export to other formats."""
