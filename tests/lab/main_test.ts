import assert from "node:assert/strict";
import { labTest } from "./lab.ts";
import { main } from "./main.ts";

labTest("deno task lab -- down succeeds with nothing to clean; bad arguments exit 3", async () => {
  assert.equal(await main(["down"]), 0);
  assert.equal(await main(["--builders", "zero"]), 3);
  assert.equal(await main(["sideways"]), 3);
  assert.equal(await main(["--help"]), 0);
});
