"""vibench: benchmarking and tracking variational-inference experiments."""

__version__ = "0.1.0"
