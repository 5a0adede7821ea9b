"""The sample ETL project's packages."""
