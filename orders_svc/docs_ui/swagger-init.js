// Swagger UI on this service's own OpenAPI document. A file, not an inline script: the docs pages'
// Content-Security-Policy runs scripts from the service's own origin only.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null, // no badge fetched from validator.swagger.io
  deepLinking: true,
  displayOperationId: true,
  defaultModelsExpandDepth: 0,
});
