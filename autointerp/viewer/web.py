"""The viewer's web server: Starlette routes over `pages.Site`, read-only (GET only), with the
static files served from the package and error pages that say what exists or which command
makes what is missing."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from autointerp.errors import InputError
from autointerp.viewer.errors import NotFoundError, making_command
from autointerp.viewer.layer import LayerQuery
from autointerp.viewer.pages import CSP, Links, Site
from autointerp.viewer.tables import MissingTableError

STATIC = Path(__file__).parent / "static"
LINKS = Links()
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class SecurityHeaders:
    """Every response forbids scripts but the viewer's own, framing and MIME sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                known = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(
                        (name.lower().encode(), value.encode())
                        for name, value in HEADERS.items()
                        if name.lower().encode() not in known
                    ),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(site: Site, default_model: str | None = None) -> Starlette:
    """The viewer over `site`; `/` lists the models, or goes to `default_model` when it is the
    only one declared."""

    def index(request: Request) -> Response:
        if default_model and len(site.settings.models) == 1:
            return RedirectResponse(LINKS.model(default_model))
        return HTMLResponse(site.index(LINKS))

    def model(request: Request) -> Response:
        return HTMLResponse(site.overview(request.path_params["model"], LINKS))

    def layer(request: Request) -> Response:
        params = request.path_params
        query = LayerQuery.parse(request.query_params)
        return HTMLResponse(site.layer(params["model"], params["layer"], query, LINKS))

    def neuron(request: Request) -> Response:
        params, query = request.path_params, request.query_params
        focus = None
        if "explainer" in query and "simulator" in query:
            focus = (query["explainer"], query["simulator"])
        return HTMLResponse(
            site.neuron(params["model"], params["layer"], params["neuron"], LINKS, focus)
        )

    def search(request: Request) -> Response:
        text = request.query_params.get("q", "")
        return HTMLResponse(site.search(request.path_params["model"], text, LINKS))

    def error_page(request: Request, status: int, heading: str, message: str, command=None):
        model_name = request.path_params.get("model")
        html = site.error(
            LINKS,
            status=status,
            heading=heading,
            message=message,
            command=command,
            model=model_name,
        )
        return HTMLResponse(html, status_code=status)

    def not_found(request: Request, error: Exception) -> Response:
        return error_page(request, 404, "Not found", str(error))

    def missing_table(request: Request, error: Exception) -> Response:
        assert isinstance(error, MissingTableError)
        model_name = request.path_params.get("model", site.settings.default_model)
        command = making_command(error.table, model_name, request.path_params.get("layer"))
        return error_page(request, 404, f"No {error.table} yet", str(error), command)

    def bad_input(request: Request, error: Exception) -> Response:
        return error_page(request, 400, "Bad request", str(error))

    def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            message = (
                f"no page at {request.url.path}; pages are /m/<model>, /m/<model>/l/<layer> "
                "and /m/<model>/l/<layer>/n/<neuron>"
            )
            return error_page(request, 404, "Not found", message)
        return error_page(request, error.status_code, "Error", str(error.detail))

    routes = [
        Route("/", index),
        Route("/m/{model}", model),
        Route("/m/{model}/search", search),
        Route("/m/{model}/l/{layer:int}", layer),
        Route("/m/{model}/l/{layer:int}/n/{neuron:int}", neuron),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(GZipMiddleware, minimum_size=2048, compresslevel=1),
        ],
        exception_handlers={
            NotFoundError: not_found,
            MissingTableError: missing_table,
            InputError: bad_input,
            HTTPException: http_error,
        },
    )


def serve(site: Site, host: str, port: int, default_model: str | None = None) -> None:
    import uvicorn

    uvicorn.run(
        create_app(site, default_model),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
