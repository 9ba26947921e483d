// Swagger UI over this server's /openapi.json. The document's "servers" name a default address;
// "Try it out" should call the server that served this page, so it is listed first.
"use strict";

async function start() {
  const body = document.body;
  const response = await fetch(body.dataset.spec, { headers: { Accept: "application/json" } });
  const spec = await response.json();
  const here = window.location.origin + (body.dataset.root || "");
  const others = (spec.servers || []).filter((server) => server.url !== here);
  spec.servers = [{ url: here, description: "this server" }, ...others];
  // Swagger UI renders only the default schema dialect and warns about any other at the top.
  delete spec.jsonSchemaDialect;
  window.ui = window.SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default would send the document to an outside validator
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    defaultModelsExpandDepth: 0,
  });
}

start().catch((error) => {
  const box = document.createElement("p");
  box.className = "error";
  box.setAttribute("role", "alert");
  box.textContent = `Could not load the API description: ${error}`;
  document.getElementById("swagger-ui").append(box);
});
