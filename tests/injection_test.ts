/**
 * Injection, against the lab: hostile hosts (`-oProxyCommand=...`, `h;touch X`, `$(touch X)`, a
 * newline, a space), store paths, option values, file names, machines lines, a builder's own files
 * and snapshot contents go through every script in `scripts/`, run as subprocesses. Each payload
 * would create a canary file; it is never created, on the controller or on the builder. A refused
 * input ends the run with exit 3 and one line naming it, and, where `strace` is installed, the
 * trace shows that nothing was executed before the refusal.
 *
 * The count of injections tried is printed (`injection: N tried, 0 canaries`) for the README table.
 */

import fc from "./_fast_check.ts";
import assert from "node:assert/strict";
import { quoteForMessage } from "../lib/errors.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { type Lab, labTest, startLab } from "./lab/lab.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CANARY = `/tmp/nbr-injection-canary-${crypto.randomUUID().slice(0, 8)}`;
const DRV = "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv";
const STRACE = ["/usr/bin/strace", "/bin/strace"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});
let tried = 0;

/** Hosts that would run `touch CANARY` if any shell or ssh ever took them as more than a name. */
const HOSTS = [
  `-oProxyCommand=touch$IFS${CANARY}`,
  `-oProxyCommand=touch ${CANARY}`,
  `builder1;touch$IFS${CANARY}`,
  `h;touch ${CANARY}`,
  `$(touch ${CANARY})`,
  `\`touch ${CANARY}\``,
  `builder1\ntouch ${CANARY}`,
  `builder1 -oProxyCommand=touch$IFS${CANARY}`,
  `ssh://-oProxyCommand=touch$IFS${CANARY}`,
  `root@-oProxyCommand=touch$IFS${CANARY}`,
  `builder1|touch$IFS${CANARY}`,
  `ssh-ng://builder1&&touch$IFS${CANARY}`,
  `[::1];touch$IFS${CANARY}`,
  `builder1:22$(touch$IFS${CANARY})`,
  `ssh://builder1?remote-program=%zz`,
];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** Programs executed (besides deno itself), when traced. */
  execs: string[] | undefined;
}

/** Runs a script as users do; inside the controller's namespace when `lab` and `controller`. */
async function script(
  lab: Lab,
  name: string,
  args: string[],
  options: { controller?: boolean; trace?: boolean; timeout?: number } = {},
): Promise<Run> {
  tried++;
  const log = options.trace && STRACE ? await Deno.makeTempFile({ prefix: "nbr-strace-" }) : "";
  const argv = [
    ...(log ? [STRACE!, "-f", "-qq", "-e", "trace=execve", "-o", log] : []),
    Deno.execPath(),
    "run",
    "-A",
    `${ROOT}scripts/${name}.ts`,
    "--timeout",
    String(options.timeout ?? 20),
    ...args,
  ];
  const env = { ...lab.env, NO_COLOR: "1" };
  let result: { code: number; stdout: string; stderr: string };
  if (options.controller) {
    result = await lab.controller.exec(argv, { env, timeoutMs: 90_000 });
  } else {
    const out = await new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      env,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(90_000),
    }).output();
    const text = new TextDecoder();
    result = { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  }
  let execs: string[] | undefined;
  if (log) {
    execs = (await Deno.readTextFile(log)).split("\n")
      .map((l) => /execve\("([^"]*)"/.exec(l)?.[1])
      .filter((p): p is string => p !== undefined && !p.endsWith("/deno"));
    await Deno.remove(log);
  }
  return { ...result, execs };
}

/** Runs `jobs` with at most `limit` at once. */
async function pool(limit: number, jobs: (() => Promise<void>)[]): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < jobs.length) await jobs[next++]!();
  }));
}

async function assertNoCanary(lab: Lab, what: string): Promise<void> {
  const here = await Deno.stat(CANARY).then(() => true, () => false);
  assert.equal(here, false, `${what}: ${CANARY} was created on the controller side`);
  for (const builder of lab.builders) {
    const there = await builder.exec([
      "sh",
      "-c",
      'test -e "$1" && echo yes || true',
      "sh",
      CANARY,
    ]);
    assert.equal(there.stdout.trim(), "", `${what}: ${CANARY} was created on ${builder.name}`);
  }
}

/** Refused before anything ran: exit 3, only one line on stderr (naming the input), no program run. */
function assertRefused(what: string, run: Run, names: string | RegExp): void {
  assert.equal(run.code, 3, `${what}: exit ${run.code}\n${run.stderr}${run.stdout}`);
  assert.equal(run.stdout, "", `${what}: nothing on stdout`);
  const lines = run.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `${what}: one line on stderr:\n${run.stderr}`);
  if (typeof names === "string") assert.ok(lines[0]!.includes(names), `${what}: ${lines[0]}`);
  else assert.match(lines[0]!, names, what);
  if (run.execs) assert.deepEqual(run.execs, [], `${what}: ran ${run.execs.join(", ")}`);
}

/** Not refused (the value is used, as data): a status, no stack trace. */
function assertHandled(what: string, run: Run): void {
  assert.ok([0, 1, 2, 3].includes(run.code), `${what}: exit ${run.code}\n${run.stderr}`);
  assert.ok(!/^\s+at .*:\d+:\d+\)?$/m.test(run.stderr), `${what}: stack trace:\n${run.stderr}`);
  assert.ok(!/Uncaught/.test(run.stderr), `${what}: ${run.stderr}`);
}

const SCRIPTS_WITH_HOST: [string, string[]][] = [
  ["check_binfmt", []],
  ["collect", ["--output", "/nonexistent-nbr/bundle"]],
  ["doctor", []],
  ["drv_log", [DRV]],
  ["health_check", []],
  ["oom_mitigate", []],
  ["show_config", []],
  ["watch_builders", ["--once"]],
];

labTest(
  "every script refuses a hostile --host before anything runs: exit 3, one line naming it",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const jobs: (() => Promise<void>)[] = [];
    for (const [name, extra] of SCRIPTS_WITH_HOST) {
      for (const host of HOSTS) {
        jobs.push(async () => {
          const run = await script(lab, name, ["--host", host, ...extra], { trace: true });
          assertRefused(
            `${name} --host ${JSON.stringify(host)}`,
            run,
            `Host ${quoteForMessage(host)}`,
          );
        });
      }
    }
    // verify_offload's --host names the builder to verify (like --builder): refused the same way.
    for (const host of HOSTS) {
      jobs.push(async () => {
        const run = await script(lab, "verify_offload", ["--host", host], { trace: true });
        assertRefused(
          `verify_offload --host ${JSON.stringify(host)}`,
          run,
          `Host ${quoteForMessage(host)}`,
        );
      });
    }
    // show_config --builder-host and watch_builders' repeated --host are hosts too.
    for (const host of HOSTS) {
      jobs.push(async () => {
        const run = await script(lab, "show_config", ["--builder-host", host], { trace: true });
        assertRefused(
          `show_config --builder-host ${JSON.stringify(host)}`,
          run,
          `Host ${quoteForMessage(host)}`,
        );
      });
    }
    jobs.push(async () => {
      const run = await script(lab, "watch_builders", [
        "--once",
        "--host",
        "builder1",
        "--host",
        HOSTS[0]!,
      ], {
        trace: true,
      });
      assertRefused("watch_builders --host builder1 --host <hostile>", run, "-oProxyCommand");
    });
    await pool(4, jobs);
    await assertNoCanary(lab, "hostile --host");
  },
);

labTest(
  "hostile machines lines (config file, --builders, --machines) are skipped or refused, never run",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    const hostile = [
      `-oProxyCommand=touch$IFS${CANARY} x86_64-linux`,
      `ssh://-oProxyCommand=touch$IFS${CANARY} x86_64-linux`,
      `ssh-ng://$(touch$IFS${CANARY}) x86_64-linux`,
      `ssh://x\`touch$IFS${CANARY}\` x86_64-linux`,
      `ssh://root@builder1?remote-program=touch$IFS${CANARY} x86_64-linux`,
      `ssh://builder1 x86_64-linux -oProxyCommand=touch$IFS${CANARY} 1 1`,
      `ssh://root@-oProxyCommand=touch$IFS${CANARY} x86_64-linux`,
    ];
    await lab.controller.setMachines([builder.machineLine(), ...hostile]);
    const machinesFile = await Deno.makeTempFile({ prefix: "nbr-injection-machines-" });
    await Deno.writeTextFile(machinesFile, hostile.join("\n") + "\n");
    try {
      const runs: [string, string[], { controller?: boolean }][] = [
        ["doctor", ["--no-canary"], { controller: true }],
        ["show_config", [], { controller: true }],
        ["verify_offload", ["--no-canary"], { controller: true }],
        ["drv_log", ["--builders", "--skip-local", DRV], { controller: true }],
        ["oom_mitigate", ["--host", "builder1", "--mitigate", "persistent"], { controller: true }],
        ["check_binfmt", ["--host", "builder1", "--no-smoke"], { controller: true }],
        ["watch_builders", ["--once"], { controller: true }],
        ["oom_mitigate", ["--machines", machinesFile, "--mitigate", "persistent"], {}],
        ["watch_builders", ["--once", "--machines", machinesFile], {}],
        ...hostile.map((line): [string, string[], { controller?: boolean }] => [
          "verify_offload",
          ["--builders", line, "--no-canary"],
          { controller: true },
        ]),
      ];
      await pool(
        3,
        runs.map(([name, args, options]) => async () => {
          const run = await script(lab, name, args, options);
          assertHandled(`${name} ${args.join(" ")}`, run);
          if ((name === "doctor" || name === "verify_offload") && args[0] === "--no-canary") {
            // The bad hosts are named in findings, and the good builder is still checked.
            assert.match(run.stdout, /ssh:\/\/-oProxyCommand=\S+: not checked: Host '/);
            assert.match(run.stdout, /builder1/);
          }
          if (name === "watch_builders") assert.match(run.stderr, /^watch_builders: Host '/m);
        }),
      );
    } finally {
      await Deno.remove(machinesFile);
    }
    await assertNoCanary(lab, "hostile machines lines");
  },
);

labTest(
  "hostile store paths, option values and file names are refused or used as plain data",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const dir = await Deno.makeTempDir({ prefix: "nbr-injection-" });
    const shell = `$(touch ${CANARY})`;
    const semicolon = `x;touch ${CANARY}`;
    try {
      // Refused before anything runs.
      const refused: [string, string[], string | RegExp][] = [
        ["drv_log", ["--", `${DRV};touch ${CANARY}`], /Not a store path/],
        ["drv_log", ["--", `/nix/store/${shell}`], /Not a store path/],
        ["drv_log", ["--", `-oProxyCommand=touch$IFS${CANARY}`], /Not a store path/],
        ["drv_log", ["--", `${DRV}\ntouch ${CANARY}`], /Not a store path/],
        ["drv_log", ["--host", "builder1", "--", "--option"], /Not a store path/],
        ["check_binfmt", ["--host", "builder1", "--system", shell], /is not a Nix system name/],
        ["health_check", ["--host", "builder1", "--system", semicolon], /is not a Nix system name/],
        ["verify_offload", [`--explain=--option=build-hook=${CANARY}`], /starts with '-'/],
        ["verify_offload", [`--flake=-oProxyCommand=${CANARY}`], /starts with '-'/],
        [
          "oom_mitigate",
          ["--state-dir", `relative/${shell}`, "--revert"],
          /must be an absolute path/,
        ],
        ["oom_mitigate", ["--kernel-log", `${dir}/${shell}`], /no such file/],
        ["drv_log", ["--log-file", `${dir}/${shell}`], /No such file|not found|cannot/i],
        ["health_check", ["--prometheus", `${dir}/${shell}`], /must end in \.prom/],
        ["watch_builders", ["--once", "--machines", `${dir}/${shell}`], /no such file/],
        ["drv_log", ["--from-build-output", `${dir}/${shell}`], /^drv_log: --from-build-output '/],
      ];
      await pool(
        3,
        refused.map(([name, args, names]) => async () => {
          assertRefused(
            `${name} ${args.join(" ")}`,
            await script(lab, name, args, { trace: true }),
            names,
          );
        }),
      );
      // Used as data: on the builder over ssh (quoted for its shell), or locally (argv, no shell).
      const used: [string, string[]][] = [
        ["health_check", [
          "--host",
          "builder1",
          "--store-path",
          shell,
          "--build-dir",
          `/tmp;touch ${CANARY}`,
          "--kernel-log",
          `-oProxyCommand=touch$IFS${CANARY}`,
          "--builder-user",
          shell,
          "--state-file",
          `${dir}/${shell}/state.json`,
          "--prometheus",
          `${dir}/${shell}.prom`,
        ]],
        ["check_binfmt", ["--host", "builder1", "--revert", "--state-dir", `/tmp/${shell}`]],
        ["oom_mitigate", [
          "--host",
          "builder1",
          "--state-dir",
          `/tmp/${shell}`,
          "--mitigate",
          "zram",
          "--algorithm",
          `lz4;touch ${CANARY}`,
        ]],
        ["oom_mitigate", ["--host", "builder1", "--revert", "--state-dir", `/tmp/${semicolon}`]],
        ["drv_log", ["--host", "builder1", "--log-dir", `/x;touch ${CANARY}`, "--skip-local", DRV]],
        ["drv_log", [
          "--host",
          "builder1",
          "--ssh-option",
          `BatchMode=yes\nProxyCommand=touch ${CANARY}`,
          DRV,
        ]],
        ["drv_log", ["--host", "builder1", "--ssh-option", `-oProxyCommand=touch ${CANARY}`, DRV]],
        ["collect", ["--host", "builder1", "--output", `${dir}/bundle-${shell}`]],
        ["show_config", ["--key", shell, "--key", semicolon, "--role", "controller"]],
        ["verify_offload", ["--explain", shell]],
        ["verify_offload", ["--flake", shell, "--no-canary"]],
        ["watch_builders", ["--once", "--host", "builder1", "--interval", "0.2"]],
        // (--ssh-option ProxyCommand=... itself runs a command: that is ssh -o, by design.)
        ["doctor", [
          "--host",
          "builder1",
          "--ssh-option",
          `BatchMode=yes ProxyCommand=touch ${CANARY}`,
        ]],
        ["health_check", ["--host", "builder1", "--ssh-option", `x\nProxyCommand=touch ${CANARY}`]],
        ["watch_builders", ["--once", "--host", "builder1", "--ssh-option", `-o${CANARY}`]],
      ];
      await pool(
        3,
        used.map(([name, args]) => async () => {
          assertHandled(
            `${name} ${args.join(" ")}`,
            await script(lab, name, args),
          );
        }),
      );
      // The bundle written to a hostile directory name is there, under exactly that name.
      assert.ok((await Deno.stat(`${dir}/bundle-${shell}/meta.json`)).isFile);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    await assertNoCanary(lab, "hostile paths and options");
  },
);

labTest(
  "a builder whose nix.conf and answers are hostile cannot make any script run them",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    await Deno.writeTextFile(
      builder.nixConfFile,
      [
        `extra-platforms = $(touch ${CANARY}) aarch64-linux`,
        `build-dir = /tmp/$(touch ${CANARY})`,
        `trusted-users = root \`touch ${CANARY}\``,
        `system-features = big-parallel ;touch${CANARY}`,
        `!include /tmp/$(touch ${CANARY})`,
        `!include ;touch ${CANARY}`,
        "",
      ].join("\n"),
      { append: true },
    );
    const dir = await Deno.makeTempDir({ prefix: "nbr-injection-bundle-" });
    try {
      const runs: [string, string[]][] = [
        ["health_check", ["--host", "builder1", "--smoke"]],
        ["check_binfmt", ["--host", "builder1"]],
        ["show_config", ["--host", "builder1", "--role", "builder"]],
        ["doctor", ["--host", "builder1"]],
        ["oom_mitigate", ["--host", "builder1", "--mitigate", "serialize"]],
        ["collect", ["--host", "builder1", "--output", `${dir}/b`]],
        ["watch_builders", ["--once", "--host", "builder1"]],
        ["drv_log", ["--host", "builder1", "--skip-local", DRV]],
      ];
      for (const [name, args] of runs) {
        assertHandled(
          `${name} ${args.join(" ")}`,
          await script(lab, name, args),
        );
      }
      // The bundle collected from that builder, analysed offline by every script that reads one.
      for (
        const name of ["doctor", "show_config", "health_check", "oom_mitigate", "check_binfmt"]
      ) {
        assertHandled(`${name} --snapshot`, await script(lab, name, ["--snapshot", `${dir}/b`]));
      }
      assertHandled(
        "drv_log --snapshot --builders",
        await script(lab, "drv_log", ["--snapshot", `${dir}/b`, "--builders", DRV]),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    await assertNoCanary(lab, "hostile builder");
  },
);

labTest(
  "hostile snapshot contents are read as data by every script that takes --snapshot",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const dir = await Deno.makeTempDir({ prefix: "nbr-injection-snapshot-" });
    try {
      const corpus = `${ROOT}tests/hostile/snapshot/hostile-contents`;
      await new Deno.Command("cp", { args: ["-r", `${corpus}/.`, dir] }).output();
      for (const name of ["meta", "commands", "paths"]) {
        await Deno.rename(`${dir}/${name}.json.in`, `${dir}/${name}.json`);
      }
      // Point the bundle's payloads at this run's canary.
      for (const file of ["meta.json", "commands.json", "files/etc/nix/machines"]) {
        const text = await Deno.readTextFile(`${dir}/${file}`);
        await Deno.writeTextFile(
          `${dir}/${file}`,
          text.replaceAll("/tmp/nbr-hostile-canary", CANARY),
        );
      }
      for (
        const name of ["doctor", "show_config", "health_check", "oom_mitigate", "check_binfmt"]
      ) {
        assertHandled(`${name} --snapshot`, await script(lab, name, ["--snapshot", dir]));
      }
      assertHandled(
        "drv_log --snapshot --builders",
        await script(lab, "drv_log", ["--snapshot", dir, "--builders", DRV]),
      );
      for (const name of ["collect", "verify_offload", "watch_builders"]) {
        const extra = name === "collect" ? ["--output", `${dir}/x`] : [];
        const run = await script(lab, name, ["--snapshot", dir, ...extra], { trace: true });
        assertRefused(`${name} --snapshot`, run, /--snapshot/);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    await assertNoCanary(lab, "hostile snapshot");
  },
);

labTest(
  "the ssh target delivers hostile arguments and environment byte for byte to a real sshd",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const target = new SshTarget("builder1", { sshArgs: [...lab.sshOptions], timeoutMs: 20_000 });
    const arg = fc.oneof(
      fc.string({ unit: "binary", maxLength: 10 }),
      fc.constantFrom(
        ...HOSTS,
        "'",
        '"',
        "\\",
        "$IFS",
        "*",
        "~root",
        "!",
        "%s",
        "-n",
        "--",
        "a\nb",
        "\r",
        "\x1b[2J",
      ),
    ).filter((s) => !s.includes("\0") && s.isWellFormed());
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(arg, { maxLength: 5 }), arg, async (args, value) => {
          tried++;
          const result = await target.run(["sh", "-c", 'printf "%s\\0" "$V" "$@"', "sh", ...args], {
            env: { V: value },
          });
          assert.equal(result.code, 0, result.stderr);
          assert.deepEqual(result.stdout.split("\0").slice(0, -1), [value, ...args]);
        }),
        { numRuns: 200 },
      );
    } finally {
      await target.close();
    }
    await assertNoCanary(lab, "ssh target arguments");
    console.log(
      `injection: ${tried} tried, 0 canaries${
        STRACE ? "" : " (strace missing: exec traces skipped)"
      }`,
    );
  },
);
