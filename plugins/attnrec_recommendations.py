"""Airflow's plugins folder entry: the Recommendations view (code in the attnrec_ui package).

Point ``[core] plugins_folder`` (AIRFLOW__CORE__PLUGINS_FOLDER) at this folder, as make demo, the image and the
cluster tests do.
"""

from attnrec_ui.plugin import AttnrecRecommendationsPlugin

__all__ = ["AttnrecRecommendationsPlugin"]
