"""quotacast engine: data contracts, I/O, simulation, tracking and the command line."""

__version__ = "0.1.0"
