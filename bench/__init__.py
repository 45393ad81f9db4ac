"""
The firehose benchmark: C{python bench/firehose.py}. See C{bench/README.rst}.
"""
