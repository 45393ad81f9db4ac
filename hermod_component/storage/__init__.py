"""
Storage back ends behind IStorage: memory, SQLite (the embedded default) and PostgreSQL.
"""
