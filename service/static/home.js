// The home page: add two numbers through POST /v1/predict with a trace, and show the model
// record from GET /v1/model. Only the public API, as any other client would call it.
import { drawCurve, drawSteps } from "./draw.js";
import { fromBinary, grouped, parseUint } from "./numbers.js";

const root = document.body.dataset.root || "";
const $ = (id) => document.getElementById(id);

/** A call to the API; resolves to the JSON body, or rejects with the problem's detail. */
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(root + path, { ...init, headers: { ...init.headers,
    Accept: "application/json, application/problem+json" } });
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new Error(data?.detail || data?.title || `${response.status} ${text}`);
    error.status = response.status;
    error.field = data?.field;
    throw error;
  }
  return data;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

const TRACE_MAX_BITS = 256; // POST /v1/predict refuses a trace wider than this

/** Ask for the sum with its trace; past the trace's width limit, ask for the sum alone. */
async function predict(a, b) {
  const width = (BigInt(a) + BigInt(b)).toString(2).length;
  if (width > TRACE_MAX_BITS) {
    const plain = await api("/v1/predict", { a, b });
    return { ...plain, traceRefused: `no trace: it is available up to ${TRACE_MAX_BITS} bits` };
  }
  try {
    return await api("/v1/predict", { a, b, trace: true });
  } catch (error) {
    if (error.status === 400 && error.field === "trace") {
      const plain = await api("/v1/predict", { a, b });
      return { ...plain, traceRefused: error.message };
    }
    throw error;
  }
}

async function add(event) {
  event?.preventDefault();
  const a = parseUint($("a").value);
  const b = parseUint($("b").value);
  const button = $("add");
  if (a === null || b === null) {
    showError($("error"), `${a === null ? "a" : "b"} must be a non-negative whole number.`);
    return;
  }
  button.disabled = true;
  try {
    const result = await predict(a, b);
    showError($("error"), "");
    render(a, b, result);
  } catch (error) {
    $("result").hidden = true;
    showError($("error"), error.message);
  } finally {
    button.disabled = false;
  }
}

function render(a, b, result) {
  // The JSON numbers may be wider than a double: read the sum from its exact binary text.
  const predicted = fromBinary(result.binary);
  const truth = BigInt(a) + BigInt(b);
  $("expression").textContent = `${grouped(a)} + ${grouped(b)}`;
  $("sum").textContent = grouped(predicted);
  $("sum").dataset.value = predicted.toString();
  const verdict = $("verdict");
  verdict.textContent = predicted === truth ? "correct" : `wrong: the true sum is ${grouped(truth)}`;
  verdict.className = predicted === truth ? "good" : "bad";
  const steps = result.trace || [];
  const wrongSteps = steps.filter((s) => s.bit !== s.target).length;
  $("result-meta").textContent = [
    `${result.bits} bits`,
    `binary ${result.binary}`,
    `model ${result.model_version}`,
    result.trace ? `${wrongSteps} wrong bit${wrongSteps === 1 ? "" : "s"}` : result.traceRefused,
  ].filter(Boolean).join(" · ");
  drawSteps($("steps"), $("step-labels"), steps);
  $("step-view").hidden = !result.trace;
  $("result").hidden = false;
}

/** A definition list row, with text only (nothing from the server is read as HTML). */
function fact(list, term, value) {
  if (value === undefined || value === null || value === "") return;
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = String(value);
  list.append(dt, dd);
}

function table(element, head, rows) {
  element.replaceChildren();
  const header = element.createTHead().insertRow();
  for (const title of head) {
    const th = document.createElement("th");
    th.textContent = title;
    header.append(th);
  }
  const body = element.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) tr.insertCell().textContent = String(value);
  }
}

/** The gate as /v1/model reports it: a summary, checks when recorded, or none at all. */
function renderGate(box, gate) {
  box.replaceChildren();
  const line = document.createElement("p");
  if (!gate || typeof gate !== "object") {
    line.textContent = "No gate recorded for this version.";
    box.append(line);
    return;
  }
  const passed = gate.passed === true;
  const status = gate.status || (passed ? "passed" : "failed");
  line.className = passed ? "good" : "bad";
  line.textContent = [
    status,
    gate.max_bits ? `checked up to ${gate.max_bits} bits` : null,
    gate.failed ? `failed: ${typeof gate.failed === "string" ? gate.failed : JSON.stringify(gate.failed)}` : null,
  ].filter(Boolean).join(" · ");
  box.append(line);
  if (Array.isArray(gate.checks) && gate.checks.length) {
    const checks = document.createElement("table");
    table(checks, ["check", "pairs", "errors", "passed"], gate.checks.map((c) => [
      c.name ?? "", c.pairs ?? "", c.errors ?? "", c.passed ? "yes" : "no"]));
    box.append(checks);
  }
}

/** The certificate as this worker verified it: proved exact at every width, or why not. */
function renderCertificate(box, certificate) {
  box.replaceChildren();
  const line = document.createElement("p");
  const certified = Boolean(certificate && certificate.certified === true);
  line.className = certified ? "good" : "bad";
  if (certified) {
    line.textContent = [
      "certified: exact at every width",
      certificate.method,
      certificate.classes && `${certificate.classes} classes`,
      certificate.seconds != null && `found in ${certificate.seconds} s`,
      certificate.check_seconds != null && `re-checked in ${certificate.check_seconds} s`,
    ].filter(Boolean).join(" · ");
  } else {
    line.textContent = `not certified${certificate && certificate.problem ? `: ${certificate.problem}` : ""}`;
  }
  box.append(line);
}

async function loadModel() {
  try {
    const model = await api("/v1/model");
    const facts = $("model-facts");
    const hp = model.hyperparameters || {};
    facts.replaceChildren();
    fact(facts, "version", model.version);
    fact(facts, "created", model.created_at);
    fact(facts, "hidden units", hp.hidden_size);
    fact(facts, "optimizer", hp.optimizer && `${hp.optimizer}, learning rate ${hp.learning_rate}`);
    fact(facts, "trained on", hp.bits && `${hp.bits}-bit pairs, batches of ${hp.batch_size}`);
    fact(facts, "steps", model.steps);
    fact(facts, "seed", model.seed);
    fact(facts, "training time", model.training_seconds && `${model.training_seconds} s`);
    if (model.degraded) fact(facts, "serving", "degraded: the last version that passed");
    renderCertificate($("certificate"), model.certificate);
    renderGate($("gate"), model.gate);
    drawCurve($("curve"), model.history);
    const metrics = Object.entries(model.metrics || {});
    table($("metrics"), ["measure", "value"], metrics.map(([name, value]) => [
      name.replace(/^accuracy_(\d+)bit$/, "$1-bit pairs").replace(/_/g, " "),
      name.startsWith("accuracy") ? `${(100 * value).toFixed(2)}%` : Number(value).toPrecision(3),
    ]));
    showError($("model-error"), "");
  } catch (error) {
    showError($("model-error"), `Could not read the active model: ${error.message}`);
  }
}

$("add-form").addEventListener("submit", add);
loadModel();
add();
