"""VDO reviewer service."""
