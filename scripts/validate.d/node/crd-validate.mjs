// Validates the External Secrets Operator and Argo CD objects queued by
// `deploycheck.py schemas` against the kubernetes-models schemas of those CRDs
// (types, enums, required fields). Prints one line per object and a RESULT line.
import { readFileSync } from "node:fs";
import * as eso from "@kubernetes-models/external-secrets/external-secrets.io/v1";
import * as argo from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1";

const models = {
  "external-secrets.io/v1": eso,
  "argoproj.io/v1alpha1": argo,
};

const queue = JSON.parse(readFileSync(process.argv[2], "utf8"));
let passed = 0;
let failed = 0;
for (const { label, object } of queue) {
  const group = models[object.apiVersion];
  const Model = group && group[object.kind];
  if (!Model) {
    failed += 1;
    console.log(`FAIL ${label}: no model for ${object.apiVersion} ${object.kind}`);
    continue;
  }
  try {
    new Model(object).validate();
    passed += 1;
    console.log(`ok   ${label}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL ${label}: ${err.message}`);
  }
}
console.log(`RESULT passed=${passed} failed=${failed} skipped=0`);
process.exit(failed ? 1 : 0);
