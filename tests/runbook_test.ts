/**
 * The runbook is tested like code: links resolve, every command in a code block names a real script or
 * task and only flags it accepts (read from the script's own `--help`), and finding ids in code and in
 * the pages match both ways.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const PAGES = [
  "README.md",
  ...[...Deno.readDirSync(`${ROOT}runbook`)].filter((e) => e.name.endsWith(".md")).map((e) =>
    `runbook/${e.name}`
  ).sort(),
];
const TASKS: Record<string, string> = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks;

function codeBlocks(text: string): string[] {
  return [...text.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

const helpCache = new Map<string, Set<string>>();
async function flagsOf(script: string): Promise<Set<string>> {
  const cached = helpCache.get(script);
  if (cached) return cached;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}${script}`, "--help"],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const help = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `${script} --help failed: ${new TextDecoder().decode(out.stderr)}`);
  const flags = new Set<string>();
  const options = help.split(/\nOptions:\n/)[1]?.split(/\n\n/)[0] ?? "";
  for (const m of options.matchAll(/(?:^|[\s,])(--?[a-zA-Z][\w-]*)/gm)) {
    flags.add(m[1]!);
    // commander's negatable flags: --no-x also means --x exists
    if (m[1]!.startsWith("--no-")) flags.add(`--${m[1]!.slice(5)}`);
  }
  helpCache.set(script, flags);
  return flags;
}

interface Invocation {
  page: string;
  line: string;
  script: string;
  args: string[];
}

function invocations(page: string, text: string): Invocation[] {
  const found: Invocation[] = [];
  for (const block of codeBlocks(text)) {
    for (const raw of block.split("\n")) {
      const line = raw.replace(/^\s*(\$|#)\s+/, "").replace(/\s+#\s.*$/, "");
      // Cut at shell operators: only the command itself is checked.
      const command = line.split(/\s(?:\||&&|;|>|2>|<)\s?/)[0]!;
      const tokens = command.trim().split(/\s+/);
      const deno = tokens.indexOf("deno");
      if (deno < 0) continue;
      const verb = tokens[deno + 1];
      if (verb === "run") {
        const at = tokens.findIndex((t, i) => i > deno && /(^|\/)scripts\/[\w-]+\.ts$/.test(t));
        if (at < 0) continue;
        const script = tokens[at]!.replace(/^.*?(scripts\/)/, "$1");
        found.push({ page, line: raw, script, args: tokens.slice(at + 1) });
      } else if (verb === "task") {
        const task = tokens[deno + 2] ?? "";
        found.push({ page, line: raw, script: `task:${task}`, args: tokens.slice(deno + 3) });
      }
    }
  }
  return found;
}

Deno.test("every relative link in README.md and runbook/ resolves", () => {
  const broken: string[] = [];
  for (const page of PAGES) {
    const text = Deno.readTextFileSync(`${ROOT}${page}`);
    const dir = page.includes("/") ? page.slice(0, page.lastIndexOf("/") + 1) : "";
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!.split("#")[0]!;
      if (target === "" || /^[a-z]+:/.test(target)) continue;
      try {
        Deno.statSync(`${ROOT}${dir}${target}`);
      } catch {
        broken.push(`${page}: ${m[1]}`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

Deno.test("every script has a runbook page that links to it", () => {
  const pages = PAGES.filter((p) => p.startsWith("runbook/")).map((p) =>
    Deno.readTextFileSync(`${ROOT}${p}`)
  ).join("\n");
  const missing = [...Deno.readDirSync(`${ROOT}scripts`)].map((e) => e.name).filter((n) =>
    n.endsWith(".ts") && !pages.includes(`scripts/${n}`)
  );
  assert.deepEqual(missing, []);
});

Deno.test("every command in the runbook names a real script or task and only flags it accepts", async () => {
  const problems: string[] = [];
  for (const page of PAGES) {
    for (const inv of invocations(page, Deno.readTextFileSync(`${ROOT}${page}`))) {
      let script = inv.script;
      let args = inv.args;
      if (script.startsWith("task:")) {
        const task = script.slice(5);
        const body = TASKS[task];
        if (body === undefined) {
          problems.push(`${page}: unknown task '${task}' in: ${inv.line.trim()}`);
          continue;
        }
        const target = /(scripts\/[\w-]+\.ts)/.exec(body)?.[1];
        if (!target) continue; // test/check/bench tasks: no flags to check
        script = target;
        args = args[0] === "--" ? args.slice(1) : args;
      }
      try {
        Deno.statSync(`${ROOT}${script}`);
      } catch {
        problems.push(`${page}: no such script ${script} in: ${inv.line.trim()}`);
        continue;
      }
      const flags = await flagsOf(script);
      for (const arg of args) {
        if (arg === "--") break;
        if (!/^--?[a-zA-Z]/.test(arg)) continue;
        const flag = arg.split("=")[0]!;
        if (!flags.has(flag)) {
          problems.push(`${page}: ${script} has no flag ${flag}: ${inv.line.trim()}`);
        }
      }
    }
  }
  assert.deepEqual(problems, []);
});

function walk(dir: string): string[] {
  const files: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...walk(path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) files.push(path);
  }
  return files;
}

const ID_FIELD = /\bid: ["'`]([a-z0-9-]+)\/[a-z0-9-]+["'`]/g;
/** `finding("area/slug", ...)` calls (lib/findings.ts), the first argument possibly on the next line. */
const FINDING_CALL = /\bfinding\(\s*["'`]([a-z0-9-]+)\/[a-z0-9-]+["'`]/g;
const LITERAL = /["'`]([a-z0-9]+(?:-[a-z0-9]+)*)\/([a-z0-9]+(?:-[a-z0-9]+)*)["'`]/g;

/**
 * Finding ids in code: string literals `"area/slug"` whose area is used in some `id:` field or as the
 * first argument of some `finding(...)` call.
 */
function codeIds(): Set<string> {
  const texts = [...walk(`${ROOT}lib`), ...walk(`${ROOT}scripts`)].map((file) =>
    // JSDoc examples are not emitted findings.
    Deno.readTextFileSync(file).replace(/^\s*\*.*$/gm, "")
  );
  const areas = new Set<string>();
  for (const text of texts) {
    for (const m of text.matchAll(ID_FIELD)) areas.add(m[1]!);
    for (const m of text.matchAll(FINDING_CALL)) areas.add(m[1]!);
  }
  const ids = new Set<string>();
  for (const text of texts) {
    for (const m of text.matchAll(LITERAL)) if (areas.has(m[1]!)) ids.add(`${m[1]}/${m[2]}`);
  }
  return ids;
}

/** Ids documented in the first cell of a table row (`| \`id\` |`) or at the start of a bullet (`- \`id\``). */
const DOCUMENTED_ID = /^(?:\|\s*|\s*[-*]\s+)`([a-z0-9-]+\/[a-z0-9._-]+)`/gm;

function documentedIds(): Set<string> {
  const ids = new Set<string>();
  for (const page of PAGES.filter((p) => p.startsWith("runbook/"))) {
    const text = Deno.readTextFileSync(`${ROOT}${page}`);
    for (const m of text.matchAll(DOCUMENTED_ID)) ids.add(m[1]!);
  }
  return ids;
}

Deno.test("every finding id the code can emit is documented in a runbook findings table or list", () => {
  const documented = documentedIds();
  assert.deepEqual([...codeIds()].filter((id) => !documented.has(id)).sort(), []);
});

Deno.test("every finding id documented in the runbook exists in the code", () => {
  const inCode = codeIds();
  assert.deepEqual([...documentedIds()].filter((id) => !inCode.has(id)).sort(), []);
});

Deno.test("finding ids in code are literal strings, so the runbook can be checked against them", () => {
  const dynamic: string[] = [];
  for (const file of [...walk(`${ROOT}lib`), ...walk(`${ROOT}scripts`)]) {
    const text = Deno.readTextFileSync(file);
    for (const m of text.matchAll(/\bid: `[^`]*\$\{/g)) {
      dynamic.push(`${file.slice(ROOT.length)}: ${m[0]}`);
    }
  }
  assert.deepEqual(dynamic, []);
});
