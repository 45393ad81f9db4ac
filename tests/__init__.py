"""
Hermod test suite.
"""
