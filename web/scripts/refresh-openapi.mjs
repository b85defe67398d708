// Refresh web/openapi.json from the Python app (../.venv by default, or $PYTHON).
import { execFileSync } from "node:child_process";
import { writeFileSync, existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "..");
const venvPython = resolve(web, "../.venv/bin/python");
const python = process.env.PYTHON || (existsSync(venvPython) ? venvPython : "python3");
const out = execFileSync(python, [resolve(here, "dump_openapi.py")], {
  cwd: web,
  encoding: "utf8",
  maxBuffer: 64 << 20,
});
JSON.parse(out); // fail loudly on anything that is not JSON
writeFileSync(resolve(web, "openapi.json"), out);
console.log(`openapi.json refreshed with ${python}`);
