"""The Airflow layer: DAG files (thin TaskFlow wiring) and :mod:`dags.wiring`, what they share.

A package so that the DAG files import ``dags.wiring`` by its full name. The top of the layering: no other package
imports it (pyproject.toml, [tool.importlinter]).
"""
