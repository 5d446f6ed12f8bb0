/**
 * The builder sampler of `watch_builders.ts`: one persistent POSIX `sh` loop per builder that reads
 * `/proc` with shell builtins only (`read` loops, no `cat`/`ps`; one `sleep` per sample) and
 * prints a delimited block every interval, and the parsers of what it prints.
 *
 * The protocol (version 1), one item per line:
 *
 * ```text
 * #nbr-watch 1                      header, once
 * h cpus 0-1                        /sys/devices/system/cpu/online
 * h hostname builder1               /proc/sys/kernel/hostname
 * h buildusers 999 995 ...          uids of nixbld* users and of users in group nixbld
 * h interval 1
 * #S 1                              a sample begins (sequence number)
 * u 924.25 1601.27                  /proc/uptime
 * l 1.07 0.47 0.23 3/138 16602      /proc/loadavg
 * c cpu  15251 0 7374 160127 ...    first line of /proc/stat
 * m MemTotal:       24684092 kB     every line of /proc/meminfo, verbatim
 * P some avg10=0.00 avg60=0.00 ...  every line of /proc/pressure/memory (absent without PSI)
 * o 3                               oom_kill of /proc/vmstat (absent on old kernels)
 * p 812 790 0 10684 R aarch64 cc1   a build process: pid ppid uid rss-kB state emulated name
 * #E 1                              the sample is complete
 * ```
 *
 * A build process is one whose uid is a build user (`nixbld*`, the `nixbld` group, or the
 * `auto-allocate-uids` range from 872415232), or a descendant of a `nix-daemon`, `nix-store`,
 * `nix`, `nix-build` or `nix-shell` process (single-user installs build as the daemon's user), or
 * one whose cgroup is the daemon's or a build's (see {@link nixCgroupOf}): what still catches a
 * build that runs as root and has left the Nix process tree (daemonized, re-parented).
 * `emulated` is the architecture when the process runs under a binfmt_misc qemu interpreter
 * (its command line starts with the interpreter: `/usr/libexec/qemu-binfmt/aarch64-binfmt-P`,
 * NixOS `/run/binfmt/aarch64-linux`, `/usr/bin/qemu-aarch64-static`), else `-`. Its comm stays the
 * emulated program's name, so the command line is the only place this shows.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import { parseMeminfo } from "./meminfo.ts";
import { parsePressure, stallPercent } from "./psi.ts";

/**
 * The protocol version this module speaks (the first header line is `#nbr-watch 1`).
 *
 * @example
 * ```ts
 * import { SAMPLER_PROTOCOL, SAMPLER_SCRIPT } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(SAMPLER_SCRIPT.includes(`#nbr-watch ${SAMPLER_PROTOCOL}`));
 * ```
 */
export const SAMPLER_PROTOCOL = 1;

/** One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`. */
export interface CgroupMembership {
  /** The hierarchy id: `0` for the cgroup v2 (unified) hierarchy, 1 and up for v1 ones. */
  hierarchy: number;
  /** The v1 controllers bound to it (`["cpu", "cpuacct"]`, `["name=systemd"]`); `[]` for v2. */
  controllers: string[];
  /** The cgroup, relative to the hierarchy's root (or to the cgroup namespace's root). */
  path: string;
}

/**
 * Parses the text of `/proc/<pid>/cgroup` (cgroups(7)): one line per hierarchy, the v2 line
 * `0::/path` alone on a v2-only machine, v1 lines before it on a hybrid one. The path may itself
 * contain `:`; a line that is not `ID:controllers:/path` is a {@link ParseError}.
 *
 * @example
 * ```ts
 * import { parseProcCgroup } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseProcCgroup("9:name=systemd:/system.slice/nix-daemon.service\n0::/\n"), [
 *   { hierarchy: 9, controllers: ["name=systemd"], path: "/system.slice/nix-daemon.service" },
 *   { hierarchy: 0, controllers: [], path: "/" },
 * ]);
 * assert.throws(() => parseProcCgroup("garbage\n"), /cgroup:1: expected/);
 * ```
 */
export function parseProcCgroup(text: string, input = "/proc/<pid>/cgroup"): CgroupMembership[] {
  const out: CgroupMembership[] = [];
  text.split("\n").forEach((line, i) => {
    if (line === "") return;
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line);
    if (!m) {
      throw new ParseError(
        input,
        `expected 'hierarchy:controllers:/path', got '${line.slice(0, 80)}'`,
        { line: i + 1 },
      );
    }
    out.push({
      hierarchy: Number(m[1]),
      controllers: m[2] === "" ? [] : m[2]!.split(","),
      path: m[3]!,
    });
  });
  return out;
}

/** Why a cgroup makes its processes Nix's: see {@link nixCgroupOf}. */
export interface NixCgroup {
  /** `build`: one of the cgroups Nix makes for a build; `daemon`: the `nix-daemon.service` unit. */
  role: "build" | "daemon";
  /** The membership that matched. */
  membership: CgroupMembership;
}

/**
 * The cgroup components that make a process Nix's, as `sh` `case` patterns on the cgroup path
 * (the sampler's own test: a path matches when any of them does).
 *
 * - `nix-daemon.service` anywhere in the path: the systemd unit of the daemon (NixOS, the Nix
 *   installer's unit, Debian's `nix-setup-systemd`) and every cgroup below it. Without
 *   `use-cgroups`, a build the daemon runs stays in the unit's cgroup, whatever its parent.
 * - `nix-build-uid-<uid>` and `nix-build-pid-<pid>-<n>`: the cgroups Nix (2.12 and later, with
 *   `use-cgroups` or a `uid-range` build) puts a build in, beside its own cgroup
 *   (`fmt("nix-build-uid-%d", ...)` in Nix's Linux derivation builder).
 * - `nix-build@<hash>-<uid>`: the same in Lix.
 *
 * @example
 * ```ts
 * import { NIX_CGROUP_CASE } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(NIX_CGROUP_CASE.includes("*\/nix-daemon.service|"));
 * ```
 */
export const NIX_CGROUP_CASE: string =
  "*/nix-daemon.service|*/nix-daemon.service/*|*/nix-build-uid-[0-9]*|*/nix-build-pid-[0-9]*|" +
  "*/nix-build@[!/]*";

const BUILD_CGROUP = /^(?:nix-build-(?:uid|pid)-\d|nix-build@[^/])/;

/**
 * Whether a process's cgroups make it Nix's (the rule of {@link NIX_CGROUP_CASE}, which the
 * sampler applies in `sh`): the first membership with a build cgroup (`nix-build-uid-<uid>`,
 * `nix-build-pid-<pid>-<n>`, Lix's `nix-build@<hash>-<uid>`) is a `build`, else the first under
 * `nix-daemon.service` is the `daemon`'s. `null` when none is (a login session, another service,
 * `nix-daemon.socket`, a container's `0::/`).
 *
 * @example
 * ```ts
 * import { nixCgroupOf, parseProcCgroup } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const role = (text: string) => nixCgroupOf(parseProcCgroup(text))?.role ?? null;
 * assert.equal(role("0::/system.slice/nix-daemon.service\n"), "daemon");
 * assert.equal(role("0::/system.slice/nix-daemon.service/nix-build-uid-30001\n"), "build");
 * assert.equal(role("0::/user.slice/user-1000.slice/session-2.scope\n"), null);
 * ```
 */
export function nixCgroupOf(memberships: readonly CgroupMembership[]): NixCgroup | null {
  let daemon: NixCgroup | null = null;
  for (const membership of memberships) {
    const parts = membership.path.split("/");
    if (parts.some((c) => BUILD_CGROUP.test(c))) return { role: "build", membership };
    if (daemon === null && parts.includes("nix-daemon.service")) {
      daemon = { role: "daemon", membership };
    }
  }
  return daemon;
}

/**
 * The sampler, a POSIX `sh` program. Arguments: `$1` seconds between samples, `$2` how many
 * samples to print before exiting (`0`: until its output is closed).
 *
 * It walks `/proc/<pid>` in numeric order (one glob per digit count) so a parent is seen before
 * its children. A process is read from `status` once, up to its `Uid:` line; one that is neither a
 * build nor a Nix process is then set aside (`K_<pid>`, no file read while it lives): it cannot
 * become a build process, except by exec'ing into `nix-store` (`ssh` runs `sh -c nix-store ...`),
 * which is caught when it forks its first child, by reading that parent's `comm` once. Before
 * that, a process that none of the cheaper tests (uid, parent) made a build has its `cgroup` read,
 * once, and matched against {@link NIX_CGROUP_CASE}. A Nix
 * process costs one `comm` read per sample (it is read again only once it execs a builder). A
 * build process is read every sample, on to `VmRSS:`, and its `cmdline` once per (pid, name).
 *
 * Standard error goes to `/dev/null` once, so a process that vanishes mid-read costs no open. It
 * exits as soon as a write fails (the ssh channel closed), so no sampler outlives its connection
 * by more than one interval. `/usr/bin:/bin` is appended to `PATH` (a session may get a PATH
 * without `sleep`), and a failing `sleep` ends it rather than letting it spin.
 *
 * @example Run it here for one sample
 * ```ts
 * import { SAMPLER_SCRIPT } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const out = await new Deno.Command("sh", { args: ["-c", SAMPLER_SCRIPT, "nbr-watch", "1", "1"] })
 *   .output();
 * const text = new TextDecoder().decode(out.stdout);
 * assert.match(text, /^#nbr-watch 1\nh cpus /);
 * assert.match(text, /\n#E 1\n$/);
 * ```
 */
export const SAMPLER_SCRIPT = `i=$1 max=$2 n=0 g=
PATH="$PATH:/usr/bin:/bin"
while IFS=: read -r nm pw id rest; do
  case $nm in nixbld) g=$id ;; esac
done </etc/group
B=' '
while IFS=: read -r nm pw id gid rest; do
  case $nm in
    nixbld*|_nixbld*) B="$B$id " ;;
    *) [ -n "$g" ] && [ "$gid" = "$g" ] && B="$B$id " ;;
  esac
done </etc/passwd
cpus= hn=
[ -r /sys/devices/system/cpu/online ] && IFS= read -r cpus </sys/devices/system/cpu/online
[ -r /proc/sys/kernel/hostname ] && IFS= read -r hn </proc/sys/kernel/hostname
printf '#nbr-watch 1\\nh cpus %s\\nh hostname %s\\nh buildusers%s\\nh interval %s\\n' "$cpus" "$hn" "$B" "$i" || exit 0
exec 3>&2 2>/dev/null
E='|' L= M=
while :; do
  n=$((n + 1))
  o="#S $n"
  IFS= read -r l </proc/uptime && o="$o
u $l"
  IFS= read -r l </proc/loadavg && o="$o
l $l"
  IFS= read -r l </proc/stat && o="$o
c $l"
  while IFS= read -r l; do o="$o
m $l"; done </proc/meminfo
  if [ -r /proc/pressure/memory ]; then
    while IFS= read -r l; do o="$o
P $l"; done </proc/pressure/memory
  fi
  while read -r k v; do
    case $k in oom_kill) o="$o
o $v"; break ;; esac
  done </proc/vmstat
  S=' ' F='|' N= Z=
  for d in /proc/[1-9] /proc/[1-9][0-9] /proc/[1-9][0-9][0-9] /proc/[1-9][0-9][0-9][0-9] \\
    /proc/[1-9][0-9][0-9][0-9][0-9] /proc/[1-9][0-9][0-9][0-9][0-9][0-9] \\
    /proc/[1-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
    p=\${d#/proc/}
    case $p in *[!0-9]*) continue ;; esac
    eval "q=\\\${K_$p-} r=\\\${X_$p-}"
    if [ -n "$q" ]; then eval "K_$p=$n"; N="$N $p"; continue; fi
    if [ -n "$r" ]; then
      c=
      IFS= read -r c <"$d/comm"
      if [ "$c" = "$r" ]; then S="$S$p " Z="$Z $p"; continue; fi
      unset "X_$p"
    fi
    nm= pp= u= st= rss=0 e= w=o
    {
      while IFS= read -r l; do
        case $l in
          Name:*) nm=\${l#Name:?} ;;
          State:*) st=\${l#State:?}; st=\${st%% *} ;;
          PPid:*) pp=\${l#PPid:?}; case $pp in ''|*[!0-9]*) pp=0 ;; esac ;;
          Uid:*)
            u=\${l#Uid:?}; u=\${u%%[!0-9]*}
            case $nm in nix-daemon|nix-store|nix|nix-build|nix-shell) S="$S$p " w=n; break ;; esac
            case $B in *" $u "*) e=1 ;; esac
            case $S in *" $pp "*) e=1 ;; esac
            if [ -z "$e" ] && [ "$pp" -gt 1 ]; then
              eval "q=\\\${K_$pp-}"
              if [ -n "$q" ]; then
                q=
                IFS= read -r q <"/proc/$pp/comm"
                case $q in nix-daemon|nix-store|nix|nix-build|nix-shell) S="$S$pp " e=1; unset "K_$pp" ;; esac
              fi
            fi
            [ -z "$e" ] && [ "$u" -ge 872415232 ] && e=1
            if [ -z "$e" ]; then
              while IFS= read -r y; do
                y=\${y#*:}; y=\${y#*:}
                case $y in ${NIX_CGROUP_CASE}) e=1; break ;; esac
              done <"$d/cgroup"
            fi
            [ -n "$e" ] || break
            S="$S$p " w=b ;;
          VmRSS:*) rss=\${l#VmRSS:}; rss=\${rss#"\${rss%%[0-9]*}"}; rss=\${rss%%[!0-9]*}; break ;;
        esac
      done
    } <"$d/status"
    if [ "$w" = n ]; then eval "X_$p=\\$nm"; Z="$Z $p"; continue; fi
    if [ "$w" = o ]; then
      [ -n "$nm" ] && { eval "K_$p=$n"; N="$N $p"; }
      continue
    fi
    [ -n "$e" ] || continue
    k="$p:$nm"
    case $E in
      *"|$k="*) x=\${E#*"|$k="}; x=\${x%%"|"*} ;;
      *)
        x=- a=
        IFS= read -r a <"$d/cmdline"
        case $a in
          /usr/libexec/qemu-binfmt/*) x=\${a#/usr/libexec/qemu-binfmt/}; x=\${x%%-binfmt*} ;;
          /run/binfmt/*) x=\${a#/run/binfmt/}; x=\${x%%[/.]*} ;;
          /usr/bin/qemu-*|/usr/local/bin/qemu-*|/nix/store/????????????????????????????????-qemu-*/bin/qemu-*)
            x=\${a#*/bin/qemu-}; x=\${x%%[/.]*}; x=\${x%-static} ;;
        esac
        [ -n "$x" ] || x=- ;;
    esac
    F="$F$k=$x|"
    o="$o
p $p $pp $u $rss $st $x $nm"
  done
  for p in $L; do eval "[ \\"\\\${K_$p-}\\" = $n ] || unset K_$p"; done
  for p in $M; do case " $Z " in *" $p "*) ;; *) unset "X_$p" ;; esac; done
  E=$F L=$N M=$Z
  printf '%s\\n#E %s\\n' "$o" "$n" || exit 0
  [ "$n" = "$max" ] && exit 0
  sleep "$i" || { echo "nbr-watch: 'sleep $i' failed" >&3; exit 3; }
done
`;

/** Options for {@link samplerArgv}. */
export interface SamplerOptions {
  /** Seconds between samples (default 1). */
  intervalS?: number;
  /** Samples to print before exiting; 0 (the default) runs until the output is closed. */
  count?: number;
}

/**
 * The argv that starts the sampler on a target: `sh -c <script> nbr-watch <interval> <count>`.
 * Pass it to `target.stream()`; every value travels as its own argument.
 *
 * @example
 * ```ts
 * import { samplerArgv } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const argv = samplerArgv({ intervalS: 0.5, count: 1 });
 * assert.deepEqual([argv[0], argv[1], ...argv.slice(3)], ["sh", "-c", "nbr-watch", "0.5", "1"]);
 * assert.throws(() => samplerArgv({ intervalS: 0 }), /interval/);
 * ```
 */
export function samplerArgv(options: SamplerOptions = {}): string[] {
  const interval = options.intervalS ?? 1;
  const count = options.count ?? 0;
  if (!Number.isFinite(interval) || interval < 0.1 || interval > 3600) {
    throw new RangeError(`Cannot sample every ${interval} s: the interval must be 0.1 to 3600`);
  }
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Cannot take ${count} samples: the count must be a whole number`);
  }
  // Three decimals at most, so `sleep` reads a plain decimal on every implementation.
  const text = String(Math.round(interval * 1000) / 1000);
  return ["sh", "-c", SAMPLER_SCRIPT, "nbr-watch", text, String(count)];
}

/** What the sampler says once, before its first sample. */
export interface SamplerHeader {
  /** The protocol version (1). */
  protocol: number;
  /** The builder's own host name (`/proc/sys/kernel/hostname`), `""` when unreadable. */
  hostname: string;
  /** Online CPUs (from `/sys/devices/system/cpu/online`), `null` when unreadable. */
  cpus: number | null;
  /** uids of the build users. */
  buildUsers: number[];
  /** Seconds between samples, as the sampler was told. */
  intervalS: number;
}

/** A process running a build on the builder. */
export interface BuildProcess {
  /** Its pid (in the builder's pid namespace). */
  pid: number;
  /** Its parent's pid. */
  ppid: number;
  /** Its real uid. */
  uid: number;
  /** Resident memory, KiB (`VmRSS`; 0 for zombies). */
  rssKiB: number;
  /** Its state letter (`R` running, `S` sleeping, `D` disk wait, `Z` zombie...). */
  state: string;
  /** The emulated architecture (`aarch64`, `aarch64-linux`) when run by a qemu interpreter. */
  emulated: string | null;
  /** Its name (comm, as `/proc/<pid>/status` escapes it). */
  name: string;
}

/** The kernel's load figures (`/proc/loadavg`). */
export interface LoadAverage {
  /** 1-minute load average. */
  one: number;
  /** 5-minute load average. */
  five: number;
  /** 15-minute load average. */
  fifteen: number;
  /** Runnable tasks now. */
  running: number;
  /** Tasks in total. */
  tasks: number;
}

/** One sample as the builder printed it; file texts are kept verbatim for the shared parsers. */
export interface RawSample {
  /** The sampler's sequence number, from 1. */
  seq: number;
  /** The builder's uptime in seconds (`/proc/uptime`): a monotonic clock for rates. */
  uptimeS: number;
  /** `/proc/loadavg`. */
  load: LoadAverage;
  /** CPU time in clock ticks since boot (`/proc/stat`): busy and total. */
  cpuTicks: { busy: number; total: number } | null;
  /** The text of `/proc/meminfo`, verbatim. */
  meminfo: string;
  /** The text of `/proc/pressure/memory`, verbatim; `null` when the kernel has no PSI. */
  pressure: string | null;
  /** `oom_kill` from `/proc/vmstat`: OOM kills since boot; `null` when the kernel lacks it. */
  oomKills: number | null;
  /** The build processes. */
  processes: BuildProcess[];
}

/** One complete item from the sampler's output. */
export type SamplerItem =
  | { kind: "header"; header: SamplerHeader }
  | { kind: "sample"; sample: RawSample };

function num(text: string | undefined, what: string, input: string, line: number): number {
  const value = Number(text);
  if (text === undefined || text.trim() === "" || !Number.isFinite(value)) {
    throw new ParseError(input, `${what} '${text ?? ""}' is not a number`, { line });
  }
  return value;
}

/**
 * Counts the CPUs of a kernel CPU list (`0-3,8-11`, `0`).
 *
 * @example
 * ```ts
 * import { countCpuList } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(countCpuList("0-3,8-11"), 8);
 * assert.equal(countCpuList("0"), 1);
 * assert.equal(countCpuList(""), null);
 * ```
 */
export function countCpuList(text: string): number | null {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  let count = 0;
  for (const part of trimmed.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return null;
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) return null;
    count += to - from + 1;
  }
  return count;
}

/**
 * Parses the sampler's header lines (`#nbr-watch 1` and the `h` lines after it).
 *
 * @example
 * ```ts
 * import { parseSamplerHeader } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const header = parseSamplerHeader([
 *   "#nbr-watch 1",
 *   "h cpus 0-1",
 *   "h hostname builder1",
 *   "h buildusers 999 995 ",
 *   "h interval 1",
 * ]);
 * assert.deepEqual(header, {
 *   protocol: 1,
 *   hostname: "builder1",
 *   cpus: 2,
 *   buildUsers: [999, 995],
 *   intervalS: 1,
 * });
 * ```
 */
export function parseSamplerHeader(
  lines: readonly string[],
  input = "sampler header",
): SamplerHeader {
  const first = lines[0] ?? "";
  const m = /^#nbr-watch (\d+)$/.exec(first);
  if (!m) {
    throw new ParseError(
      input,
      `expected '#nbr-watch ${SAMPLER_PROTOCOL}', got '${first.slice(0, 80)}'`,
      {
        line: 1,
      },
    );
  }
  const protocol = Number(m[1]);
  if (protocol !== SAMPLER_PROTOCOL) {
    throw new ParseError(input, `protocol ${protocol} is not ${SAMPLER_PROTOCOL}`, { line: 1 });
  }
  const header: SamplerHeader = {
    protocol,
    hostname: "",
    cpus: null,
    buildUsers: [],
    intervalS: 1,
  };
  lines.slice(1).forEach((line, i) => {
    const at = i + 2;
    const hm = /^h (\S+) ?(.*)$/.exec(line);
    if (!hm) {
      throw new ParseError(input, `expected an 'h' line, got '${line.slice(0, 80)}'`, { line: at });
    }
    const [, key, value = ""] = hm;
    if (key === "cpus") header.cpus = countCpuList(value);
    else if (key === "hostname") header.hostname = value.trim();
    else if (key === "buildusers") {
      header.buildUsers = value.split(/\s+/).filter((s) => s !== "").map((s) =>
        num(s, "build user uid", input, at)
      );
    } else if (key === "interval") header.intervalS = num(value, "interval", input, at);
  });
  return header;
}

/**
 * Parses one sample block, from its `#S n` line to its `#E n` line.
 *
 * @example
 * ```ts
 * import { parseSample } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const sample = parseSample([
 *   "#S 7",
 *   "u 924.25 1601.27",
 *   "l 1.07 0.47 0.23 3/138 16602",
 *   "c cpu  100 0 50 800 50 0 0 0 0 0",
 *   "m MemTotal:       2048000 kB",
 *   "m MemAvailable:   1024000 kB",
 *   "P some avg10=1.50 avg60=0.20 avg300=0.00 total=2855",
 *   "o 2",
 *   "p 812 790 30001 10684 R aarch64 cc1 plus",
 *   "#E 7",
 * ]);
 * assert.equal(sample.seq, 7);
 * assert.equal(sample.load.one, 1.07);
 * assert.deepEqual(sample.cpuTicks, { busy: 150, total: 1000 });
 * assert.equal(sample.meminfo, "MemTotal:       2048000 kB\nMemAvailable:   1024000 kB\n");
 * assert.equal(sample.oomKills, 2);
 * assert.deepEqual(sample.processes[0], {
 *   pid: 812, ppid: 790, uid: 30001, rssKiB: 10684, state: "R", emulated: "aarch64", name: "cc1 plus",
 * });
 * ```
 */
export function parseSample(lines: readonly string[], input = "sample"): RawSample {
  const first = /^#S (\d+)$/.exec(lines[0] ?? "");
  if (!first) {
    throw new ParseError(input, `expected '#S <n>', got '${(lines[0] ?? "").slice(0, 80)}'`, {
      line: 1,
    });
  }
  const seq = Number(first[1]);
  const last = lines.at(-1) ?? "";
  if (last !== `#E ${seq}`) {
    throw new ParseError(input, `sample ${seq} does not end with '#E ${seq}'`, {
      line: lines.length,
    });
  }
  const sample: RawSample = {
    seq,
    uptimeS: 0,
    load: { one: 0, five: 0, fifteen: 0, running: 0, tasks: 0 },
    cpuTicks: null,
    meminfo: "",
    pressure: null,
    oomKills: null,
    processes: [],
  };
  let sawUptime = false;
  let sawLoad = false;
  const meminfo: string[] = [];
  const pressure: string[] = [];
  for (let i = 1; i < lines.length - 1; i++) {
    const line = lines[i]!;
    const at = i + 1;
    const tag = line.slice(0, 2);
    const rest = line.slice(2);
    switch (tag) {
      case "u ": {
        sample.uptimeS = num(rest.split(/\s+/)[0], "uptime", input, at);
        sawUptime = true;
        break;
      }
      case "l ": {
        const f = rest.trim().split(/\s+/);
        const [running, tasks] = (f[3] ?? "").split("/");
        sample.load = {
          one: num(f[0], "load average", input, at),
          five: num(f[1], "load average", input, at),
          fifteen: num(f[2], "load average", input, at),
          running: num(running, "runnable tasks", input, at),
          tasks: num(tasks, "tasks", input, at),
        };
        sawLoad = true;
        break;
      }
      case "c ": {
        const f = rest.trim().split(/\s+/);
        if (f[0] !== "cpu") {
          throw new ParseError(
            input,
            `expected the 'cpu' line of /proc/stat, got '${rest.slice(0, 40)}'`,
            {
              line: at,
            },
          );
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user already)
        const t = f.slice(1, 9).map((v) => num(v, "cpu ticks", input, at));
        const total = t.reduce((a, b) => a + b, 0);
        const idle = (t[3] ?? 0) + (t[4] ?? 0);
        sample.cpuTicks = { busy: total - idle, total };
        break;
      }
      case "m ":
        meminfo.push(rest);
        break;
      case "P ":
        pressure.push(rest);
        break;
      case "o ":
        sample.oomKills = num(rest.trim(), "oom_kill", input, at);
        break;
      case "p ": {
        const m = /^(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+) ?(.*)$/.exec(rest);
        if (!m) {
          throw new ParseError(input, `cannot read process line '${rest.slice(0, 80)}'`, {
            line: at,
          });
        }
        sample.processes.push({
          pid: Number(m[1]),
          ppid: Number(m[2]),
          uid: Number(m[3]),
          rssKiB: Number(m[4]),
          state: m[5]!,
          emulated: m[6] === "-" ? null : m[6]!,
          name: m[7] ?? "",
        });
        break;
      }
      default:
        // Lines of a newer protocol revision are skipped.
        break;
    }
  }
  if (!sawUptime) throw new ParseError(input, `sample ${seq} has no uptime line`, { line: 1 });
  if (!sawLoad) throw new ParseError(input, `sample ${seq} has no loadavg line`, { line: 1 });
  if (meminfo.length === 0) {
    throw new ParseError(input, `sample ${seq} has no meminfo lines`, { line: 1 });
  }
  sample.meminfo = meminfo.join("\n") + "\n";
  if (pressure.length > 0) sample.pressure = pressure.join("\n") + "\n";
  return sample;
}

/**
 * Splits the sampler's output, fed in chunks of any size, into headers and samples. Lines before
 * the header (a chatty login shell) are kept in {@link SampleSplitter.noise}.
 *
 * @example
 * ```ts
 * import { SampleSplitter } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const splitter = new SampleSplitter("builder1");
 * const first = splitter.push("#nbr-watch 1\nh cpus 0\nh interval 1\n#S 1\nu 1.0 1.0\nl 0.1");
 * assert.deepEqual(first.map((i) => i.kind), ["header"]);
 * const items = splitter.push(" 0.2 0.3 1/50 99\nm MemTotal: 100 kB\n#E 1\n");
 * assert.equal(items[0]?.kind === "sample" && items[0].sample.load.fifteen, 0.3);
 * ```
 */
export class SampleSplitter {
  /** Lines seen before the header, at most 20. */
  readonly noise: string[] = [];
  #input: string;
  #partial = "";
  #header: string[] | null = null;
  #headerDone = false;
  #block: string[] | null = null;

  /** `input` names the source in parse errors (the host). */
  constructor(input: string) {
    this.#input = input;
  }

  /** Feeds decoded text; returns every item completed by it. Throws `ParseError` on a bad block. */
  push(text: string): SamplerItem[] {
    const items: SamplerItem[] = [];
    const parts = (this.#partial + text).split("\n");
    this.#partial = parts.pop() ?? "";
    for (const line of parts) this.#line(line.replace(/\r$/, ""), items);
    return items;
  }

  #line(line: string, items: SamplerItem[]): void {
    if (this.#header === null) {
      if (line.startsWith("#nbr-watch ")) this.#header = [line];
      else if (this.noise.length < 20) this.noise.push(line);
      return;
    }
    if (!this.#headerDone) {
      if (line.startsWith("h ")) {
        this.#header.push(line);
        return;
      }
      this.#headerDone = true;
      items.push({
        kind: "header",
        header: parseSamplerHeader(this.#header, `${this.#input} (sampler header)`),
      });
    }
    if (line.startsWith("#S ")) {
      this.#block = [line];
      return;
    }
    if (this.#block === null) return;
    this.#block.push(line);
    if (line.startsWith("#E ")) {
      const block = this.#block;
      this.#block = null;
      items.push({ kind: "sample", sample: parseSample(block, `${this.#input} (sample)`) });
    }
  }
}

/** Memory figures of one sample, in bytes (from `parseMeminfo`). */
export interface MemoryFigures {
  /** `MemTotal`. */
  totalBytes: number;
  /** `MemAvailable` (what new work can get without swapping). */
  availableBytes: number;
  /** `MemTotal - MemAvailable`. */
  usedBytes: number;
  /** `SwapTotal` (0: no swap). */
  swapTotalBytes: number;
  /** `SwapTotal - SwapFree`. */
  swapUsedBytes: number;
}

/** Memory pressure (PSI) percentages, 0-100. */
export interface PressureFigures {
  /** Share of the last 10 s in which some task waited for memory (the kernel's `some avg10`). */
  someAvg10: number;
  /** The same over 60 s. */
  someAvg60: number;
  /** Share of the last 10 s in which every non-idle task waited for memory (`full avg10`). */
  fullAvg10: number;
  /** Share of the time since the previous sample in which some task waited (from `total`). */
  someNow: number | null;
}

/** One builder's state at one moment: what the view shows and `--json` prints. */
export interface Sample {
  /** The builder as the user named it (`--host` or the machines file). */
  host: string;
  /** When the sample arrived here, ms since the epoch. */
  receivedAt: number;
  /** The sampler's sequence number. */
  seq: number;
  /** The builder's own host name. */
  hostname: string;
  /** Online CPUs, `null` when unknown. */
  cpus: number | null;
  /** `/proc/loadavg`. */
  load: LoadAverage;
  /** CPU busy share since the previous sample, 0-100; `null` on the first sample. */
  cpuBusyPercent: number | null;
  /** Memory and swap. */
  memory: MemoryFigures;
  /** Memory pressure; `null` when the kernel has no PSI. */
  pressure: PressureFigures | null;
  /** OOM kills since boot; `null` when the kernel does not count them. */
  oomKills: number | null;
  /** The build processes, largest memory first. */
  processes: BuildProcess[];
}

/**
 * Turns a raw sample into figures: memory through the shared `parseMeminfo`, pressure through
 * `parsePressure` (both fed the files' verbatim text), CPU busy share and the pressure since the
 * previous sample of the same sampler.
 *
 * @example
 * ```ts
 * import { deriveSample, parseSample } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const block = (seq: number, busy: number, idle: number) => [
 *   `#S ${seq}`,
 *   `u ${100 + seq}.00 150.00`,
 *   "l 1.50 1.00 0.50 2/120 999",
 *   `c cpu  ${busy} 0 0 ${idle} 0 0 0 0 0 0`,
 *   "m MemTotal:        8000000 kB",
 *   "m MemFree:         1000000 kB",
 *   "m MemAvailable:    2000000 kB",
 *   "m SwapTotal:       1000000 kB",
 *   "m SwapFree:         750000 kB",
 *   `P some avg10=12.00 avg60=3.00 avg300=1.00 total=${seq * 250000}`,
 *   "P full avg10=2.00 avg60=0.50 avg300=0.10 total=1000",
 *   `#E ${seq}`,
 * ];
 * const first = parseSample(block(1, 100, 900));
 * const second = parseSample(block(2, 350, 1150));
 * const header = { protocol: 1, hostname: "b1", cpus: 2, buildUsers: [], intervalS: 1 };
 * const sample = deriveSample(second, { host: "builder1", header, previous: first, receivedAt: 0 });
 * assert.equal(sample.cpuBusyPercent, 50);
 * assert.equal(sample.memory.usedBytes, 6000000 * 1024);
 * assert.equal(sample.memory.swapUsedBytes, 250000 * 1024);
 * assert.equal(sample.pressure?.someAvg10, 12);
 * assert.equal(sample.pressure?.someNow, 25);
 * ```
 */
export function deriveSample(
  raw: RawSample,
  context: { host: string; header: SamplerHeader; previous?: RawSample; receivedAt: number },
): Sample {
  const mem = parseMeminfo(raw.meminfo, `${context.host}:/proc/meminfo`);
  const previous = context.previous;
  let cpuBusyPercent: number | null = null;
  const before = previous?.cpuTicks;
  const now = raw.cpuTicks;
  if (before && now && now.total > before.total) {
    const share = (now.busy - before.busy) / (now.total - before.total);
    cpuBusyPercent = Math.max(0, Math.min(100, Math.round(share * 1000) / 10));
  }
  let pressure: PressureFigures | null = null;
  if (raw.pressure !== null) {
    const psi = parsePressure(raw.pressure, `${context.host}:/proc/pressure/memory`);
    let someNow: number | null = null;
    if (previous?.pressure && raw.uptimeS > previous.uptimeS) {
      const was = parsePressure(previous.pressure, `${context.host}:/proc/pressure/memory`);
      const elapsedMs = (raw.uptimeS - previous.uptimeS) * 1000;
      someNow = Math.round(stallPercent(was.some, psi.some, elapsedMs) * 10) / 10;
    }
    pressure = {
      someAvg10: psi.some.avg10,
      someAvg60: psi.some.avg60,
      fullAvg10: psi.full?.avg10 ?? 0,
      someNow,
    };
  }
  return {
    host: context.host,
    receivedAt: context.receivedAt,
    seq: raw.seq,
    hostname: context.header.hostname,
    cpus: context.header.cpus,
    load: raw.load,
    cpuBusyPercent,
    memory: {
      totalBytes: mem.totalBytes,
      availableBytes: mem.availableBytes,
      usedBytes: Math.max(0, mem.totalBytes - mem.availableBytes),
      swapTotalBytes: mem.swapTotalBytes,
      swapUsedBytes: Math.max(0, mem.swapTotalBytes - mem.swapFreeBytes),
    },
    pressure,
    oomKills: raw.oomKills,
    processes: [...raw.processes].sort((a, b) => b.rssKiB - a.rssKiB || a.pid - b.pid),
  };
}
