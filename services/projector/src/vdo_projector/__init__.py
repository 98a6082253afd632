"""VDO projector service."""
