"""The "Recommendations" view inside the Airflow UI: an Airflow 3 plugin (a FastAPI app the api-server mounts at
``/attnrec`` and an external view in the UI's navigation) that shows, for a day and a user, the history the model
saw, the list it served and the day's versions, gates, reconciliation and KPIs.

It reads only published lake partitions (``_SUCCESS`` present; never ``_staging``) and the MLflow registry, and
every route checks the caller's Airflow token with Airflow's own auth manager.
"""
