/**
 * Where this machine's cgroup v2 hierarchy is, for the tests that place processes in cgroups.
 *
 * @module
 */

/** Where the cgroup v2 hierarchy is mounted read-write with its root, or `null`. */
export function cgroup2Mount(): string | null {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const f = left.split(" ");
    if (right.split(" ")[0] === "cgroup2" && f[3] === "/" && f[5]?.split(",").includes("rw")) {
      return f[4] ?? null;
    }
  }
  return null;
}
