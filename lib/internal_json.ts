/**
 * Nix's machine-readable log, `--log-format internal-json`: lines `@nix {...}` on standard error,
 * and what they tell about builds: which derivation was built where (a remote builder or this
 * machine), for how long, and whether it failed.
 *
 * The format (Nix `src/libutil/logging.cc`, `JSONLogger`; checked against Nix 2.8 output):
 *
 * - `{"action":"start","id":N,"level":L,"type":T,"text":"...","fields":[...]}` (`parent` from
 *   Nix 2.9 on); a build is type 105 with fields `[drvPath, machine, round, rounds]`, where
 *   `machine` is the builder's store URI (`ssh://builder1`) or `""` for a local build.
 * - `{"action":"stop","id":N}`
 * - `{"action":"result","id":N,"type":R,"fields":[...]}`: 101 a build log line, 104 a phase,
 *   105 progress `[done, expected, running, failed]`.
 * - `{"action":"msg","level":L,"msg":"..."}`: level 0 is an error (with ANSI colours).
 *
 * Activity ids are `pid << 32 | n`, which can pass 2^53: they are kept as decimal strings.
 * Over `ssh-ng://` the builder's own `building '...'` activity (machine `""`) is forwarded
 * while the controller's activity for the same derivation runs; it is the same build, not a
 * local one.
 *
 * @module
 */

import { stripAnsi } from "./build_output.ts";
import { ParseError } from "./errors.ts";

/**
 * Activity types (Nix `ActivityType`).
 *
 * @example
 * ```ts
 * import { ACTIVITY } from "./internal_json.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ACTIVITY.build, 105);
 * ```
 */
export const ACTIVITY = {
  unknown: 0,
  copyPath: 100,
  fileTransfer: 101,
  realise: 102,
  copyPaths: 103,
  builds: 104,
  build: 105,
  optimiseStore: 106,
  verifyPaths: 107,
  substitute: 108,
  queryPathInfo: 109,
  postBuildHook: 110,
  buildWaiting: 111,
  fetchTree: 112,
} as const;

/**
 * Result types (Nix `ResultType`).
 *
 * @example
 * ```ts
 * import { RESULT } from "./internal_json.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(RESULT.buildLogLine, 101);
 * ```
 */
export const RESULT = {
  fileLinked: 100,
  buildLogLine: 101,
  untrustedPath: 102,
  corruptedPath: 103,
  setPhase: 104,
  progress: 105,
  setExpected: 106,
  postBuildLogLine: 107,
} as const;

/** A field of an activity or result: a string or a number. */
export type LogField = string | number;

/** One `@nix` line. */
export type NixLogEvent =
  | {
    /** An activity began. */
    action: "start";
    /** Its id (decimal string: ids exceed 2^53). */
    id: string;
    /** Its verbosity level. */
    level: number;
    /** Its type (see {@link ACTIVITY}). */
    type: number;
    /** Its human text. */
    text: string;
    /** The parent activity's id (`"0"`: none or not reported, as in Nix before 2.9). */
    parent: string;
    /** Its fields. */
    fields: LogField[];
  }
  | {
    /** An activity ended. */
    action: "stop";
    /** Its id. */
    id: string;
  }
  | {
    /** An activity reported something. */
    action: "result";
    /** The activity's id. */
    id: string;
    /** The result type (see {@link RESULT}). */
    type: number;
    /** Its fields. */
    fields: LogField[];
  }
  | {
    /** A message. */
    action: "msg";
    /** 0 error, 1 warning, 2 notice, 3 info, 4 talkative... */
    level: number;
    /** The message with ANSI colours removed. */
    msg: string;
  }
  | {
    /** A build phase (sent by older build hooks). */
    action: "setPhase";
    /** The phase. */
    phase: string;
  };

function fieldsOf(value: unknown, input: string): LogField[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new ParseError(input, "'fields' is not an array");
  return value.map((f) => {
    if (typeof f === "string" || typeof f === "number") return f;
    throw new ParseError(input, `field ${JSON.stringify(f)} is neither a string nor a number`);
  });
}

/**
 * Parses one line of Nix's standard error. Returns `null` for a line that is not `@nix {...}`
 * (plain text Nix printed before its logger was set up, or another program's output); throws
 * `ParseError` for an `@nix` line that is not a valid event.
 *
 * @example
 * ```ts
 * import { parseInternalJsonLine } from "./internal_json.ts";
 * import assert from "node:assert/strict";
 *
 * const event = parseInternalJsonLine(
 *   '@nix {"action":"start","fields":["/nix/store/33s9-hello.drv","ssh://builder1",1,1],' +
 *     '"id":34359738373,"level":3,"text":"building","type":105}',
 * );
 * assert.deepEqual(event, {
 *   action: "start",
 *   id: "34359738373",
 *   level: 3,
 *   type: 105,
 *   text: "building",
 *   parent: "0",
 *   fields: ["/nix/store/33s9-hello.drv", "ssh://builder1", 1, 1],
 * });
 * assert.equal(parseInternalJsonLine("warning: something"), null);
 * ```
 */
export function parseInternalJsonLine(line: string, input = "nix log"): NixLogEvent | null {
  const text = line.replace(/\r?\n$/, "");
  if (!text.startsWith("@nix ")) return null;
  let value: unknown;
  try {
    value = JSON.parse(
      text.slice(5),
      function (key: string, v: unknown, context?: { source?: string }) {
        // Keep 64-bit ids exact: use the number's source text.
        if ((key === "id" || key === "parent") && typeof v === "number") {
          return context?.source ?? String(v);
        }
        return v;
      } as (this: unknown, key: string, value: unknown) => unknown,
    );
  } catch (error) {
    throw new ParseError(input, `invalid JSON after '@nix ': ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ParseError(input, "'@nix' is not followed by a JSON object");
  }
  const o = value as Record<string, unknown>;
  const str = (k: string): string => {
    const v = o[k];
    if (typeof v === "string") return v;
    throw new ParseError(input, `'${k}' is missing or not a string in a '${o.action}' event`);
  };
  const int = (k: string): number => {
    const v = o[k];
    if (typeof v === "number" && Number.isFinite(v)) return v;
    throw new ParseError(input, `'${k}' is missing or not a number in a '${o.action}' event`);
  };
  switch (o.action) {
    case "start":
      return {
        action: "start",
        id: str("id"),
        level: int("level"),
        type: int("type"),
        text: typeof o.text === "string" ? o.text : "",
        parent: typeof o.parent === "string" ? o.parent : "0",
        fields: fieldsOf(o.fields, input),
      };
    case "stop":
      return { action: "stop", id: str("id") };
    case "result":
      return {
        action: "result",
        id: str("id"),
        type: int("type"),
        fields: fieldsOf(o.fields, input),
      };
    case "msg":
      return { action: "msg", level: int("level"), msg: stripAnsi(str("msg")) };
    case "setPhase":
      return { action: "setPhase", phase: str("phase") };
    default:
      throw new ParseError(input, `unknown action ${JSON.stringify(o.action ?? null)}`);
  }
}

/** One derivation build seen in the log. */
export interface BuildRecord {
  /** The `.drv` store path. */
  drvPath: string;
  /** Its name: the store path without hash and `.drv` (`hello-2.12`). */
  name: string;
  /** The builder's store URI (`ssh://builder1`), or `""` when built on this machine. */
  machine: string;
  /** When its activity started, ms since the epoch (as seen here). */
  startedAt: number;
  /** When it stopped; absent while it runs. */
  endedAt?: number;
  /** `running`, `built`, or `failed`. */
  status: "running" | "built" | "failed";
  /** Its last build log line, ANSI removed. */
  lastLine?: string;
  /** Its last phase (`buildPhase`...), when the builder reports phases. */
  phase?: string;
  /** Why it failed (Nix's error message), when it did. */
  error?: string;
}

/**
 * The name part of a store path: `/nix/store/<hash>-hello-2.12.drv` gives `hello-2.12`.
 *
 * @example
 * ```ts
 * import { storePathName } from "./internal_json.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(storePathName("/nix/store/33s97ddkzxjz0x0bw10piy5s6gfdya68-hello-2.12.drv"), "hello-2.12");
 * ```
 */
export function storePathName(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  const dash = base.indexOf("-");
  return (dash >= 0 ? base.slice(dash + 1) : base).replace(/\.drv$/, "");
}

/**
 * Follows a build's log events and keeps one {@link BuildRecord} per derivation build.
 *
 * @example The builds of a real Nix 2.8 run that offloaded to `ssh://builder1`
 * ```ts
 * import { BuildTracker, parseInternalJsonLine } from "./internal_json.ts";
 * import assert from "node:assert/strict";
 *
 * const tracker = new BuildTracker();
 * const lines = [
 *   '@nix {"action":"start","fields":["/nix/store/5igd-remote-ok.drv","ssh://builder1",1,1],"id":34359738373,"level":3,"text":"building","type":105}',
 *   '@nix {"action":"result","fields":["compiling"],"id":34359738373,"type":101}',
 *   '@nix {"action":"stop","id":34359738373}',
 * ];
 * lines.forEach((line, i) => tracker.handle(parseInternalJsonLine(line)!, 1000 * i));
 * assert.deepEqual(tracker.builds, [{
 *   drvPath: "/nix/store/5igd-remote-ok.drv",
 *   name: "remote-ok",
 *   machine: "ssh://builder1",
 *   startedAt: 0,
 *   endedAt: 2000,
 *   status: "built",
 *   lastLine: "compiling",
 * }]);
 * ```
 */
export class BuildTracker {
  #builds: BuildRecord[] = [];
  #byId = new Map<string, BuildRecord>();
  #substituted = new Set<string>();
  #errors: string[] = [];

  /** Every build, in start order. */
  get builds(): BuildRecord[] {
    return this.#builds.map((b) => ({ ...b }));
  }

  /** The builds still running. */
  get running(): BuildRecord[] {
    return this.builds.filter((b) => b.status === "running");
  }

  /** Store paths fetched from a binary cache instead of built. */
  get substituted(): string[] {
    return [...this.#substituted];
  }

  /** Nix's error messages (level 0), ANSI removed. */
  get errors(): string[] {
    return [...this.#errors];
  }

  /**
   * Takes one event; `at` is when it was read (ms since the epoch). Returns the build this event
   * ended (a copy), else `null`.
   */
  handle(event: NixLogEvent, at: number = Date.now()): BuildRecord | null {
    switch (event.action) {
      case "start": {
        if (event.type === ACTIVITY.substitute && typeof event.fields[0] === "string") {
          this.#substituted.add(event.fields[0]);
          return null;
        }
        if (event.type !== ACTIVITY.build) return null;
        const drvPath = String(event.fields[0] ?? "");
        const machine = String(event.fields[1] ?? "");
        if (drvPath === "") return null;
        const remote = this.#builds.find((b) =>
          b.drvPath === drvPath && b.status === "running" && b.machine !== ""
        );
        if (machine === "" && remote) {
          // ssh-ng forwards the builder's own activity: the same build, on that machine.
          this.#byId.set(event.id, remote);
          return null;
        }
        const record: BuildRecord = {
          drvPath,
          name: storePathName(drvPath),
          machine,
          startedAt: at,
          status: "running",
        };
        this.#builds.push(record);
        this.#byId.set(event.id, record);
        return null;
      }
      case "stop": {
        const record = this.#byId.get(event.id);
        if (!record) return null;
        this.#byId.delete(event.id);
        if ([...this.#byId.values()].includes(record)) return null; // the outer activity still runs
        if (record.status === "running") record.status = "built";
        record.endedAt ??= at;
        return { ...record };
      }
      case "result": {
        const record = this.#byId.get(event.id);
        if (!record) return null;
        const first = event.fields[0];
        if (event.type === RESULT.buildLogLine && typeof first === "string") {
          record.lastLine = stripAnsi(first);
        } else if (event.type === RESULT.setPhase && typeof first === "string") {
          record.phase = first;
        }
        return null;
      }
      case "msg": {
        if (event.level !== 0) return null;
        this.#errors.push(event.msg);
        for (const record of this.#builds) {
          if (record.status !== "failed" && event.msg.includes(`'${record.drvPath}'`)) {
            record.status = "failed";
            record.error ??= event.msg.replace(/^error: /, "").split("\n")[0] ?? "";
          }
        }
        return null;
      }
      case "setPhase":
        return null;
    }
  }
}

/**
 * Adds `--log-format internal-json` to a Nix command line, at the end of its options (before a
 * `--` that ends them): a later `-L` would otherwise switch the format back, as Nix applies log
 * flags in order. Throws `RangeError` when the command sets `--log-format` itself or is not a
 * Nix command.
 *
 * @example
 * ```ts
 * import { withInternalJson } from "./internal_json.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(withInternalJson(["nix", "build", "-L", ".#hello"]), [
 *   "nix", "build", "-L", ".#hello", "--log-format", "internal-json",
 * ]);
 * assert.deepEqual(withInternalJson(["nix-build", "-A", "x", "--", "-weird.nix"]), [
 *   "nix-build", "-A", "x", "--log-format", "internal-json", "--", "-weird.nix",
 * ]);
 * assert.throws(() => withInternalJson(["make"]), /not a Nix command/);
 * ```
 */
export function withInternalJson(argv: readonly string[]): string[] {
  const program = argv[0] ?? "";
  const base = program.slice(program.lastIndexOf("/") + 1);
  if (!/^nix(-build|-store|-shell)?$/.test(base)) {
    throw new RangeError(
      `'${program}' is not a Nix command: give 'nix build ...' (or nix-build, nix-store --realise)`,
    );
  }
  const end = argv.indexOf("--");
  const options = end < 0 ? argv : argv.slice(0, end);
  if (options.some((a) => a === "--log-format" || a.startsWith("--log-format="))) {
    throw new RangeError("'--log-format' is set by watch_builders (internal-json): leave it out");
  }
  const flag = ["--log-format", "internal-json"];
  return end < 0 ? [...argv, ...flag] : [...argv.slice(0, end), ...flag, ...argv.slice(end)];
}
