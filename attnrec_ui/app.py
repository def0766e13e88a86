"""The FastAPI app the api-server mounts at ``/attnrec``: the Recommendations page and its JSON API.

Airflow does not protect a plugin's FastAPI app by itself, so every route here except the nav icon depends on
Airflow's own check (:func:`airflow.api_fastapi.core_api.security.requires_access_dag`): the caller's JWT, from the
``Authorization: Bearer`` header or the UI's session cookie, is validated by the configured auth manager, and the
user must be allowed to read the ``nightly_candidates`` DAG, whose output this is. Without a token the API answers
401 as ``/api/v2`` does; a browser asking for the page is sent to Airflow's login and back.

    GET recommendations?dt=D&user=U&q=PREFIX&offset=N    the page (HTML)
    GET recommendations/random?dt=D                       a random user of the day (redirect to their page)
    GET api/days                                          days with published candidates, newest first
    GET api/days/{dt}                                     versions, gates, reconciliation, KPIs of the day
    GET api/days/{dt}/users?prefix=P                      users served on D whose id starts with P
    GET api/days/{dt}/random-user                         one user served on D
    GET api/days/{dt}/users/{user_id}?offset=&limit=      the user's history and served list
    GET data-docs/{page}                                  a Data Docs page of the lake
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnrec.settings import Settings, get_settings
from attnrec_ui import lakeview, page, registry

log = logging.getLogger(__name__)

#: The DAG whose output the view shows: who may read it may read this.
GUARD_DAG = "nightly_candidates"
#: Where the api-server mounts the app, and the view's route in the Airflow UI (/plugin/<route>).
URL_PREFIX = "/attnrec"
UI_ROUTE = "recommendations"
HISTORY_PAGE = 50
STATIC = Path(__file__).resolve().parent / "static"


def _guard():
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET", param_dag_id=GUARD_DAG))


def warm_up() -> None:
    """What the first page would pay for otherwise (seconds): importing MLflow, opening its registry, reading the
    newest day's user list. Errors are left for the pages to report."""
    try:
        settings = get_settings()
        registry.versions(settings, {})
        newest = lakeview.days(settings.data_root)
        if newest:
            lakeview.users(settings.data_root, newest[0])
    except Exception:  # noqa: BLE001 - a page shows the same problem with its message
        log.warning("attnrec_ui warm-up failed; the pages will report it", exc_info=True)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    threading.Thread(target=warm_up, name="attnrec-ui-warm-up", daemon=True).start()
    yield


def _day(value: str) -> str:
    try:
        return lakeview.parse_day(value)
    except ValueError as err:
        raise HTTPException(400, str(err)) from None


def _found(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except lakeview.NotFound as err:
        raise HTTPException(404, str(err)) from None


def day_summary(settings: Settings, dt: str) -> dict[str, Any]:
    root = settings.data_root
    plan = _found(lakeview.manifest, root, dt)
    return {
        "dt": dt,
        "plan": plan,
        "mlflow": registry.versions(settings, plan.get("model_versions") or {}),
        "gates": lakeview.data_docs_pages(settings, dt),
        "reconciliation": lakeview.reconciliation(root, dt),
        "kpis": lakeview.kpis(root, dt),
    }


def user_page(settings: Settings, dt: str, user_id: str, offset: int, limit: int) -> dict[str, Any]:
    root = settings.data_root
    served = _found(lakeview.served, settings, dt, user_id)
    return {
        "dt": dt,
        "user": {"user_id": user_id, "pseudonym": _found(lakeview.pseudonym, root, user_id)},
        "served": served,
        "history": _found(lakeview.history, root, dt, user_id, offset, limit),
    }


def _login_redirect(request: Request) -> RedirectResponse:
    """Airflow's own login (``/api/v2/auth/login``), back to this page inside the Airflow UI afterwards."""
    root = request.scope.get("root_path", "").removesuffix(URL_PREFIX)
    inside = f"{root}/plugin/{UI_ROUTE}{URL_PREFIX}/{UI_ROUTE}"
    if request.url.query:
        inside += f"?{request.url.query}"
    return RedirectResponse(f"{root}/api/v2/auth/login?{urlencode({'next': inside})}", status_code=302)


def create_app() -> FastAPI:
    app = FastAPI(
        title="attnrec recommendations",
        description="The Recommendations view of attnrec inside the Airflow UI (see attnrec_ui).",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    guard = [_guard()]

    @app.exception_handler(StarletteHTTPException)
    async def _errors(request: Request, exc: StarletteHTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_html:
            return _login_redirect(request)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/static/icon.svg", include_in_schema=False)
    def icon() -> FileResponse:  # the nav icon only: no data, so no token needed
        return FileResponse(STATIC / "icon.svg", media_type="image/svg+xml")

    @app.get("/api/days", dependencies=guard)
    def list_days() -> dict[str, Any]:
        return {"days": lakeview.days(get_settings().data_root)}

    @app.get("/api/days/{dt}", dependencies=guard)
    def one_day(dt: str) -> dict[str, Any]:
        return day_summary(get_settings(), _day(dt))

    @app.get("/api/days/{dt}/users", dependencies=guard)
    def search(dt: str, prefix: str = "", limit: int = Query(lakeview.SEARCH_LIMIT, ge=1, le=200)) -> dict[str, Any]:
        day = _day(dt)
        return {
            "dt": day,
            "prefix": prefix,
            "users": _found(lakeview.search_users, get_settings().data_root, day, prefix, limit),
        }

    @app.get("/api/days/{dt}/random-user", dependencies=guard)
    def random_user(dt: str) -> dict[str, Any]:
        day = _day(dt)
        return {"dt": day, "user_id": secrets.choice(_found(lakeview.users, get_settings().data_root, day))}

    @app.get("/api/days/{dt}/users/{user_id}", dependencies=guard)
    def one_user(
        dt: str, user_id: str, offset: int = Query(0, ge=0), limit: int = Query(HISTORY_PAGE, ge=1, le=1000)
    ) -> dict[str, Any]:
        return user_page(get_settings(), _day(dt), user_id, offset, limit)

    @app.get("/data-docs/{name:path}", dependencies=guard)
    def data_docs(name: str) -> FileResponse:
        return FileResponse(_found(lakeview.data_docs_file, get_settings(), name))

    @app.get("/recommendations/random", dependencies=guard)
    def random_page(dt: str = "") -> RedirectResponse:
        settings = get_settings()
        day = _day(dt) if dt else next(iter(lakeview.days(settings.data_root)), None)
        if day is None:
            raise HTTPException(404, "no published candidates yet: run nightly_candidates for a day first")
        user_id = secrets.choice(_found(lakeview.users, settings.data_root, day))
        return RedirectResponse(f"../recommendations?{urlencode({'dt': day, 'user': user_id})}", status_code=303)

    @app.get("/recommendations", response_class=HTMLResponse, dependencies=guard)
    def view(dt: str = "", user: str = "", q: str = "", offset: int = Query(0, ge=0)) -> HTMLResponse:
        started = time.perf_counter()
        settings = get_settings()
        context: dict[str, Any] = {"dt": dt, "user": user.strip(), "q": q, "offset": offset, "quote": quote}
        context["days"] = lakeview.days(settings.data_root)
        status = 200
        try:
            day = _day(dt) if dt else (context["days"][0] if context["days"] else None)
            if day is None:
                raise HTTPException(404, "no published candidates yet: run nightly_candidates for a day first")
            context["dt"] = day
            context["summary"] = day_summary(settings, day)
            if q and not context["user"]:
                matches = _found(lakeview.search_users, settings.data_root, day, q.strip())
                if q.strip() in matches or len(matches) == 1:  # an exact id, or the only one with the prefix
                    context["user"] = q.strip() if q.strip() in matches else matches[0]
                context["matches"] = matches
            if context["user"]:
                context["page"] = user_page(settings, day, context["user"], offset, HISTORY_PAGE)
        except HTTPException as err:
            status, context["error"] = err.status_code, err.detail
        context["elapsed_ms"] = round((time.perf_counter() - started) * 1000)
        return HTMLResponse(page.render(context), status_code=status)

    return app
