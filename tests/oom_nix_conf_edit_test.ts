import assert from "node:assert/strict";
import { setNixConfSettings } from "../lib/nix_conf_edit.ts";

const S = { "max-jobs": "1", cores: "2" };

Deno.test("setNixConfSettings() replaces values in place, keeping spacing, comments and CRLF", () => {
  const text = "sandbox = false\r\n\tmax-jobs\t=  8 \t# lots\r\ncores = 4\r\n";
  const edit = setNixConfSettings(text, S);
  assert.equal(edit.text, "sandbox = false\r\n\tmax-jobs\t=  1 \t# lots\r\ncores = 2\r\n");
  assert.deepEqual(edit.changes, [
    { name: "max-jobs", value: "1", action: "replaced", line: 2, previous: "8" },
    { name: "cores", value: "2", action: "replaced", line: 3, previous: "4" },
  ]);
});

Deno.test("setNixConfSettings() replaces the last assignment, and an alias of the setting", () => {
  const edit = setNixConfSettings("max-jobs = 4\nbuild-max-jobs = 8\nbuild-cores = 0\n", S);
  assert.equal(edit.text, "max-jobs = 4\nbuild-max-jobs = 1\nbuild-cores = 2\n");
});

Deno.test("setNixConfSettings() appends after an include that could override the line", () => {
  const edit = setNixConfSettings("max-jobs = 8\n!include nix.custom.conf\n", S, {
    marker: "oom_mitigate",
  });
  assert.equal(
    edit.text,
    "max-jobs = 8\n!include nix.custom.conf\n# oom_mitigate\nmax-jobs = 1\ncores = 2\n",
  );
  assert.deepEqual(edit.changes.map((c) => [c.action, c.line]), [["appended", 4], ["appended", 5]]);
});

Deno.test("setNixConfSettings() gives an empty value room: 'max-jobs =' becomes 'max-jobs = 1'", () => {
  // Found by the nix_conf fuzz test: 'max-jobs =1' is an illegal configuration line for Nix
  // (checked with nix 2.8: "error: illegal configuration line 'max-jobs =1'").
  const edit = setNixConfSettings("max-jobs =\ncores =# none yet\n", S);
  assert.equal(edit.text, "max-jobs = 1\ncores = 2# none yet\n");
});

Deno.test("setNixConfSettings() adds the missing final newline before appending", () => {
  const edit = setNixConfSettings("substituters = https://cache.nixos.org", { cores: "2" });
  assert.equal(edit.text, "substituters = https://cache.nixos.org\ncores = 2\n");
  assert.equal(edit.changes[0]?.line, 2);
});

Deno.test("setNixConfSettings() writes an empty or missing file's content from scratch", () => {
  assert.equal(setNixConfSettings("", S, { marker: "m" }).text, "# m\nmax-jobs = 1\ncores = 2\n");
});

Deno.test("setNixConfSettings() leaves a file that already has the values byte for byte", () => {
  const text = "max-jobs = 1 # set\ncores = 2";
  const edit = setNixConfSettings(text, S);
  assert.equal(edit.text, text);
  assert.deepEqual(edit.changes.map((c) => c.action), ["unchanged", "unchanged"]);
});

Deno.test("setNixConfSettings() refuses a file Nix would reject, naming the line", () => {
  assert.throws(
    () => setNixConfSettings("sandbox = false\nmax-jobs 8\n", S, { path: "/etc/nix/nix.conf" }),
    /Cannot parse \/etc\/nix\/nix\.conf:2: syntax error in configuration line 'max-jobs 8'/,
  );
});

Deno.test("setNixConfSettings() refuses a value that would break the line", () => {
  assert.throws(
    () => setNixConfSettings("", { cores: "2\nsandbox = false" }),
    /not a plain setting/,
  );
  assert.throws(() => setNixConfSettings("", { "bad name": "1" }), /not a plain setting/);
});
