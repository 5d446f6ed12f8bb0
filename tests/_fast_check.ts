/**
 * fast-check for every property test, seeded. `deno task test` (and CI) replays the same cases, so
 * a run fails only when the code changed; `deno task fuzz` draws a new seed to look further, and
 * fast-check prints the seed and path of a failure, replayed with `FUZZ_SEED=<seed>`.
 *
 * @module
 */

import fc from "fast-check";

/** The seed of this run: `FUZZ_SEED` (an integer, or `random`), else a fixed one. */
export const SEED = seedFrom(Deno.env.get("FUZZ_SEED"));

function seedFrom(text: string | undefined): number {
  if (text === "random") return (Math.random() * 2 ** 32 | 0);
  if (text !== undefined && text !== "" && Number.isInteger(Number(text))) return Number(text);
  return 20261125;
}

fc.configureGlobal({ seed: SEED });

export default fc;
