"""The Airflow plugin: the api-server mounts :func:`attnrec_ui.app.create_app` at ``/attnrec`` and the UI lists the
page as an external view in its navigation ("Recommendations", shown in an iframe at ``/plugin/recommendations``).

Airflow loads it from ``[core] plugins_folder`` (``plugins/attnrec_recommendations.py`` imports this class). Every
Airflow process loads plugins, so the FastAPI app is built only when the api-server asks for ``fastapi_apps``.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from attnrec_ui.app import UI_ROUTE, URL_PREFIX


def _base_path() -> str:
    """The path of ``[api] base_url`` (empty at the root), so links work behind a reverse proxy's prefix."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class AttnrecRecommendationsPlugin(AirflowPlugin):
    name = "attnrec_recommendations"

    @functools.cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from attnrec_ui.app import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "attnrec recommendations"}]

    @functools.cached_property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        base = _base_path()
        return [
            {
                "name": "Recommendations",
                "href": f"{base}{URL_PREFIX}/{UI_ROUTE}",
                "url_route": UI_ROUTE,
                "destination": "nav",
                "nav_top_level": True,
                "icon": f"{base}{URL_PREFIX}/static/icon.svg",
            }
        ]
