// Validates Prometheus Operator resources against the schemas that
// @kubernetes-models/prometheus-operator compiles from the operator's API types
// (monitoring.coreos.com, the types its CRDs are generated from).
// Reads a JSON array of resources on stdin; prints one JSON line per resource:
// {"index": i, "kind": ..., "name": ..., "error": null | "message"}.
// Exits 0 when it could check every resource (whatever the verdicts), 2 otherwise.
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const resources = JSON.parse(Buffer.concat(chunks).toString("utf8"));

let unchecked = 0;
resources.forEach((resource, index) => {
  const { apiVersion, kind } = resource;
  const name = resource?.metadata?.name ?? null;
  const Model = apiVersion === "monitoring.coreos.com/v1" ? v1[kind] : undefined;
  let error = null;
  if (typeof Model !== "function" || Model.kind !== kind) {
    error = `no schema for ${apiVersion} ${kind}`;
    unchecked += 1;
  } else {
    try {
      new Model(resource).validate();
    } catch (exc) {
      error = String(exc.message ?? exc);
    }
  }
  console.log(JSON.stringify({ index, kind, name, error }));
});
process.exit(unchecked ? 2 : 0);
