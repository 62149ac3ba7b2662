"""Builders shared by several test modules: small stores, event tables, the dashboard's test
database and AppTest helpers. A builder used by one test module lives in that module."""
