/**
 * Validating and normalising the hosts users pass to `--host` or write in machines files.
 *
 * @module
 */

import { quoteForMessage, UsageError } from "./errors.ts";

/** A host reduced to what ssh needs. */
export interface SshHost {
  /** What ssh gets as its destination: `host` or `user@host` (IPv6 without brackets). */
  destination: string;
  /** The host name or address alone. */
  hostname: string;
  /** The user, when given. */
  user?: string;
  /** The port, when given in the URI (`ssh://h:2222`, `[::1]:2222`). */
  port?: number;
  /** The scheme that was stripped (`ssh`, `ssh-ng`), when there was one. */
  scheme?: string;
  /** Query parameters of a store URI (`?remote-program=...`). */
  params: Record<string, string>;
}

const HOSTNAME = /^[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?$/;
const IPV6 = /^[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?$/;
const USER = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

/**
 * Parses `host`, `user@host`, `ssh://user@host:22`, `ssh-ng://host?remote-program=...` or `[v6]`.
 * Refuses anything ssh could read as an option or a shell could misread, before anything runs.
 *
 * @example
 * ```ts
 * import { parseSshHost } from "./host.ts";
 * import assert from "node:assert/strict";
 *
 * const host = parseSshHost("ssh-ng://builder@nixos:2222?remote-program=/run/current-system/sw/bin/nix-daemon");
 * assert.equal(host.destination, "builder@nixos");
 * assert.equal(host.port, 2222);
 * assert.equal(host.params["remote-program"], "/run/current-system/sw/bin/nix-daemon");
 * assert.throws(() => parseSshHost("-oProxyCommand=touch"), /starts with '-'/);
 * ```
 */
export function parseSshHost(spec: string): SshHost {
  const bad = (why: string) => new UsageError(`Host ${quoteForMessage(spec)}: ${why}`);
  if (spec === "") throw bad("is empty");
  // deno-lint-ignore no-control-regex
  if (/[\s\x00-\x1f\x7f]/.test(spec)) throw bad("contains whitespace or control characters");
  if (spec.startsWith("-")) throw bad("starts with '-', which ssh would read as an option");
  let rest = spec;
  let scheme: string | undefined;
  const schemeMatch = /^([a-z][a-z0-9+.-]*):\/\//.exec(rest);
  if (schemeMatch) {
    scheme = schemeMatch[1]!;
    if (scheme !== "ssh" && scheme !== "ssh-ng") {
      throw bad(`scheme '${scheme}://' is not an ssh store (use ssh:// or ssh-ng://)`);
    }
    rest = rest.slice(schemeMatch[0].length);
  }
  const params: Record<string, string> = {};
  const queryAt = rest.indexOf("?");
  if (queryAt >= 0) {
    for (const pair of rest.slice(queryAt + 1).split("&")) {
      if (pair === "") continue;
      const eq = pair.indexOf("=");
      try {
        const key = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
        params[key] = decodeURIComponent(eq < 0 ? "" : pair.slice(eq + 1));
      } catch {
        throw bad(`query ${quoteForMessage(pair)} is not valid URI encoding`);
      }
    }
    rest = rest.slice(0, queryAt);
  }
  if (rest.endsWith("/")) rest = rest.slice(0, -1);
  let user: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (!USER.test(user)) throw bad(`user ${quoteForMessage(user)} is not a valid user name`);
  }
  let hostname = rest;
  let port: number | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (v6) {
    hostname = v6[1]!;
    if (!IPV6.test(hostname)) throw bad(`${quoteForMessage(hostname)} is not an IPv6 address`);
    if (v6[2] !== undefined) port = Number(v6[2]);
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon >= 0) {
      if (rest.indexOf(":") !== colon) {
        throw bad("looks like a bare IPv6 address; write it in brackets, e.g. [::1]");
      }
      hostname = rest.slice(0, colon);
      const portText = rest.slice(colon + 1);
      if (!/^\d+$/.test(portText)) throw bad(`port ${quoteForMessage(portText)} is not a number`);
      port = Number(portText);
    }
    if (hostname.startsWith("-")) throw bad("host name starts with '-'");
    if (!HOSTNAME.test(hostname)) {
      throw bad(
        `${quoteForMessage(hostname)} is not a valid host name (letters, digits, '.', '-', '_')`,
      );
    }
  }
  if (port !== undefined && (port < 1 || port > 65535)) throw bad(`port ${port} is out of range`);
  const host: SshHost = {
    destination: user === undefined ? hostname : `${user}@${hostname}`,
    hostname,
    params,
  };
  if (user !== undefined) host.user = user;
  if (port !== undefined) host.port = port;
  if (scheme !== undefined) host.scheme = scheme;
  return host;
}
