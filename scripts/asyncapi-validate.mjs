// Parses and validates an AsyncAPI document with the reference parser (@asyncapi/parser),
// resolving the JSON Schema files it references. Usage: node asyncapi-validate.mjs FILE
// Exits non-zero on any error-severity diagnostic; prints channels and messages on success.
import { Parser, fromFile } from '@asyncapi/parser';
import path from 'node:path';

const file = path.resolve(process.argv[2] ?? 'schemas/asyncapi.yaml');
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse({
  source: file,
  validateOptions: { allowedSeverity: { warning: true, info: true, hint: true } },
});
let errors = 0;
for (const d of diagnostics) {
  // Severity 0 is an error in the Spectral diagnostics the parser returns.
  const level = ['error', 'warning', 'info', 'hint'][d.severity] ?? String(d.severity);
  if (d.severity === 0) errors++;
  console.log(`${level}: ${d.code}: ${d.message} at ${d.path.join('.')}`);
}
if (!document || errors > 0) {
  console.error(`${file}: invalid (${errors} errors)`);
  process.exit(1);
}
const channels = document.channels().all().map((c) => c.address());
const messages = document.allMessages().all().map((m) => m.id());
console.log(`${file}: valid AsyncAPI ${document.version()}; channels: ${channels.join(', ')}; messages: ${messages.join(', ')}`);
