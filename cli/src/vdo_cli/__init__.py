"""VDO command line."""
