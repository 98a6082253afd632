"""VDO sandbox service."""
