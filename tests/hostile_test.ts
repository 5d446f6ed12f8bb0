/**
 * The hostile-input corpus (`tests/hostile/`, one bad input per file: truncated files, binary
 * garbage, NUL bytes, CRLF, non-UTF-8, include and `@file` cycles, wrong types in JSON, ...) and the
 * big cases generated here (1 MB lines, 100,000-line files, include chains 100 deep or fanning out,
 * a FIFO and a device where a file should be). Every input gives a value or its parser's typed
 * error naming the input and the line, within a time budget; cycles are detected; the scripts turn
 * each into an exit code and at most one line on stderr, never a stack trace.
 *
 * The corpus counts are printed at the end (`hostile corpus: N files, M generated, K script runs`)
 * and are the numbers in the README's "Hostile input and faults" table.
 */

import assert from "node:assert/strict";
import { loadNixConf, type NixConfLoad, parseNixConf } from "../lib/nix_conf.ts";
import { parseMachines, resolveBuilders } from "../lib/machines.ts";
import { parseConfigShowJson, parseConfigShowText } from "../lib/nix_config.ts";
import {
  parseBinfmtD,
  parseBinfmtEntry,
  parseBinfmtSupport,
  parseRegisterLine,
} from "../lib/binfmt_entry.ts";
import { parseOomLog } from "../lib/kernel_log.ts";
import { parseMeminfo } from "../lib/meminfo.ts";
import { parsePressure } from "../lib/psi.ts";
import { parseStorePath, StorePathError } from "../lib/store_path.ts";
import { parseBuildOutput } from "../lib/build_output.ts";
import { parseInternalJsonLine } from "../lib/internal_json.ts";
import { loadSnapshot } from "../lib/snapshot_target.ts";
import { parseSshHost } from "../lib/host.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { ParseError, UsageError } from "../lib/errors.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CORPUS = `${ROOT}tests/hostile`;
/** Time one corpus input may take (generous: a loaded 2-core VM). */
const CASE_MS = 2_000;
/** Time one generated big input (1 MB, 100,000 lines) may take. */
const BIG_MS = 10_000;

const tally = { files: new Set<string>(), generated: 0, scriptRuns: 0 };
/** The file the corpus' shell and option payloads would create (`touch /tmp/nbr-hostile-canary`). */
const CANARY = "/tmp/nbr-hostile-canary";

/** Every file under `dir` (relative to the corpus), sorted. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of Deno.readDirSync(`${CORPUS}/${rel}`)) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else out.push(path);
    }
  };
  walk(dir);
  return out.sort();
}

/** The files directly in `dir` (not in its sub-directories). */
function topFiles(dir: string): string[] {
  return filesUnder(dir).filter((p) => p.split("/").length === 2);
}

function read(rel: string): string {
  tally.files.add(rel);
  return Deno.readTextFileSync(`${CORPUS}/${rel}`);
}

function lines(text: string): number {
  return text.split("\n").length;
}

/** Runs `fn`, fails if it took longer than `budget` ms; returns its value. */
async function timed<T>(what: string, fn: () => T | Promise<T>, budget = CASE_MS): Promise<T> {
  const started = performance.now();
  const value = await fn();
  const ms = performance.now() - started;
  assert.ok(ms < budget, `${what} took ${Math.round(ms)} ms (budget ${budget} ms)`);
  return value;
}

/**
 * `fn` either returns or throws `type` (default ParseError) naming `input`, with a line within
 * 1..`maxLine` when given. Returns the value or the error.
 */
async function valueOrError<T>(
  what: string,
  fn: () => T | Promise<T>,
  expect: {
    input?: string;
    maxLine?: number;
    // deno-lint-ignore no-explicit-any
    type?: abstract new (...args: any[]) => Error;
    budget?: number;
  } = {},
): Promise<{ value?: T; error?: Error }> {
  try {
    return { value: await timed(what, fn, expect.budget) };
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    const type = expect.type ?? ParseError;
    assert.ok(error instanceof type, `${what}: expected ${type.name}, got ${error}`);
    assert.ok(!error.message.includes("\n"), `${what}: a one-line message: ${error.message}`);
    if (error instanceof ParseError) {
      if (expect.input !== undefined) assert.equal(error.input, expect.input, what);
      if (expect.maxLine !== undefined) {
        const line = error.position?.line;
        assert.ok(
          line !== undefined && line >= 1 && line <= expect.maxLine,
          `${what}: a line within 1..${expect.maxLine}: ${error.message}`,
        );
      }
    }
    return { error };
  }
}

// ------------------------------------------------------------------------------------ nix.conf

/** Loads a corpus nix.conf as the only nix.conf (the user file), includes relative to it. */
function loadConf(path: string): Promise<NixConfLoad> {
  // A FIFO nobody writes to is waited for until the target's time-out: keep it short here.
  return loadNixConf(new LocalTarget({ timeoutMs: 500 }), {
    env: { NIX_CONF_DIR: "/nonexistent-nbr-hostile", NIX_USER_CONF_FILES: path },
    version: "2.8.0",
  });
}

function checkConfError(conf: NixConfLoad, what: string): void {
  if (!conf.error) return;
  const text = Deno.readTextFileSync(conf.error.file);
  assert.ok(
    conf.error.line >= 1 && conf.error.line <= lines(text),
    `${what}: line ${conf.error.line} is in ${conf.error.file}`,
  );
  assert.ok(!conf.error.nixMessage.includes("\n"), `${what}: one line`);
}

const CONF_EXPECT: Record<string, (conf: NixConfLoad) => void> = {
  "truncated-token.conf": (c) => {
    assert.equal(c.error?.line, 2);
    assert.match(c.error!.nixMessage, /^illegal configuration line 'buil' in /);
  },
  "no-equals.conf": (c) => assert.equal(c.error?.line, 1),
  "equals-first.conf": (c) => assert.equal(c.error?.line, 1),
  "equals-only.conf": (c) => assert.equal(c.error?.line, 1),
  "glued-equals.conf": (c) => assert.equal(c.error?.line, 1),
  "hash-glued.conf": (c) => assert.equal(c.error?.line, 1),
  "truncated-after-equals.conf": (c) => assert.match(c.invalidValues[0]!.nixMessage, /max-jobs/),
  "crlf.conf": (c) => {
    assert.equal(c.error, undefined);
    assert.equal(c.settings.get("max-jobs")?.value, "0");
    assert.equal(c.settings.get("builders")?.value, "@/etc/nix/machines");
  },
  "nul-in-value.conf": (c) => assert.equal(c.invalidValues[0]?.line, 1),
  "include-no-path.conf": (c) => assert.equal(c.error?.line, 2),
  "include-two-paths.conf": (c) => assert.equal(c.error?.line, 1),
  "include-missing.conf": (c) => {
    assert.equal(c.error?.line, 2);
    assert.match(c.error!.nixMessage, /does-not-exist\.conf' included from .* not found/);
  },
  "bang-include-missing.conf": (c) => {
    assert.equal(c.error, undefined);
    assert.equal(c.settings.get("max-jobs")?.value, "0");
  },
  "include-directory.conf": (c) => {
    assert.equal(c.error, undefined);
    assert.equal(c.files.find((f) => f.path.endsWith("/cycle-self"))?.status, "unreadable");
  },
  "invalid-bool.conf": (c) => assert.match(c.invalidValues[0]!.nixMessage, /^Boolean setting/),
  "extra-on-scalar.conf": (c) => assert.equal(c.unknown.length, 2),
  "shell-in-value.conf": (c) =>
    assert.equal(c.settings.get("builders")?.value, "$(touch /tmp/nbr-hostile-canary) ; `id`"),
  "cycle-self/nix.conf": (c) => assert.match(c.error!.nixMessage, /includes itself/),
  "cycle-two/nix.conf": (c) => assert.match(c.error!.nixMessage, /includes itself/),
  "cycle-three/nix.conf": (c) => assert.match(c.error!.nixMessage, /includes itself/),
  "cycle-dotdot/nix.conf": (c) => assert.match(c.error!.nixMessage, /includes itself/),
  "cycle-optional/nix.conf": (c) => assert.match(c.error!.nixMessage, /includes itself/),
};

Deno.test("hostile nix.conf files load to settings or Nix's error at a real line; cycles are errors", async () => {
  const cases = filesUnder("nix_conf").filter((p) =>
    p.split("/").length === 2 ? p.endsWith(".conf") : p.endsWith("/nix.conf")
  );
  for (const rel of filesUnder("nix_conf")) read(rel);
  assert.ok(cases.length >= 35, `${cases.length} nix.conf cases`);
  for (const rel of cases) {
    const conf = await timed(rel, () => loadConf(`${CORPUS}/${rel}`));
    checkConfError(conf, rel);
    CONF_EXPECT[rel.slice("nix_conf/".length)]?.(conf);
  }
});

// ------------------------------------------------------------------------------------ machines

const MACHINES_VERSIONS = ["2.8.0", "2.24.0", "2.31.0", "nix (Lix, like Nix) 2.91.1"];

/** Copies a machines case directory to a temp dir, `@@DIR@@` replaced by that dir. */
async function machinesCaseDir(rel: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-hostile-machines-" });
  for (const entry of Deno.readDirSync(`${CORPUS}/${rel}`)) {
    const text = read(`${rel}/${entry.name}`).replaceAll("@@DIR@@", dir);
    await Deno.writeTextFile(`${dir}/${entry.name}`, text);
  }
  return dir;
}

const MACHINES_EXPECT: Record<string, (version: string, text: string) => void> = {
  "blank-entry.machines": (v, text) => {
    const { errors, machines } = parseMachines(text, { version: v, input: "m" });
    if (v === "2.8.0" || v.includes("Lix")) {
      assert.equal(errors[0]?.line, 2);
      assert.match(errors[0]!.nixMessage, /store URL was not found/);
    } else assert.equal(machines.length, 2);
  },
  "speed-float.machines": (v, text) => {
    const { errors } = parseMachines(text, { version: v, input: "m" });
    assert.equal(errors[0]?.column, v === "2.8.0" ? 4 : undefined);
  },
  "speed-negative.machines": (v, text) => {
    assert.equal(parseMachines(text, { version: v, input: "m" }).errors[0]?.column, 4);
  },
  "max-jobs-huge.machines": (v, text) => {
    assert.equal(parseMachines(text, { version: v, input: "m" }).errors[0]?.column, 3);
  },
  "host-key-bad-base64.machines": (v, text) => {
    assert.equal(parseMachines(text, { version: v, input: "m" }).errors[0]?.kind, "host-key");
  },
};

Deno.test("hostile machines files give machines and Nix's errors at real lines, with every Nix's rules", async () => {
  const files = topFiles("machines");
  assert.ok(files.length >= 25);
  for (const rel of files) {
    const text = read(rel);
    const path = `${CORPUS}/${rel}`;
    for (const version of MACHINES_VERSIONS) {
      const parsed = await timed(
        `${rel} (${version})`,
        () => parseMachines(text, { version, input: path }),
      );
      for (const entry of parsed.entries) {
        const at = entry.kind === "machine"
          ? entry.machine
          : entry.kind === "file"
          ? entry.file
          : entry.error;
        assert.equal(at.input, path);
        assert.ok(at.line >= 1 && at.line <= lines(text), `${rel}: line ${at.line}`);
      }
      // A host that could reach ssh as an option or shell syntax is refused before anything runs.
      for (const m of parsed.machines) {
        if (/^-|[;$`\s\0]/.test(m.host ?? "")) {
          assert.throws(() => parseSshHost(m.storeUri), UsageError, `${rel}: ${m.storeUri}`);
        }
      }
      MACHINES_EXPECT[rel.slice("machines/".length)]?.(version, text);
    }
    await timed(rel, () => resolveBuilders(`@${path}`, (p) => new LocalTarget().readFile(p)));
  }
});

Deno.test("@file cycles, missing files and directories in machines files are reported, not followed", async () => {
  const statuses: Record<string, string[]> = {};
  for (const rel of ["at-cycle-self", "at-cycle-two", "at-missing", "at-directory"]) {
    const dir = await machinesCaseDir(`machines/${rel}`);
    try {
      const resolved = await timed(
        rel,
        () => resolveBuilders(`@${dir}/machines`, (p) => new LocalTarget().readFile(p)),
      );
      statuses[rel] = resolved.files.map((f) => f.status);
      for (const f of resolved.files) {
        if (f.status === "cycle") assert.match(f.reason!, /includes itself \(.* -> .*\)/);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  assert.deepEqual(statuses, {
    "at-cycle-self": ["read", "cycle"],
    "at-cycle-two": ["read", "read", "cycle"],
    "at-missing": ["read", "missing"],
    "at-directory": ["read", "error"],
  });
});

// ------------------------------------------------- nix config show, binfmt, logs, /proc, paths

Deno.test("hostile 'nix show-config' output (JSON and text) gives settings or a ParseError naming it", async () => {
  const expectOk = new Set([
    "value-nested.json.in",
    "huge-number.json.in",
    "nul-in-key.json.in",
    "duplicate-keys.json.in",
    "proto-key.json.in",
  ]);
  for (const rel of topFiles("config_json")) {
    const { error } = await valueOrError(rel, () => parseConfigShowJson(read(rel), rel), {
      input: rel,
    });
    assert.equal(error === undefined, expectOk.has(rel.slice("config_json/".length)), rel);
  }
  for (const rel of topFiles("config_text")) {
    const text = read(rel);
    await valueOrError(rel, () => parseConfigShowText(text, rel), {
      input: rel,
      maxLine: lines(text),
    });
  }
});

Deno.test("hostile binfmt_misc entries, binfmt.d and binfmt-support files give a rule or a ParseError at a line", async () => {
  const errors: string[] = [];
  for (const rel of topFiles("binfmt_entry")) {
    const text = read(rel);
    const { error } = await valueOrError(rel, () => parseBinfmtEntry(text, "q", rel), {
      input: rel,
      maxLine: lines(text),
    });
    if (error) errors.push(rel);
  }
  for (const rel of topFiles("binfmt_d")) {
    const text = read(rel);
    const { error } = await valueOrError(rel, () => parseBinfmtD(text, rel), {
      input: rel,
      maxLine: lines(text),
    });
    if (error) errors.push(rel);
  }
  for (const rel of topFiles("binfmt_support")) {
    const text = read(rel);
    const { error } = await valueOrError(rel, () => parseBinfmtSupport(text, rel), {
      input: rel,
      maxLine: lines(text),
    });
    if (error) errors.push(rel);
  }
  // Accepted: CRLF files (read as the kernel and systemd read them), a NUL inside the
  // interpreter path, a magic cut at a byte boundary, and '\x' without digits (a literal, as
  // for the kernel). Everything else is refused.
  const accepted = [
    ...topFiles("binfmt_entry"),
    ...topFiles("binfmt_d"),
    ...topFiles("binfmt_support"),
  ].filter((f) => !errors.includes(f));
  assert.deepEqual(accepted, [
    "binfmt_entry/crlf",
    "binfmt_entry/nul",
    "binfmt_entry/truncated-mid-hex",
    "binfmt_d/crlf.conf",
    "binfmt_d/escape-at-end.conf",
  ]);
});

Deno.test("hostile kernel logs, meminfo and PSI files give kills and figures or a ParseError at a line", async () => {
  for (const rel of topFiles("kernel_log")) {
    const text = read(rel);
    const scan = await timed(rel, () => parseOomLog(text));
    for (const kill of scan.kills) assert.ok(kill.line >= 1 && kill.line <= lines(text));
  }
  const crlf = parseOomLog(read("kernel_log/crlf.log"));
  assert.deepEqual(crlf.kills.map((k) => [k.pid, k.process, k.trigger]), [[12732, "tail", "tail"]]);
  for (const rel of topFiles("meminfo")) {
    const text = read(rel);
    await valueOrError(rel, () => parseMeminfo(text, rel), { input: rel, maxLine: lines(text) });
  }
  assert.equal(parseMeminfo(read("meminfo/crlf")).totalBytes, 1024);
  for (const rel of topFiles("psi")) {
    const text = read(rel);
    await valueOrError(rel, () => parsePressure(text, rel), { input: rel, maxLine: lines(text) });
  }
});

Deno.test("hostile store paths are refused with a StorePathError (exit 3) naming them", async () => {
  for (const rel of topFiles("store_path")) {
    const text = read(rel);
    const { error } = await valueOrError(rel, () => parseStorePath(text), { type: StorePathError });
    assert.ok(error instanceof StorePathError, `${rel} is refused`);
    assert.equal(error.text, text);
    assert.match(error.message, /^Not a store path '/);
  }
});

Deno.test("hostile build output and internal-json logs give failures or a ParseError naming the line", async () => {
  for (const rel of topFiles("build_output")) {
    const text = read(rel);
    const summary = await timed(rel, () => parseBuildOutput(text));
    for (const failure of summary.failures) {
      assert.match(failure.drv, /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/);
    }
  }
  const invalid = parseBuildOutput(read("build_output/invalid-paths.log"));
  assert.deepEqual(invalid.failures, []);
  assert.ok(invalid.ignored.length >= 2);
  for (const rel of topFiles("internal_json")) {
    const text = read(rel);
    for (const [i, line] of text.split("\n").entries()) {
      const input = `${rel}:${i + 1}`;
      await valueOrError(input, () => parseInternalJsonLine(line, input), { input });
    }
  }
});

// ------------------------------------------------------------------------------ snapshot bundles

/** Copies a corpus bundle to a temp dir (`x.json.in` becomes `x.json`). */
async function bundleDir(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `nbr-hostile-${name}-` });
  for (const rel of filesUnder(`snapshot/${name}`)) {
    const inside = rel.slice(`snapshot/${name}/`.length).replace(/\.json\.in$/, ".json");
    tally.files.add(rel);
    await Deno.mkdir(`${dir}/${inside}`.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.copyFile(`${CORPUS}/${rel}`, `${dir}/${inside}`);
  }
  return dir;
}

const BUNDLES = [...Deno.readDirSync(`${CORPUS}/snapshot`)].map((e) => e.name).sort();

Deno.test("hostile snapshot bundles load, or fail with a ParseError naming the file and the JSON path", async () => {
  for (const name of BUNDLES) {
    const dir = await bundleDir(name);
    try {
      const { error } = await valueOrError(name, () => loadSnapshot(dir));
      if (name === "hostile-contents") {
        assert.equal(error, undefined);
        continue;
      }
      assert.ok(error instanceof ParseError, `${name}: refused`);
      assert.match(error.input, /\/(meta|commands|paths)\.json$/);
      assert.match(error.reason, /^(not valid JSON \(|top level: |[\w./-]+: |key ')/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

// ------------------------------------------------------------------- generated big inputs

/** Writes the generated cases into a temp dir and returns its path. */
async function generated(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-hostile-big-" });
  const mb = 1 << 20;
  const machineLine = (i: number) => `ssh://nix@builder${i}.example x86_64-linux /k ${i % 9} 1 kvm`;
  const big: Record<string, string> = {
    "machines-100k": Array.from(
      { length: 100_000 },
      (_, i) => i === 49_999 ? "bad - - notanumber" : machineLine(i),
    ).join("\n") + "\n",
    "machines-1mb-line": machineLine(0) + " " + "k".repeat(mb),
    "machines-10k-at-files": Array.from({ length: 10_000 }, (_, i) => `@${dir}/none${i}`)
      .join(";"),
    "nix.conf-1mb-line": `builders = ${"b ".repeat(mb / 2)}\nmax-jobs = 0\n`,
    "nix.conf-100k-extra": Array.from(
      { length: 100_000 },
      (_, i) => `extra-system-features = f${i}`,
    ).join("\n"),
    "oom-1mb-redos": "x invoked oom-killer: gfp_mask=0x1(".repeat(mb / 36),
    "oom-1mb-line": `[  1.0] Out of memory: Killed process 1 (${"x".repeat(mb)}) total-vm:1kB`,
    "oom-100k-lines": Array.from(
      { length: 100_000 },
      (_, i) =>
        `[ ${i}.0] Out of memory: Killed process ${i} (cc1) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB`,
    ).join("\n"),
    "build-1mb-line": `error: builder for '/nix/store/${"a".repeat(mb)}' failed with exit code 1`,
    "build-100k-lines": "error: builder for '/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-f.drv' " +
      "failed with exit code 1;\n       last 100000 log lines:\n" +
      Array.from({ length: 100_000 }, (_, i) => `       > line ${i}`).join("\n"),
    "config-1mb-line": `builders = ${"x".repeat(mb)}\n`,
    "config-json-deep": `{"x":{"value":${"[".repeat(200_000)}${"]".repeat(200_000)}}}`,
    "config-json-1mb-string": JSON.stringify({ builders: { value: "x".repeat(mb) } }),
    "meminfo-1mb-line": `MemTotal: ${"9".repeat(mb)} kB\n`,
    "psi-1mb-line": `some avg10=${"1".repeat(mb)}.00 avg60=0 avg300=0 total=0\n`,
    "register-1mb-line": `:q:M::${"\\x7f".repeat(mb / 4)}::/q:F`,
    "internal-json-deep": `@nix {"action":"start","id":1,"level":0,"type":0,"fields":[${
      "[".repeat(200_000)
    }${"]".repeat(200_000)}]}`,
  };
  for (const [name, text] of Object.entries(big)) await Deno.writeTextFile(`${dir}/${name}`, text);
  // include chains: 100 deep (one include each), and 30 deep with every file including the next
  // twice (2^30 reads if followed blindly).
  for (let i = 0; i < 100; i++) {
    await Deno.writeTextFile(`${dir}/deep${i}.conf`, `include deep${i + 1}.conf\n`);
    await Deno.writeTextFile(`${dir}/mdeep${i}`, `@${dir}/mdeep${i + 1}\n`);
  }
  for (let i = 0; i < 30; i++) {
    await Deno.writeTextFile(`${dir}/fan${i}.conf`, `include fan${i + 1}.conf\n`.repeat(2));
    await Deno.writeTextFile(`${dir}/mfan${i}`, `@${dir}/mfan${i + 1}\n`.repeat(2));
  }
  await Deno.writeTextFile(`${dir}/fan30.conf`, "max-jobs = 0\n");
  await Deno.writeTextFile(`${dir}/mfan30`, "b x86_64-linux\n");
  await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
  await Deno.writeTextFile(`${dir}/fifo.conf`, `include ${dir}/fifo\nmax-jobs = 0\n`);
  await Deno.writeTextFile(`${dir}/zero.conf`, "include /dev/zero\nmax-jobs = 0\n");
  await Deno.writeTextFile(`${dir}/mfifo`, `@${dir}/fifo\n@/dev/zero\nb x86_64-linux\n`);
  tally.generated = Object.keys(big).length + 7;
  return dir;
}

Deno.test("generated 1 MB lines, 100,000-line files, deep and fanning include chains end in time", async () => {
  const dir = await generated();
  const text = (name: string) => Deno.readTextFileSync(`${dir}/${name}`);
  const big = { budget: BIG_MS };
  try {
    const m100k = text("machines-100k");
    const parsed = await timed(
      "100,000-line machines file",
      () => parseMachines(m100k, { version: "2.8.0", input: "machines-100k" }),
      BIG_MS,
    );
    assert.equal(parsed.machines.length, 99_999);
    assert.deepEqual(parsed.errors.map((e) => [e.line, e.column]), [[50_000, 3]]);
    const refs = await timed(
      "10,000 @files",
      () => resolveBuilders(text("machines-10k-at-files"), (p) => new LocalTarget().readFile(p)),
      BIG_MS,
    );
    assert.equal(refs.files.length, 10_000);
    await timed("1 MB machines line", () => parseMachines(text("machines-1mb-line")), BIG_MS);

    const conf1mb = await timed(
      "1 MB nix.conf line",
      () => loadConf(`${dir}/nix.conf-1mb-line`),
      BIG_MS,
    );
    assert.equal(conf1mb.settings.get("max-jobs")?.value, "0");
    const extra = await timed(
      "100,000 extra- lines",
      () => loadConf(`${dir}/nix.conf-100k-extra`),
      BIG_MS,
    );
    assert.equal(extra.settings.get("system-features")?.origins.length, 100_000);
    const deep = await timed("include chain 100 deep", () => loadConf(`${dir}/deep0.conf`));
    assert.match(deep.error!.nixMessage, /includes nest deeper than 32/);
    const fan = await timed("include chain fanning out", () => loadConf(`${dir}/fan0.conf`));
    assert.match(fan.error!.nixMessage, /more than 1000 files included in all/);
    for (
      const [special, why] of [["fifo.conf", /timed out/], [
        "zero.conf",
        /not a regular file/,
      ]] as const
    ) {
      const conf = await timed(special, () => loadConf(`${dir}/${special}`));
      assert.equal(conf.settings.get("max-jobs")?.value, "0");
      // A time-out leaves the file "unknown" (it may be fine later), a device is "unreadable".
      const bad = conf.files.find((f) => f.status === "unreadable" || f.status === "unknown");
      assert.match(bad!.reason!, why);
    }
    const mdeep = await timed(
      "@file chain 100 deep",
      () => resolveBuilders(`@${dir}/mdeep0`, (p) => new LocalTarget().readFile(p)),
    );
    assert.match(mdeep.files.at(-1)!.reason!, /more than 32 nested @files/);
    const mfan = await timed(
      "@file chain fanning out",
      () => resolveBuilders(`@${dir}/mfan0`, (p) => new LocalTarget().readFile(p)),
    );
    assert.ok(mfan.files.some((f) => /more than 1000 @files read in all/.test(f.reason ?? "")));
    const mfifo = await timed(
      "@fifo and @/dev/zero",
      () =>
        resolveBuilders(`@${dir}/mfifo`, (p) => new LocalTarget({ timeoutMs: 500 }).readFile(p)),
    );
    assert.deepEqual(mfifo.files.map((f) => f.status), ["read", "unknown", "error"]);
    assert.equal(mfifo.machines.length, 1);

    for (const name of ["oom-1mb-redos", "oom-1mb-line", "oom-100k-lines"]) {
      const scan = await timed(name, () => parseOomLog(text(name)), BIG_MS);
      if (name === "oom-100k-lines") assert.equal(scan.kills.length, 100_000);
    }
    for (const name of ["build-1mb-line", "build-100k-lines"]) {
      await timed(name, () => parseBuildOutput(text(name)), BIG_MS);
    }
    await valueOrError("config-1mb-line", () => parseConfigShowText(text("config-1mb-line")), big);
    const deepJson = await valueOrError(
      "config-json-deep",
      () => parseConfigShowJson(text("config-json-deep"), "deep"),
      { ...big, input: "deep" },
    );
    assert.match(deepJson.error!.message, /nested too deep/);
    await valueOrError(
      "1 MB JSON string",
      () => parseConfigShowJson(text("config-json-1mb-string")),
      big,
    );
    await valueOrError("meminfo-1mb-line", () => parseMeminfo(text("meminfo-1mb-line")), big);
    await valueOrError("psi-1mb-line", () => parsePressure(text("psi-1mb-line")), big);
    await valueOrError(
      "register-1mb-line",
      () => parseRegisterLine(text("register-1mb-line")),
      big,
    );
    await valueOrError(
      "internal-json-deep",
      () => parseInternalJsonLine(text("internal-json-deep"), "deep"),
      { ...big, input: "deep" },
    );
    // The nix.conf parser is linear on a 1 MB line too.
    await timed("parseNixConf 1 MB", () => parseNixConf(`a = ${"x".repeat(1 << 20)}`), BIG_MS);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------- through the scripts

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

async function script(name: string, args: string[], stdin?: string): Promise<ScriptRun> {
  tally.scriptRuns++;
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${name}.ts`, ...args],
    cwd: "/tmp",
    env: { NO_COLOR: "1" },
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** A script's verdict on bad input: a status, and if it gave up, one line naming the input. */
function assertVerdict(what: string, run: ScriptRun, name?: RegExp): void {
  assert.ok([0, 1, 2, 3].includes(run.code), `${what}: exit ${run.code}\n${run.stderr}`);
  assert.ok(!/^\s+at /m.test(run.stderr + run.stdout), `${what}: no stack trace:\n${run.stderr}`);
  assert.ok(!/\bUNKNOWN: (?:TypeError|RangeError|URIError|SyntaxError)\b/.test(run.stderr), what);
  const errorLines = run.stderr.split("\n").filter((l) => l.trim() !== "");
  if (run.code === 3 && run.stdout.trim() === "") {
    assert.equal(errorLines.length, 1, `${what}: one line on stderr:\n${run.stderr}`);
    if (name) assert.match(errorLines[0]!, name, what);
  }
}

/** Runs `jobs` with at most `limit` at once. */
async function pool<T>(limit: number, jobs: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < jobs.length) {
        const i = next++;
        results[i] = await jobs[i]!();
      }
    }),
  );
  return results;
}

Deno.test("every script turns hostile files and bundles into a status and one line, never a stack trace", async () => {
  await Deno.remove(CANARY).catch(() => {});
  const jobs: (() => Promise<void>)[] = [];
  const file = (rel: string) => `${CORPUS}/${rel}`;
  const add = (what: string, name: string, args: string[], check?: RegExp, stdin?: string) =>
    jobs.push(async () => assertVerdict(what, await script(name, args, stdin), check));
  const opts = ["--timeout", "20", "--json"];
  // Local files given on the command line.
  for (const rel of ["binary-garbage.log", "latin1.log", "nul-bytes.log", "crlf.log"]) {
    add(`oom_mitigate --kernel-log ${rel}`, "oom_mitigate", [
      ...opts,
      "--kernel-log",
      file(`kernel_log/${rel}`),
      "--machines",
      file("machines/binary-garbage.machines"),
    ]);
  }
  add("oom_mitigate --build-log binary", "oom_mitigate", [
    ...opts,
    "--kernel-log",
    "/dev/null",
    "--build-log",
    file("build_output/binary.log"),
  ]);
  add(
    "oom_mitigate --machines /dev/zero",
    "oom_mitigate",
    ["--machines", "/dev/zero"],
    /\/dev\/zero/,
  );
  for (const rel of ["binary.log", "invalid-paths.log", "nul.log", "latin1.log"]) {
    add(`drv_log --from-build-output ${rel}`, "drv_log", [
      ...opts,
      "--skip-local",
      "--host",
      "127.0.0.1:1",
      "--from-build-output",
      file(`build_output/${rel}`),
    ]);
    add(`drv_log --log-file ${rel}`, "drv_log", [
      ...opts,
      "--log-file",
      file(`build_output/${rel}`),
    ]);
  }
  for (const rel of topFiles("store_path")) {
    const path = Deno.readTextFileSync(file(rel));
    if (path.includes("\0")) continue; // argv cannot carry NUL
    add(`drv_log ${rel}`, "drv_log", ["--", path], /Not a store path/);
  }
  add("watch_builders --machines binary", "watch_builders", [
    "--once",
    "--timeout",
    "5",
    "--machines",
    file("machines/binary-garbage.machines"),
  ]);
  add("watch_builders --machines option hosts", "watch_builders", [
    "--once",
    "--timeout",
    "5",
    "--machines",
    file("machines/option-host.machines"),
  ], /^watch_builders: Host '.*-oProxyCommand/);
  // Bundles: every script that reads one.
  const dirs: string[] = [];
  try {
    for (const name of BUNDLES) {
      const dir = await bundleDir(name);
      dirs.push(dir);
      const scripts = name === "hostile-contents"
        ? ["doctor", "show_config", "health_check", "oom_mitigate", "check_binfmt", "drv_log"]
        : ["doctor", "show_config"];
      for (const s of scripts) {
        const extra = s === "drv_log"
          ? ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv", "--builders"]
          : [];
        add(
          `${s} --snapshot ${name}`,
          s,
          [...opts, "--snapshot", dir, ...extra],
          name === "hostile-contents" ? undefined : /Cannot parse .*\/(meta|commands|paths)\.json/,
        );
      }
    }
    await pool(3, jobs);
    // Hostile values (in files, bundles and arguments) name this file: none of it ever ran.
    assert.equal(await Deno.stat(CANARY).then(() => true, () => false), false, `${CANARY} exists`);
  } finally {
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `hostile corpus: ${tally.files.size} files, ${tally.generated} generated, ` +
      `${tally.scriptRuns} script runs`,
  );
});
