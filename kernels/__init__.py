"""rio_kernels: Triton ops, each with a plain-torch fp32 reference beside it."""
