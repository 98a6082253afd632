"""VDO's shared kernel: the Job domain and the mechanisms every service uses."""

__version__ = "0.1.0"
