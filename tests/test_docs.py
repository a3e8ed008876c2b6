"""The docs pages as served: every asset from the service itself, and only those (the browser's view of
them is test_docs_browser.py)."""

import re

import httpx
import pytest

from orders_svc.api.operations import DOCS_ASSETS, DOCS_DIR

from helpers import tenant_headers
from support import assert_error

PAGES = pytest.mark.parametrize("page", ["/docs", "/redoc"])


def assets_of(html: str) -> list[str]:
    return [a for a in re.findall(r'(?:src|href)="([^"]+)"', html) if not a.startswith("data:")]


@PAGES
async def test_a_docs_page_is_served_with_every_asset_from_the_service_itself(client, page):
    response = await client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", response.text, re.I) and "//cdn" not in response.text
    assets = assets_of(response.text)
    assert len([a for a in assets if a.endswith(".js")]) == 2  # the UI's bundle and what starts it
    for asset in assets:
        assert asset.startswith("/docs/static/") and not asset.startswith("//"), asset
        served = await client.get(asset)
        assert served.status_code == 200 and len(served.content) > 100, asset
        kind = "javascript" if asset.endswith(".js") else "css"
        assert kind in served.headers["content-type"], (asset, served.headers["content-type"])


@PAGES
async def test_a_docs_page_reads_this_services_own_document(client, page):
    [init] = [a for a in assets_of((await client.get(page)).text) if a.endswith("-init.js")]
    script = (await client.get(init)).text
    assert re.findall(r'"(/[^"]*)"', script) == ["/openapi.json"]
    assert not re.search(r"https?://", script)


async def test_swagger_ui_turns_off_its_external_validator_badge(client):
    # Swagger UI otherwise loads https://validator.swagger.io/validator?url=<our spec URL> into the page.
    script = (await client.get("/docs/static/swagger-init.js")).text
    assert re.search(r"validatorUrl:\s*null", script), script


@pytest.mark.parametrize(
    "path",
    [
        "index.html",  # the stock page, whose initializer loads petstore.swagger.io
        "swagger-initializer.js",
        "oauth2-redirect.html",
        "swagger-ui-bundle.js.map",
        "swagger-ui.css.map",
        "redoc.standalone.js.map",
        "README.md",
        "swagger-ui/LICENSE",
        "swagger-ui/swagger-ui.css",  # a served file, but only by its name
        "redoc/redoc.standalone.js",
        "../app.py",
        "..%2Fapp.py",
        "%2e%2e/operations.py",
        "",
    ],
)
async def test_docs_static_serves_only_the_files_the_pages_load(client, path):
    assert_error(await client.get(f"/docs/static/{path}"), 404, "not_found")


async def test_every_file_of_the_docs_folder_but_the_pages_assets_is_a_404(client):
    served = {f"/docs/static/{name}" for name in DOCS_ASSETS}
    for file in DOCS_DIR.rglob("*"):
        if file.is_file():
            relative = file.relative_to(DOCS_DIR).as_posix()
            for url in {f"/docs/static/{relative}", f"/docs/static/{file.name}"} - served:
                assert_error(await client.get(url), 404, "not_found")
    for url in served:
        assert (await client.get(url)).status_code == 200, url


@PAGES
async def test_a_docs_page_has_a_policy_that_runs_only_the_services_own_scripts(client, page):
    policy = (await client.get(page)).headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"] and directives["base-uri"] == ["'none'"]
    assert directives["connect-src"] == ["'self'"]  # the document and "Try it out", this service only
    sources = [s for values in directives.values() for s in values]
    assert not [s for s in sources if "://" in s or s in ("*", "'unsafe-eval'", "http:", "https:")]


async def test_every_response_tells_browsers_not_to_sniff_its_type(client, tenant):
    headers = tenant_headers(tenant)
    responses = [
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.get("/docs"),
        await client.get("/docs/static/swagger-ui.css"),
        await client.get("/docs/static/nope.js"),
        await client.get("/orders", headers=headers),
        await client.get("/orders"),  # no tenant: 401
        await client.delete("/orders", headers=headers),  # 405
        await client.post("/orders", headers=headers, content=b"{"),  # 400 before anything else
        await client.get("/nope"),
    ]
    assert {r.status_code for r in responses} >= {200, 400, 401, 404, 405}
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url


def test_the_live_server_sends_nosniff_on_its_own_routes(live_server):
    for path in ("/healthz", "/redoc", "/docs/static/redoc-init.js", "/nope"):
        assert httpx.get(f"{live_server}{path}").headers["x-content-type-options"] == "nosniff", path
