// /docs: start Swagger UI on this API's own description. A file, not an inline script: the
// site's Content-Security-Policy runs no inline script (the dashboard keeps a key in
// localStorage).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    // The key given to "Authorize" stays in this page's memory: never written to storage.
    persistAuthorization: false,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    // Swagger UI would otherwise ask validator.swagger.io for a badge: no third party here.
    validatorUrl: null,
  });
});
