#!/usr/bin/env -S deno run -A
/**
 * Overview: `deno task bundle` writes one self-contained `dist/<script>.js` per script in
 * `scripts/`, with every npm dependency inlined (`deno bundle --platform deno`), so that a builder
 * with only `deno` installed and no network can run it: copy the file, `chmod +x`, run. Each file
 * starts with the scripts' shebang `#!/usr/bin/env -S deno run -A`, and is refused if anything but
 * a Node built-in is still imported.
 *
 * `-A` because `deno bundle` needs to read, write and run esbuild (which it fetches from npm the
 * first time).
 *
 * CLI arguments: `[SCRIPT...]` (default: all of `scripts/`), `--out-dir DIR` (default `dist`).
 * Example: deno task bundle; deno run -A tools/bundle.ts health_check --out-dir /tmp/dist
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The first line of every bundle: the shebang the scripts themselves carry. */
export const SHEBANG = "#!/usr/bin/env -S deno run -A";

/** The repository root (the directory holding `deno.json` and `scripts/`). */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Options for {@link bundleScripts}. */
export interface BundleOptions {
  /** Script names without `.ts` (default: every `scripts/*.ts`). */
  scripts?: readonly string[];
  /** Where the bundles go (default `<root>/dist`). */
  outDir?: string;
  /** The repository root (default {@link ROOT}). */
  root?: string;
}

/** One written bundle. */
export interface BundleResult {
  /** The script's name, e.g. `health_check`. */
  script: string;
  /** Path of the bundle, `<outDir>/<script>.js`. */
  path: string;
  /** Its size in bytes. */
  bytes: number;
}

/**
 * The scripts of `<root>/scripts`, by name, sorted.
 *
 * @example
 * ```ts
 * import { listScripts } from "./bundle.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok((await listScripts()).includes("health_check"));
 * ```
 */
export async function listScripts(root: string = ROOT): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(`${root}/scripts`)) {
    if (entry.isFile && entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
      names.push(entry.name.slice(0, -3));
    }
  }
  return names.sort();
}

/**
 * The module specifiers a bundle still imports statically that are not Node built-ins (`node:*`):
 * each would need a network fetch or a cache on the builder. Empty for a self-contained bundle.
 *
 * @example
 * ```ts
 * import { foreignImports } from "./bundle.ts";
 * import assert from "node:assert/strict";
 *
 * const code = 'import { x } from "node:fs";\nimport y from "npm:zod@4";\nexport * from "./z.js";\n';
 * assert.deepEqual(foreignImports(code), ["npm:zod@4", "./z.js"]);
 * ```
 */
export function foreignImports(code: string): string[] {
  const found: string[] = [];
  const pattern =
    /^\s*(?:import|export)\b[^"'`;]*?\bfrom\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']/gm;
  for (const match of code.matchAll(pattern)) {
    const specifier = match[1] ?? match[2] ?? "";
    if (!specifier.startsWith("node:")) found.push(specifier);
  }
  return found;
}

/**
 * Puts {@link SHEBANG} on the first line, replacing any other shebang there.
 *
 * @example
 * ```ts
 * import { SHEBANG, withShebang } from "./bundle.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(withShebang("console.log(1);\n"), `${SHEBANG}\nconsole.log(1);\n`);
 * assert.equal(withShebang("#!/usr/bin/env deno\nx;\n"), `${SHEBANG}\nx;\n`);
 * ```
 */
export function withShebang(code: string): string {
  const body = code.startsWith("#!") ? code.slice(code.indexOf("\n") + 1) : code;
  return `${SHEBANG}\n${body}`;
}

/**
 * Bundles one script to `<outDir>/<script>.js` with `deno bundle --platform deno`, then checks it:
 * the shebang first, no import left but Node built-ins. Throws one line saying what failed.
 */
export async function bundleScript(
  script: string,
  options: BundleOptions = {},
): Promise<BundleResult> {
  const root = options.root ?? ROOT;
  const outDir = options.outDir ?? `${root}/dist`;
  const entry = `${root}/scripts/${script}.ts`;
  try {
    await Deno.stat(entry);
  } catch {
    throw new Error(`Cannot bundle '${script}': no file scripts/${script}.ts`);
  }
  await Deno.mkdir(outDir, { recursive: true });
  const path = `${outDir}/${script}.js`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "deno",
      "--config",
      `${root}/deno.json`,
      "-o",
      path,
      entry,
    ],
    cwd: root,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    const text = new TextDecoder().decode(output.stderr).trim().split("\n")
      .filter((line) => !/deno bundle.* is experimental/.test(line)).join(" ");
    throw new Error(`Cannot bundle '${script}': deno bundle exited ${output.code}: ${text}`);
  }
  const code = withShebang(await Deno.readTextFile(path));
  const foreign = foreignImports(code);
  if (foreign.length > 0) {
    throw new Error(
      `Cannot bundle '${script}': the bundle still imports ${
        foreign.map((s) => `'${s}'`).join(", ")
      }`,
    );
  }
  await Deno.writeTextFile(path, code);
  await Deno.chmod(path, 0o755);
  return { script, path, bytes: new TextEncoder().encode(code).length };
}

/**
 * Bundles the given scripts (default: all), a few at a time.
 *
 * @example
 * ```ts ignore
 * import { bundleScripts } from "./bundle.ts";
 *
 * const [result] = await bundleScripts({ scripts: ["health_check"], outDir: "/tmp/dist" });
 * console.log(result?.path); // /tmp/dist/health_check.js
 * ```
 */
export async function bundleScripts(options: BundleOptions = {}): Promise<BundleResult[]> {
  const root = options.root ?? ROOT;
  const known = await listScripts(root);
  const scripts = options.scripts && options.scripts.length > 0 ? [...options.scripts] : known;
  for (const script of scripts) {
    if (!known.includes(script)) {
      throw new Error(`Cannot bundle '${script}': not a script (${known.join(", ")})`);
    }
  }
  const results: BundleResult[] = [];
  const queue = [...scripts];
  const workers = Array.from({ length: Math.min(4, queue.length) }, async () => {
    for (let script = queue.shift(); script !== undefined; script = queue.shift()) {
      results.push(await bundleScript(script, { ...options, root }));
    }
  });
  await Promise.all(workers);
  return results.sort((a, b) => a.script.localeCompare(b.script));
}

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: {
        "out-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    console.error(`bundle: ${(error as Error).message}`);
    Deno.exit(3);
  }
  if (parsed.values.help) {
    console.log(
      "Usage: deno task bundle [SCRIPT...] [--out-dir DIR]\n\n" +
        "Write dist/<script>.js for each script (default: all): one file, npm dependencies\n" +
        "inlined, to copy to a builder that has only deno.\n\n" +
        "Examples:\n" +
        "  deno task bundle                                      # every script, into dist/\n" +
        "  deno run -A tools/bundle.ts health_check --out-dir /tmp/dist  # one script\n",
    );
    Deno.exit(0);
  }
  try {
    const results = await bundleScripts({
      scripts: parsed.positionals.map((name) =>
        name.replace(/^scripts\//, "").replace(/\.ts$/, "")
      ),
      ...(parsed.values["out-dir"] !== undefined ? { outDir: parsed.values["out-dir"] } : {}),
    });
    for (const r of results) {
      console.log(`${r.path.replace(`${Deno.cwd()}/`, "")}  ${Math.round(r.bytes / 1024)} KiB`);
    }
  } catch (error) {
    console.error(`bundle: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
