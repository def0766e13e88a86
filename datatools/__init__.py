"""Data tools: the synthetic behaviour-log generator and the MovieLens-100K landing, both writing the raw contract.

Not a pipeline stage: they make input for the pipeline, its tests, demos and benchmarks (``attnrec generate``,
``attnrec movielens``). Named ``datatools``, not ``tools``: cron-descriptor (an Airflow dependency) installs a
``tools`` directory into site-packages, which would shadow a ``tools`` package of an editable install.
"""
