"""
The XMPP edge: component connection, pubsub protocol handler, disco, and stanza <-> model.
"""
