"""VDO gateway service."""
