// Runs a module-style bun flow step: imports the step's module, calls its default export with
// the step context (read as JSON from stdin), and prints the returned FlowResult as the step's
// FLOW_RESULT line. Any failure becomes a `failed` result with its message (the stack goes to
// stderr) and exit code 0, as codex-flows' own module runner reports it.
import path from "node:path";
import { pathToFileURL } from "node:url";

function report(result) {
  process.stdout.write(`FLOW_RESULT ${JSON.stringify(result)}\n`);
}

function isResult(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    && typeof value.status === "string";
}

async function main() {
  const script = process.argv[2];
  if (!script) {
    throw new Error("Bun module runner requires a script path");
  }
  const context = JSON.parse(await Bun.stdin.text());
  const url = pathToFileURL(path.resolve(script));
  // A fresh module instance per run, even if a runner process were ever reused.
  url.searchParams.set("flowRun", String(context?.runtime?.runId ?? Date.now()));
  const module = await import(url.href);
  if (typeof module.default !== "function") {
    throw new Error("Bun module flow step must export a default handler function");
  }
  const result = await module.default(context);
  if (!isResult(result)) {
    throw new Error("Bun module flow step must return a FlowResult object");
  }
  report(result);
}

try {
  await main();
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`${(error instanceof Error && error.stack) || message}\n`);
  report({ status: "failed", message });
}
