"""Transformer workloads lowered to ISA programs (imported as ``infsim.models``)."""
