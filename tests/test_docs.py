"""The docs pages as served: every asset from the service itself, and only those (the browser's view of
them is test_docs_browser.py)."""

import re

import pytest

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
