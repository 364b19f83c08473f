"""Tidemark: change data capture from PostgreSQL and SQL Server into Delta Lake."""

from tidemark.sinks.memory import prefer_returning_pool

prefer_returning_pool()  # before pyarrow is imported: Arrow reads its pool choice once
