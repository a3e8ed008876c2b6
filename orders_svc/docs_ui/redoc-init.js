// Redoc on this service's own OpenAPI document. A file, not an inline script: the docs pages'
// Content-Security-Policy runs scripts from the service's own origin only.
Redoc.init(
  "/openapi.json",
  { expandResponses: "200,201", hideDownloadButton: false, pathInMiddlePanel: true },
  document.getElementById("redoc"),
);
