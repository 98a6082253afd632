"""VDO model clients: one interface for the AI phases over the providers' official SDKs."""
