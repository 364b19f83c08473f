"""Kafka on one machine: the Tansu broker from PyPI, and producing records as Connect does."""
