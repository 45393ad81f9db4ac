"""
Replication: the pump that publishes a backend's local changes into Hermod's own nodes, and the
subscriber side that applies partner Hermods' items to a local backend.
"""
