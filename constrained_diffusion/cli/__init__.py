"""The ``constrained-diffusion`` command line: one module per sub-command."""
