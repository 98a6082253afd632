"""VDO tester service."""
