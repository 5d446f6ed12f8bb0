/**
 * Errors that name the input and what is wrong with it.
 *
 * @module
 */

/** Where in an input a problem was found. */
export interface Position {
  /** 1-based line number. */
  line: number;
  /** 1-based column, when known. */
  column?: number;
}

/**
 * A parser's only error: the input's name, the position and the reason.
 *
 * @example Message format
 * ```ts
 * import { ParseError } from "./errors.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new ParseError("/etc/nix/machines", "speed factor '-1' is negative", { line: 3 });
 * assert.equal(error.message, "Cannot parse /etc/nix/machines:3: speed factor '-1' is negative");
 * ```
 */
export class ParseError extends Error {
  /** The input's name: a file path, `stdin`, or a command line. */
  readonly input: string;
  /** The reason, without the input name. */
  readonly reason: string;
  /** Where it went wrong, when known. */
  readonly position: Position | undefined;

  /** Builds the error; the message reads `Cannot parse INPUT:LINE:COL: REASON`. */
  constructor(input: string, reason: string, position?: Position) {
    const where = position === undefined
      ? ""
      : `:${position.line}${position.column === undefined ? "" : `:${position.column}`}`;
    super(`Cannot parse ${input}${where}: ${reason}`);
    this.name = "ParseError";
    this.input = input;
    this.reason = reason;
    this.position = position;
  }
}

/**
 * A problem with what the user asked for (a flag, a value, a host): exit 3 with one line.
 *
 * @example
 * ```ts
 * import { UsageError } from "./errors.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(new UsageError("--timeout '0': must be a positive number of seconds").name, "UsageError");
 * ```
 */
export class UsageError extends Error {
  /** Builds the error from a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Shortens a value for quoting in an error message, escaping control characters.
 *
 * @example
 * ```ts
 * import { quoteForMessage } from "./errors.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(quoteForMessage("a\nb"), "'a\\nb'");
 * ```
 */
export function quoteForMessage(value: string, max = 80): string {
  const escaped = JSON.stringify(value.length > max ? value.slice(0, max) + "…" : value).slice(
    1,
    -1,
  )
    .replaceAll('\\"', '"');
  return `'${escaped}'`;
}

/**
 * `JSON.parse(text)`, or a {@link ParseError} naming `input` and, where the parser says, the line
 * and column (an unexpected end is placed at the end of the text). Content errors are the caller's:
 * they name the JSON path instead.
 *
 * @example
 * ```ts
 * import { parseJsonText } from "./errors.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseJsonText('{"a": 1}', "state.json"), { a: 1 });
 * assert.throws(() => parseJsonText('{"a": 1,}', "state.json"), /^ParseError: Cannot parse state\.json:1:9: not valid JSON/);
 * assert.throws(() => parseJsonText('{\n"a":', "state.json"), /state\.json:2:5: not valid JSON \(Unexpected end/);
 * ```
 */
export function parseJsonText(text: string, input: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const message = (error as Error).message;
    const at = /\(line (\d+) column (\d+)\)/.exec(message);
    let position: Position | undefined;
    if (at) position = { line: Number(at[1]), column: Number(at[2]) };
    else if (/Unexpected end/.test(message)) {
      const lines = text.split("\n");
      position = { line: lines.length, column: lines.at(-1)!.length + 1 };
    }
    throw new ParseError(input, `not valid JSON (${message})`, position);
  }
}
